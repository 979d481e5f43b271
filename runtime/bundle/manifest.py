"""``manifest.json``: every field the runtime uses, type- and range-checked before anything is opened.

:meth:`Manifest.parse` checks, in order: the format and its version; the files set (relative,
normalised paths, each with a sha256); the model and the graph's input and outputs; the precision
variants; the reference set; and the optional sections (:data:`.sections.SECTIONS`), each by its
own parser. Every refusal is one line naming the file, the dotted field and the fix.
:func:`member_path` confines a member to the bundle; :func:`check_model_io` holds a loaded graph
to what the manifest promises.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ringfold.errors import BundleError
from ringfold.runtime.base.fields import Fields, confined, read_json, relative_member_problem
from ringfold.runtime.base.limits import Limits, limits
from ringfold.runtime.base.text_rules import forbidden_char

from .precisions import PRECISIONS
from .sections import SECTIONS
from .sections.raw_input import RawInput
from .sections.text import TextInfo
from .spec import (
    BUNDLE_FORMAT,
    BUNDLE_FORMAT_VERSION,
    EMBEDDING,
    FIX,
    LOGITS,
    MANIFEST_FILE,
    ORT_OPTIMIZATIONS,
    REFERENCE_SOURCES,
    SYNTHETIC_NOTE,
    ModelFile,
    SectionContext,
    TensorSpec,
)


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
    #: optional sections (older bundles lack them, :mod:`.sections`): the raw-pixel models, the DeepStream
    #: folder's files, the text tower (open vocabulary)
    raw_input: RawInput | None = None
    deepstream_files: tuple[str, ...] = ()
    text: TextInfo | None = None

    @property
    def input_size(self) -> tuple[int, int]:
        """The model's input (height, width); integers by construction."""
        return int(self.input.shape[2]), int(self.input.shape[3])

    @classmethod
    def parse(cls, data: Any, file: Path) -> Manifest:
        caps = limits()
        f = Fields(data, file, FIX, error=BundleError)
        version = _format_version(f, file)
        member = _Members(_files(f, caps))
        model = f.section("model")
        num_classes = f.integer("num_classes", lo=1, hi=caps.max_classes)
        onnx = f.section("onnx")
        max_dim = max(caps.max_input_side, caps.max_classes, 1 << 16)
        inp, outputs = _graph_io(onnx, num_classes, max_dim, caps)
        variants = _variants(f.section("variants"), member)
        base = f.section("base_model", None)
        ref = f.section("reference")
        sections = _sections(f, SectionContext(member, (int(inp.shape[2]), int(inp.shape[3])), max_dim))
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
            base_model=_model_file(base, "fp32", member) if base is not None else None,
            labels_file=member(f, "labels"),
            preprocess_file=member(f, "preprocess"),
            reference=ReferenceInfo.parse(ref, member, caps.max_reference_images),
            files=member.files,
            **sections,
        )

    def output(self, name: str) -> TensorSpec:
        return next(o for o in self.outputs if o.name == name)


# ------------------------------------------------------------------------------------ parse, by step
def _format_version(f: Fields, file: Path) -> int:
    """A ringfold bundle manifest of a format version this ringfold reads."""
    if f.raw("format", None) != BUNDLE_FORMAT:
        raise BundleError(f"{file}: not a ringfold bundle manifest; pass a folder written by `ringfold export`")
    version = f.raw("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > BUNDLE_FORMAT_VERSION:
        raise BundleError(
            f"{file}: bundle format {version} comes from a newer ringfold "
            f"({str(f.raw('ringfold_version', '?'))[:40]}); upgrade ringfold on this device"
        )
    return f.integer("format_version", lo=1, hi=BUNDLE_FORMAT_VERSION)


def _files(f: Fields, caps: Limits) -> dict[str, str]:
    """The files set: each a normalised relative path (never the manifest itself) with its sha256."""
    files_f = f.section("files")
    if not 1 <= len(files_f.data) <= caps.max_bundle_files:
        raise files_f.fail(f"must list 1..{caps.max_bundle_files} files, lists {len(files_f.data)}")
    files: dict[str, str] = {}
    for rel, digest in files_f.data.items():
        problem = relative_member_problem(rel)
        if problem or rel == MANIFEST_FILE:
            raise files_f.fail(problem or "must not list the manifest itself", rel)
        files[rel] = files_f.sha256(digest, rel)
    return files


class _Members:
    """``member(section, key)``: the path a field names, refused unless the files set hashes it."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files = files

    def __call__(self, section: Fields, key: str, default: Any = None) -> str:
        rel = section.string(key, default, max_len=1024, check=relative_member_problem)
        if rel not in self.files:
            raise section.fail(f"names {rel!r}, which the manifest's files set does not hash", key)
        return rel


def _graph_io(onnx: Fields, num_classes: int, max_dim: int, caps: Limits) -> tuple[TensorSpec, tuple[TensorSpec, ...]]:
    """The graph's one input, [batch, 3, H, W], and its two outputs, logits and embedding."""
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
    return inp, outputs


def _model_file(section: Fields, name: str | None, member: _Members) -> ModelFile:
    precision = section.string("precision", choices=PRECISIONS)
    if name is not None and precision != name:
        raise section.fail(f"is {precision!r} under the variant named {name!r}", "precision")
    return ModelFile(
        file=member(section, "file"),
        precision=precision,
        ort_optimization=section.string("ort_optimization", "all", choices=ORT_OPTIMIZATIONS),
        details=dict(section.data),
    )


def _variants(variants_f: Fields, member: _Members) -> dict[str, ModelFile]:
    """The precision variants, named by their precision; an fp32 one is always there."""
    variants = {}
    for name in variants_f.data:
        if name not in PRECISIONS:
            raise variants_f.fail(f"has an unknown variant {str(name)[:40]!r} (known: {', '.join(PRECISIONS)})")
        variants[name] = _model_file(variants_f.section(name), name, member)
    if "fp32" not in variants:
        raise variants_f.fail("has no fp32 variant")
    return variants


def _sections(f: Fields, context: SectionContext) -> dict[str, Any]:
    """Each optional section the manifest has, parsed by its own parser; the absent ones' defaults."""
    values = {}
    for section in SECTIONS:
        found = f.section(section.key, None)
        values[section.attribute] = section.absent if found is None else section.parse(found, context)
    return values


# ------------------------------------------------------------------------------------------ members
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
