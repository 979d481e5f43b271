"""Open a bundle: every contract check first, then the typed :class:`Bundle` the layers above use.

A bundle is the artifact that travels from a workstation to a device, so the device treats it as
untrusted input. Before any model runs, :func:`load_bundle` checks, in this order, and refuses in
one line naming the file and field:

- the manifest (:mod:`.manifest`): size cap, JSON, format and version, every field's type and range;
- every path it names (model variants, labels, preprocess, reference archive, reference images):
  relative, normalised, resolving inside the bundle even through symlinks, and covered by the
  manifest's sha256 set;
- every hashed file's sha256 (``verify=True``, the default);
- labels: one per logit, printable, within caps; preprocess: valid, its size equal to the model
  input's H×W, std large enough to stay non-zero in float32;
- the reference archive (:mod:`.reference`, read lazily).

Backends then check the loaded graph's input/output names, dtypes and ranks against the manifest
(:func:`.manifest.check_model_io`). Torch-free on purpose: this module ships to edge devices.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ringfold.atomic import sha256_file
from ringfold.errors import BundleError, RingfoldError
from ringfold.runtime.base.fields import read_json
from ringfold.runtime.base.limits import limits
from ringfold.runtime.base.text_rules import check_text
from ringfold.runtime.pixels.preprocess import PreprocessConfig

from .manifest import Manifest, member_path, read_manifest
from .reference import Reference, read_reference
from .sections.raw_input import RawModel
from .spec import FIX, MANIFEST_FILE, MIN_STD, ModelFile


@dataclass
class Bundle:
    path: Path
    manifest: Manifest
    labels: list[str]
    preprocess: PreprocessConfig
    _reference: Reference | None = field(default=None, repr=False)

    @property
    def random_weights(self) -> bool:
        return self.manifest.random_weights

    @property
    def variants(self) -> Mapping[str, ModelFile]:
        return self.manifest.variants

    def file(self, rel: str) -> Path:
        """A hashed member of the bundle, confined to it; anything else is refused."""
        return member_path(self.path, self.manifest, rel)

    def model_path(self, precision: str = "fp32") -> Path:
        if precision not in self.variants:
            raise BundleError(
                f"{self.path}: has no {precision} model (has {', '.join(self.variants) or 'none'}); "
                f"re-export with --precision {precision}"
            )
        return self.file(self.variants[precision].file)

    def model_sha256(self, precision: str = "fp32") -> str:
        return self.manifest.files[self.variants[precision].file]

    def base_model_path(self) -> Path | None:
        """The base (adapter-free) model exported beside the bundle with --include-base, if any."""
        base = self.manifest.base_model
        return self.file(base.file) if base else None

    def raw_model(self, dtype: str = "float32") -> RawModel:
        """The raw-pixel model for input ``dtype``; one line naming the fix when the bundle has none."""
        raw = self.manifest.raw_input
        if raw is None:
            raise RingfoldError(
                f"{self.path}: has no raw-input variant; re-export with `ringfold export RUN --out BUNDLE --raw-input`"
            )
        if dtype not in raw.models:
            raise RingfoldError(
                f"{self.path}: has no {dtype} raw-input model (has {', '.join(raw.models)}); "
                f"re-export with --raw-input {' '.join(sorted({*raw.models, dtype}))}"
            )
        return raw.models[dtype]

    def reference(self) -> Reference:
        if self._reference is None:
            self._reference = read_reference(self.file(self.manifest.reference.file), self.manifest, self.path)
        return self._reference

    def describe(self) -> str:
        return f"{self.manifest.model_name} ({self.manifest.weights}), {len(self.labels)} classes"


def _labels(path: Path, manifest: Manifest) -> list[str]:
    caps = limits()
    data = read_json(path, FIX, caps.max_json_bytes, BundleError)
    if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
        raise BundleError(f"{path}: must be a JSON list of class names; {FIX}")
    if len(data) != manifest.num_classes:
        raise BundleError(
            f"{path}: {len(data)} labels for a model with {manifest.num_classes} logits; the labels belong to "
            f"another bundle — {FIX}"
        )
    for i, label in enumerate(data):
        label_problem(label, f"{path}: label {i}", BundleError)
    return data


def label_problem(label: str, what: str, error: type[RingfoldError] = RingfoldError) -> None:
    """Refuse a label a reader or a written file could not take as data: empty, over the cap, or holding a
    control, invisible format or line-separator character (:mod:`ringfold.runtime.base.text_rules`: it would
    rewrite the terminal, split a one-line result, or add lines to DeepStream's and Triton's label files)."""
    cap = limits().max_label_chars
    if not 0 < len(label) <= cap:
        raise error(f"{what} must be 1..{cap} printable characters, got {label[:40]!r}; {FIX}")
    check_text(label, what, FIX, error)


def _preprocess(path: Path, manifest: Manifest) -> PreprocessConfig:
    data = read_json(path, FIX, limits().max_json_bytes, BundleError)
    try:
        cfg = PreprocessConfig.from_dict(data)
    except RingfoldError as exc:
        raise BundleError(f"{path}: {exc}") from None
    if cfg.size != manifest.input_size:
        raise BundleError(
            f"{path}: size {cfg.size[0]}x{cfg.size[1]} differs from the model input "
            f"{manifest.input_size[0]}x{manifest.input_size[1]} in {MANIFEST_FILE}; {FIX}"
        )
    if any(np.float32(s) < MIN_STD for s in cfg.std) or any(abs(m) > 1e3 for m in cfg.mean):
        raise BundleError(f"{path}: std must be ≥ {MIN_STD:g} and |mean| ≤ 1000, got {cfg.std}, {cfg.mean}; {FIX}")
    return cfg


def load_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Open a bundle; every contract check runs first, and with ``verify`` every file's sha256 too."""
    path = Path(path)
    manifest = read_manifest(path)
    for rel in manifest.files:
        member_path(path, manifest, rel)
    if verify:
        verify_files(path, manifest.files)
    return Bundle(
        path=path,
        manifest=manifest,
        labels=_labels(member_path(path, manifest, manifest.labels_file), manifest),
        preprocess=_preprocess(member_path(path, manifest, manifest.preprocess_file), manifest),
    )


def verify_files(root: Path, files: Mapping[str, str]) -> None:
    for rel, expected in files.items():
        file = root / rel
        if not file.is_file():
            raise BundleError(f"{file}: listed in the manifest but missing; copy the whole bundle again")
        if sha256_file(file) != expected:
            raise BundleError(f"{file}: sha256 differs from the manifest (modified or corrupt); copy the bundle again")
