"""Reading a deploy bundle on the device: manifest, hashes, labels, preprocess config, reference set.

Everything here is torch-free. A bundle is refused (one line, naming the file
and the fix) when a file is missing, a hash differs, or it comes from a newer
ringfold, before any model is run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ringfold.atomic import sha256_file
from ringfold.errors import BundleError
from ringfold.runtime.preprocess import PreprocessConfig

BUNDLE_FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
LABELS_FILE = "labels.json"
PREPROCESS_FILE = "preprocess.json"


@dataclass
class Reference:
    pixel_values: np.ndarray
    logits: np.ndarray
    embedding: np.ndarray
    logits_folded: np.ndarray
    embedding_folded: np.ndarray
    labels: np.ndarray
    images: list[str]


@dataclass
class Bundle:
    path: Path
    manifest: dict[str, Any]
    labels: list[str]
    preprocess: PreprocessConfig
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def random_weights(self) -> bool:
        return bool(self.manifest.get("model", {}).get("random_weights"))

    @property
    def variants(self) -> dict[str, dict[str, Any]]:
        return self.manifest.get("variants", {})

    def model_path(self, precision: str = "fp32") -> Path:
        if precision not in self.variants:
            raise BundleError(
                f"{self.path}: has no {precision} model (has {', '.join(self.variants) or 'none'}); "
                f"re-export with --precision {precision}"
            )
        return self.path / self.variants[precision]["file"]

    def base_model_path(self) -> Path | None:
        """The base (adapter-free) model exported beside the bundle with --include-base, if any."""
        entry = self.manifest.get("base_model")
        return self.path / entry["file"] if entry else None

    def reference(self) -> Reference:
        ref = self.manifest.get("reference", {})
        path = self.path / ref.get("file", "reference/reference.npz")
        if not path.is_file():
            raise BundleError(f"{path}: missing; the bundle has no reference set — re-export it")
        with np.load(path, allow_pickle=False) as data:
            return Reference(
                pixel_values=data["pixel_values"],
                logits=data["logits"],
                embedding=data["embedding"],
                logits_folded=data["logits_folded"],
                embedding_folded=data["embedding_folded"],
                labels=data["labels"],
                images=[str(x) for x in data["images"]],
            )

    def describe(self) -> str:
        m = self.manifest.get("model", {})
        weights = m.get("weights", "?")
        return f"{m.get('name', '?')} ({weights}), {len(self.labels)} classes"


def _read_json(path: Path, fix: str) -> Any:
    if not path.is_file():
        raise BundleError(f"{path}: missing from the bundle; {fix}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc.__class__.__name__}); {fix}") from None


def load_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Open a bundle; with ``verify`` every file's sha256 is checked against the manifest first."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path}: not a bundle directory; pass the --out folder of `ringfold export`")
    fix = "re-export the bundle or copy it again"
    manifest = _read_json(path / MANIFEST_FILE, fix)
    if manifest.get("format") != "ringfold-bundle":
        raise BundleError(f"{path / MANIFEST_FILE}: not a ringfold bundle manifest; pass a `ringfold export` folder")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > BUNDLE_FORMAT_VERSION:
        raise BundleError(
            f"{path / MANIFEST_FILE}: bundle format {version} comes from a newer ringfold "
            f"({manifest.get('ringfold_version', '?')}); upgrade ringfold on this device"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError(f"{path / MANIFEST_FILE}: lists no files; {fix}")
    if verify:
        verify_files(path, files)
    labels = _read_json(path / manifest.get("labels", LABELS_FILE), fix)
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise BundleError(f"{path / LABELS_FILE}: must be a JSON list of class names; {fix}")
    preprocess = PreprocessConfig.from_dict(_read_json(path / manifest.get("preprocess", PREPROCESS_FILE), fix))
    return Bundle(path=path, manifest=manifest, labels=labels, preprocess=preprocess)


def verify_files(root: Path, files: dict[str, str]) -> None:
    for rel, expected in files.items():
        file = root / rel
        if not file.is_file():
            raise BundleError(f"{file}: listed in the manifest but missing; copy the whole bundle again")
        if sha256_file(file) != expected:
            raise BundleError(f"{file}: sha256 differs from the manifest (modified or corrupt); copy the bundle again")
