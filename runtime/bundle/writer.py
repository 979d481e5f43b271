"""Write a bundle's contract files; the exporter and ``relabel`` write bundles only through :class:`BundleWriter`.

:meth:`BundleWriter.finish` hashes every file, refuses a manifest a device would refuse, writes it,
and re-reads the whole bundle with every check on (:func:`.loader.load_bundle`), the reference
archive included.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ringfold.atomic import sha256_file, write_json
from ringfold.runtime.pixels.preprocess import PreprocessConfig

from .loader import Bundle, label_problem, load_bundle
from .manifest import Manifest
from .reference import REFERENCE_ARRAYS
from .spec import BUNDLE_FORMAT, BUNDLE_FORMAT_VERSION, LABELS_FILE, MANIFEST_FILE, PREPROCESS_FILE, REFERENCE_FILE


class BundleWriter:
    """The only code that writes a bundle's contract files; :meth:`finish` re-reads them as a device would."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def write_labels(self, classnames: Sequence[str]) -> None:
        """labels.json; a name a device would refuse (:func:`label_problem`) is refused before it is written."""
        for i, name in enumerate(classnames):
            label_problem(name, f"class {i}")
        write_json(self.root / LABELS_FILE, list(classnames))

    def write_preprocess(self, cfg: PreprocessConfig) -> None:
        write_json(self.root / PREPROCESS_FILE, cfg.to_dict())

    def write_reference(self, arrays: Mapping[str, np.ndarray]) -> None:
        missing = set(REFERENCE_ARRAYS) ^ set(arrays)
        if missing:
            raise ValueError(f"reference arrays differ from the format: {sorted(missing)}")
        target = self.root / REFERENCE_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as fh:
            np.savez(fh, **arrays)

    def finish(self, manifest: dict[str, Any]) -> Bundle:
        """Hash every file, validate the manifest, write it, and load the result with every check on."""
        manifest = dict(manifest)
        manifest.setdefault("format", BUNDLE_FORMAT)
        manifest.setdefault("format_version", BUNDLE_FORMAT_VERSION)
        manifest.setdefault("labels", LABELS_FILE)
        manifest.setdefault("preprocess", PREPROCESS_FILE)
        manifest["files"] = {
            p.relative_to(self.root).as_posix(): sha256_file(p)
            for p in sorted(self.root.rglob("*"))
            if p.is_file() and p.name != MANIFEST_FILE
        }
        Manifest.parse(manifest, self.root / MANIFEST_FILE)  # refuse to write what a device would refuse
        write_json(self.root / MANIFEST_FILE, manifest)
        bundle = load_bundle(self.root)
        bundle.reference()
        return bundle
