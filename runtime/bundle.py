"""The bundle contract: the one owner of the deploy bundle's format, for writer and reader alike.

A bundle is the artifact that travels from a workstation to a device, so the
device treats it as untrusted input. Before any model runs, :func:`load_bundle`
checks, in this order, and refuses in one line naming the file and field:

- the manifest: size cap, JSON, format and version, every field's type and range;
- every path it names (model variants, labels, preprocess, reference archive,
  reference images): relative, normalised, resolving inside the bundle even
  through symlinks, and covered by the manifest's sha256 set;
- every hashed file's sha256 (``verify=True``, the default);
- labels: one per logit, printable, within caps; preprocess: valid, its size
  equal to the model input's H×W, std large enough to stay non-zero in float32;
- the reference archive (read lazily): only the expected arrays, each header
  checked against the archive's real size *before* anything is allocated,
  shapes consistent with the manifest, values finite.

Backends then check the loaded graph's input/output names, dtypes and ranks
against the manifest (:func:`check_model_io`). The exporter writes bundles only
through :class:`BundleWriter`, which validates what it wrote with this reader.
Torch-free on purpose: this module ships to edge devices.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ringfold.atomic import sha256_file, write_json
from ringfold.errors import BundleError, RingfoldError

from .fields import Fields, confined, read_json, relative_member_problem
from .limits import limits
from .preprocess import PreprocessConfig
from .text_manifest import TextInfo, parse_text_section
from .text_rules import check_text, forbidden_char

BUNDLE_FORMAT = "ringfold-bundle"
BUNDLE_FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
LABELS_FILE = "labels.json"
PREPROCESS_FILE = "preprocess.json"
REFERENCE_FILE = "reference/reference.npz"
REFERENCE_IMAGES_DIR = "reference/images"
ENGINE_DIR = "engines"

PRECISIONS = ("fp32", "fp16", "int8", "int8-dynamic")
ORT_OPTIMIZATIONS = ("all", "extended", "basic")
TENSOR_DTYPES = ("float32", "float16", "uint8")
LOGITS, EMBEDDING = "logits", "embedding"
#: float32 std below this turns a pixel into ±1e6 or, underflowing, into a division by zero
MIN_STD = 1e-6

FIX = "re-export the bundle with `ringfold export` or copy it again"
#: where the reference images came from (manifest ``reference.source``; bundles before it say nothing):
#: the run's held-out images, ``--ref-images DIR``, or generated noise (``--synthetic-ref``)
REFERENCE_SOURCES = ("run-data", "ref-images", "synthetic")
#: what the manifest, every report and every summary line say of a synthetic reference set
SYNTHETIC_NOTE = "synthetic: numerics only, no accuracy"


# ------------------------------------------------------------------------------------------ typed parts
@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output as the manifest promises it; a string dim is symbolic (e.g. 'batch')."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def parse(cls, f: Fields, max_dim: int) -> TensorSpec:
        name = f.string("name", max_len=256)
        dtype = f.string("dtype", choices=TENSOR_DTYPES)
        shape = f.raw("shape")
        if not isinstance(shape, list) or not 1 <= len(shape) <= 8:
            raise f.fail("must be a list of 1..8 dimensions", "shape")
        dims: list[int | str] = []
        for i, dim in enumerate(shape):
            if isinstance(dim, str) and 0 < len(dim) <= 64:
                dims.append(dim)
            else:
                dims.append(f.check_integer(dim, f"shape[{i}]", 1, max_dim))
        return cls(name, dtype, tuple(dims))


@dataclass(frozen=True)
class ModelFile:
    """A model variant (or the base model): its file and how ONNX Runtime should run it."""

    file: str
    precision: str
    ort_optimization: str = "all"
    details: Mapping[str, Any] = field(default_factory=dict)  # the recipe, for reports


@dataclass(frozen=True)
class ReferenceInfo:
    file: str
    count: int
    labelled: bool
    source: str | None = None  # one of REFERENCE_SOURCES; None: a bundle from before the field
    origin: str = ""  # the data it came from, for reports ("test split of data/", the --ref-images folder)

    @property
    def synthetic(self) -> bool:
        return self.source == "synthetic"

    def describe(self) -> str:
        """What the reference set is, for every report and summary line that shows a figure measured on it."""
        if self.synthetic:
            return f"{self.count} generated images — {SYNTHETIC_NOTE}"
        if self.source is None:
            return f"{self.count} images (their source is not recorded: a bundle from an older ringfold)"
        where = {"run-data": "held-out images of the run's data", "ref-images": "images from --ref-images"}
        return f"{self.count} {where[self.source]}" + (f" ({self.origin})" if self.origin else "")

    @classmethod
    def parse(cls, ref: Fields, member, max_count: int) -> ReferenceInfo:
        """The manifest's reference section; source and origin are optional (older bundles lack them)."""
        source = ref.string("source", None, choices=REFERENCE_SOURCES)
        if source == "synthetic" and ref.boolean("labelled"):
            raise ref.fail("is true for a synthetic reference set, whose images have no labels", "labelled")
        return cls(
            file=member(ref, "file"),
            count=ref.integer("count", lo=1, hi=max_count),
            labelled=ref.boolean("labelled"),
            source=source,
            origin=ref.string("origin", "", max_len=1024, check=_display_text_problem),
        )


def _display_text_problem(text: str) -> str | None:
    """A report shows this text: no control, format or line/paragraph separator character may reach it."""
    bad = forbidden_char(text)
    return None if bad is None else f"holds {bad}"


@dataclass(frozen=True)
class Manifest:
    """``manifest.json``, every field the runtime uses type- and range-checked; ``raw`` for reports."""

    raw: Mapping[str, Any]
    format_version: int
    ringfold_version: str
    model_name: str
    weights: str
    random_weights: bool
    weights_fingerprint: str
    num_classes: int
    opset: int
    input: TensorSpec
    outputs: tuple[TensorSpec, ...]
    variants: Mapping[str, ModelFile]
    base_model: ModelFile | None
    labels_file: str
    preprocess_file: str
    reference: ReferenceInfo
    files: Mapping[str, str]
    #: optional sections (older bundles lack them): the raw-pixel models, the DeepStream folder's files
    raw_input: Any = None  # raw_input.RawInput
    deepstream_files: tuple[str, ...] = ()
    text: TextInfo | None = None  # the optional text tower (open vocabulary)

    @property
    def input_size(self) -> tuple[int, int]:
        """The model's input (height, width); integers by construction."""
        return int(self.input.shape[2]), int(self.input.shape[3])

    @classmethod
    def parse(cls, data: Any, file: Path) -> Manifest:
        caps = limits()
        f = Fields(data, file, FIX, error=BundleError)
        if f.raw("format", None) != BUNDLE_FORMAT:
            raise BundleError(f"{file}: not a ringfold bundle manifest; pass a folder written by `ringfold export`")
        version = f.raw("format_version")
        if isinstance(version, int) and not isinstance(version, bool) and version > BUNDLE_FORMAT_VERSION:
            raise BundleError(
                f"{file}: bundle format {version} comes from a newer ringfold "
                f"({str(f.raw('ringfold_version', '?'))[:40]}); upgrade ringfold on this device"
            )
        f.integer("format_version", lo=1, hi=BUNDLE_FORMAT_VERSION)

        files_f = f.section("files")
        if not 1 <= len(files_f.data) <= caps.max_bundle_files:
            raise files_f.fail(f"must list 1..{caps.max_bundle_files} files, lists {len(files_f.data)}")
        files: dict[str, str] = {}
        for rel, digest in files_f.data.items():
            problem = relative_member_problem(rel)
            if problem or rel == MANIFEST_FILE:
                raise files_f.fail(problem or "must not list the manifest itself", rel)
            files[rel] = files_f.sha256(digest, rel)

        def member(section: Fields, key: str, default: Any = None) -> str:
            rel = section.string(key, default, max_len=1024, check=relative_member_problem)
            if rel not in files:
                raise section.fail(f"names {rel!r}, which the manifest's files set does not hash", key)
            return rel

        model = f.section("model")
        num_classes = f.integer("num_classes", lo=1, hi=caps.max_classes)
        onnx = f.section("onnx")
        max_dim = max(caps.max_input_side, caps.max_classes, 1 << 16)
        (in_f,) = onnx.objects("inputs", min_len=1, max_len=1)
        inp = TensorSpec.parse(in_f, max_dim)
        if len(inp.shape) != 4 or inp.shape[1] != 3:
            raise in_f.fail(f"must be [batch, 3, height, width], got {list(inp.shape)}", "shape")
        for axis in (2, 3):
            in_f.check_integer(inp.shape[axis], f"shape[{axis}]", 1, caps.max_input_side)
        outputs = tuple(TensorSpec.parse(x, max_dim) for x in onnx.objects("outputs", min_len=2, max_len=2))
        by_name = {o.name: o for o in outputs}
        if set(by_name) != {LOGITS, EMBEDDING}:
            raise onnx.fail(f"must be named {LOGITS} and {EMBEDDING}, got {sorted(by_name)}", "outputs")
        if len(by_name[LOGITS].shape) != 2 or by_name[LOGITS].shape[1] != num_classes:
            raise onnx.fail(f"{LOGITS} must be [batch, num_classes={num_classes}], got {list(by_name[LOGITS].shape)}")
        if len(by_name[EMBEDDING].shape) != 2:
            raise onnx.fail(f"{EMBEDDING} must be [batch, dim], got {list(by_name[EMBEDDING].shape)}")

        def model_file(section: Fields, name: str | None) -> ModelFile:
            precision = section.string("precision", choices=PRECISIONS)
            if name is not None and precision != name:
                raise section.fail(f"is {precision!r} under the variant named {name!r}", "precision")
            return ModelFile(
                file=member(section, "file"),
                precision=precision,
                ort_optimization=section.string("ort_optimization", "all", choices=ORT_OPTIMIZATIONS),
                details=dict(section.data),
            )

        variants_f = f.section("variants")
        variants = {}
        for name in variants_f.data:
            if name not in PRECISIONS:
                raise variants_f.fail(f"has an unknown variant {str(name)[:40]!r} (known: {', '.join(PRECISIONS)})")
            variants[name] = model_file(variants_f.section(name), name)
        if "fp32" not in variants:
            raise variants_f.fail("has no fp32 variant")
        base = f.section("base_model", None)
        ref = f.section("reference")
        raw_f, ds_f = f.section("raw_input", None), f.section("deepstream", None)
        if raw_f is not None:
            from .raw_input import parse_raw_input

            raw_input = parse_raw_input(raw_f, member, (int(inp.shape[2]), int(inp.shape[3])), max_dim)
        if ds_f is not None:
            from .deepstream import parse_deepstream_section

            deepstream_files = parse_deepstream_section(ds_f, member)
        return cls(
            raw=dict(f.data),
            format_version=version,
            ringfold_version=f.string("ringfold_version", "?", max_len=64),
            model_name=model.string("name", max_len=256),
            weights=model.string("weights", max_len=1024),
            random_weights=model.boolean("random_weights"),
            weights_fingerprint=str(model.raw("weights_fingerprint", "") or ""),
            num_classes=num_classes,
            opset=onnx.integer("opset", lo=7, hi=40),
            input=inp,
            outputs=outputs,
            variants=variants,
            base_model=model_file(base, "fp32") if base is not None else None,
            labels_file=member(f, "labels"),
            preprocess_file=member(f, "preprocess"),
            reference=ReferenceInfo.parse(ref, member, caps.max_reference_images),
            files=files,
            raw_input=raw_input if raw_f is not None else None,
            deepstream_files=deepstream_files if ds_f is not None else (),
            text=parse_text_section(f.section("text", None), member),
        )

    def output(self, name: str) -> TensorSpec:
        return next(o for o in self.outputs if o.name == name)


# ----------------------------------------------------------------------------------------- reference
@dataclass
class Reference:
    pixel_values: np.ndarray
    logits: np.ndarray
    embedding: np.ndarray
    logits_folded: np.ndarray
    embedding_folded: np.ndarray
    labels: np.ndarray
    images: list[str]


#: array name -> (dtype kinds allowed, rank)
_REFERENCE_ARRAYS = {
    "pixel_values": ("f", 4),
    "logits": ("f", 2),
    "embedding": ("f", 2),
    "logits_folded": ("f", 2),
    "embedding_folded": ("f", 2),
    "labels": ("iu", 1),
    "images": ("U", 1),
}


def _read_npz_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, kinds: str, rank: int) -> np.ndarray:
    """One .npy inside the archive; the header's shape is checked against the member's real size first.

    ``np.load`` would allocate whatever shape a header declares before reading a byte of data.
    """
    name = info.filename
    with zf.open(info) as fh:
        try:
            version = np.lib.format.read_magic(fh)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = reader(fh)
        except (ValueError, SyntaxError, OSError) as exc:
            raise BundleError(f"{path}: array {name} has a malformed header ({exc}); {FIX}") from None
        if dtype.hasobject or dtype.kind not in kinds or len(shape) != rank:
            raise BundleError(f"{path}: array {name} is {dtype} of rank {len(shape)}, expected rank {rank}; {FIX}")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > info.file_size:
            raise BundleError(f"{path}: array {name} declares {nbytes:,} bytes but holds fewer; {FIX}")
        data = fh.read(nbytes)
    if len(data) != nbytes:
        raise BundleError(f"{path}: array {name} is truncated; {FIX}")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C").copy()


def read_reference(path: Path, manifest: Manifest, root: Path) -> Reference:
    """The reference archive, validated against the manifest before and after reading."""
    caps = limits()
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BundleError(f"{path}: not a readable reference archive ({exc}); {FIX}") from None
    with zf:
        infos = {i.filename: i for i in zf.infolist()}
        expected = {f"{k}.npy" for k in _REFERENCE_ARRAYS}
        if set(infos) != expected:
            odd = sorted(set(infos) ^ expected)[:3]
            raise BundleError(f"{path}: archive members differ from the reference format ({odd}); {FIX}")
        total = sum(i.file_size for i in infos.values())
        if total > caps.max_reference_bytes:
            raise BundleError(
                f"{path}: {total:,} bytes uncompressed, over the {caps.max_reference_bytes:,}-byte cap; "
                f"{FIX} (or raise {caps.env_name('max_reference_bytes')})"
            )
        try:
            arrays = {
                k: _read_npz_member(zf, infos[f"{k}.npy"], path, kinds, rank)
                for k, (kinds, rank) in _REFERENCE_ARRAYS.items()
            }
        except (zipfile.BadZipFile, OSError, EOFError) as exc:  # CRC errors, truncated members
            raise BundleError(f"{path}: corrupt reference archive ({exc}); {FIX}") from None
    n, classes = manifest.reference.count, manifest.num_classes
    h, w = manifest.input_size
    dim = arrays["embedding"].shape[1] if arrays["embedding"].ndim == 2 else -1
    want = {
        "pixel_values": (n, 3, h, w),
        "logits": (n, classes),
        "logits_folded": (n, classes),
        "embedding": (n, dim),
        "embedding_folded": (n, dim),
        "labels": (n,),
        "images": (n,),
    }
    for key, shape in want.items():
        if arrays[key].shape != shape:
            raise BundleError(f"{path}: array {key} has shape {arrays[key].shape}, the manifest implies {shape}; {FIX}")
        if arrays[key].dtype.kind == "f" and not np.isfinite(arrays[key]).all():
            raise BundleError(f"{path}: array {key} holds NaN/Inf; {FIX}")
    labels = arrays["labels"].astype(np.int64)
    if labels.size and (labels.min() < -1 or labels.max() >= classes):
        raise BundleError(f"{path}: array labels holds values outside -1..{classes - 1}; {FIX}")
    images = [str(x) for x in arrays["images"]]
    for name in images:
        problem = relative_member_problem(name)
        if problem or not name.startswith(REFERENCE_IMAGES_DIR + "/"):
            raise BundleError(f"{path}: image name {name[:80]!r} is not a file under {REFERENCE_IMAGES_DIR}/; {FIX}")
        if name not in manifest.files:
            raise BundleError(f"{path}: image {name!r} is not hashed in the manifest; {FIX}")
        member_path(root, manifest, name)
    return Reference(
        pixel_values=arrays["pixel_values"].astype(np.float32, copy=False),
        logits=arrays["logits"].astype(np.float32, copy=False),
        embedding=arrays["embedding"].astype(np.float32, copy=False),
        logits_folded=arrays["logits_folded"].astype(np.float32, copy=False),
        embedding_folded=arrays["embedding_folded"].astype(np.float32, copy=False),
        labels=labels,
        images=images,
    )


# -------------------------------------------------------------------------------------------- bundle
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
    control, invisible format or line-separator character (:mod:`.text_rules`: it would rewrite the terminal,
    split a one-line result, or add lines to DeepStream's and Triton's label files)."""
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


def member_path(root: Path, manifest: Manifest, rel: str) -> Path:
    """``root/rel`` when ``rel`` is hashed in the manifest and resolves inside ``root``; refused otherwise."""
    if rel not in manifest.files:
        raise BundleError(f"{root / rel}: not hashed in the manifest, so it is not trusted; {FIX}")
    path = confined(root, rel)
    if path is None:
        raise BundleError(f"{root / rel}: resolves outside the bundle (symlink?); {FIX}")
    return path


def read_manifest(path: Path) -> Manifest:
    """Parse and type-check ``path/manifest.json`` (no hashing)."""
    if not path.is_dir():
        raise BundleError(f"{path}: not a bundle directory; pass the --out folder of `ringfold export`")
    file = path / MANIFEST_FILE
    if confined(path, MANIFEST_FILE) is None:
        raise BundleError(f"{file}: resolves outside the bundle (symlink?); {FIX}")
    return Manifest.parse(read_json(file, FIX, limits().max_json_bytes, BundleError), file)


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


# ------------------------------------------------------------------------------------------ model I/O
def check_model_io(
    manifest: Manifest,
    file: Path,
    inputs: Sequence[tuple[str, str, Sequence[Any]]],
    outputs: Sequence[tuple[str, str, Sequence[Any]]],
) -> None:
    """The loaded graph's (name, dtype, shape) inputs/outputs must be what the manifest promises.

    Integer dims are compared where both sides have one; symbolic or unknown dims match anything.
    """

    def same(spec: TensorSpec, dtype: str, shape: Sequence[Any]) -> bool:
        if dtype != spec.dtype or len(shape) != len(spec.shape):
            return False
        pairs = zip(shape, spec.shape, strict=True)
        return all(a == b for a, b in pairs if isinstance(a, int) and isinstance(b, int))

    for role, specs, got in (("input", (manifest.input,), inputs), ("output", manifest.outputs, outputs)):
        by_name = {name: (dtype, shape) for name, dtype, shape in got}
        if set(by_name) != {s.name for s in specs}:
            raise BundleError(
                f"{file}: graph {role}s {sorted(by_name)} differ from the manifest's "
                f"{sorted(s.name for s in specs)}; {FIX}"
            )
        for spec in specs:
            dtype, shape = by_name[spec.name]
            if not same(spec, dtype, shape):
                raise BundleError(
                    f"{file}: {role} {spec.name} is {dtype} {list(shape)}, the manifest says "
                    f"{spec.dtype} {list(spec.shape)}; {FIX}"
                )


# -------------------------------------------------------------------------------------------- writing
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
        missing = set(_REFERENCE_ARRAYS) ^ set(arrays)
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
