"""What ``ringfold check`` judges: every ONNX graph of a bundle that TensorRT gets, and what it only lists.

A bundle carries more graphs than its precision variants: the raw-pixel models (the ones DeepStream
builds its engine from) and the text tower (open vocabulary). Each is a *subject* of the check. Whether a
precision variant goes to TensorRT is read from the one precision table
(:mod:`ringfold.runtime.bundle.precisions`): a variant TensorRT runs, or one a TensorRT engine is built
from, is judged; any other (int8-dynamic: ONNX Runtime on a CPU) is listed with why, and its findings
never fail the check — TensorRT never sees it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ringfold.errors import RingfoldError
from ringfold.runtime.bundle.loader import Bundle
from ringfold.runtime.bundle.precisions import TABLE

#: subject names beside the precisions: the raw-pixel models (one per input dtype) and the text tower
RAW_PREFIX = "raw-"
TEXT = "text"


@dataclass(frozen=True)
class Subject:
    """One graph of a bundle as the check sees it."""

    name: str  # "fp32", "int8-dynamic", "raw-uint8", "text"
    file: str  # relative to the bundle
    precision: str  # whose precision rules apply (the raw models and the text tower are fp32 graphs)
    tensorrt: bool  # judged: its blockers fail the check
    why_not: str = ""  # for a subject TensorRT never gets: which backends take it instead

    @property
    def label(self) -> str:
        return f"{self.name} ({self.file})"


def for_tensorrt(precision: str) -> bool:
    """Whether TensorRT gets this precision's graph: it runs it, or builds an engine of some precision from it.

    A name the table does not know is judged (a stricter check is the safe side)."""
    known = TABLE.get(precision)
    if known is None:
        return True
    return "tensorrt" in known.backends or any(precision in p.engine_sources for p in TABLE.values())


def not_for_tensorrt(precision: str) -> str:
    """The line a precision TensorRT never gets is listed with: "ONNX Runtime CPU only, not for TensorRT"."""
    known = TABLE[precision]
    names = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}
    where = " / ".join(names.get(b, b) for b in known.backends) or "no backend"
    return f"{where}{' CPU' if known.cpu_only else ''} only, not for TensorRT"


def _variant(bundle: Bundle, name: str) -> Subject:
    file = bundle.variants[name].file
    if for_tensorrt(name):
        return Subject(name, file, name, True)
    return Subject(name, file, name, False, not_for_tensorrt(name))


def bundle_subjects(bundle: Bundle) -> list[Subject]:
    """Every graph of ``bundle``: its variants in manifest order, then the raw-pixel models, then the text tower."""
    subjects = [_variant(bundle, name) for name in bundle.variants]
    raw = bundle.manifest.raw_input
    for dtype, model in raw.models.items() if raw else ():
        subjects.append(Subject(f"{RAW_PREFIX}{dtype}", model.file, "fp32", True))
    if raw is not None and raw.qdq is not None:  # judged by the rules of the Q/DQ variant it was built from
        subjects.append(Subject(f"{RAW_PREFIX}int8", raw.qdq.file, raw.qdq_source, True))
    if bundle.manifest.text is not None:
        subjects.append(Subject(TEXT, bundle.manifest.text.file, "fp32", True))
    return subjects


def select_subjects(bundle: Bundle, names: Sequence[str] | str | None) -> list[Subject]:
    """The subjects ``names`` ask for (None / "all": every one), each refused in one line when absent."""
    every = bundle_subjects(bundle)
    if names is None or names == "all" or (not isinstance(names, str) and "all" in names):
        return every
    by_name = {s.name: s for s in every}
    chosen = []
    for name in [names] if isinstance(names, str) else dict.fromkeys(names):
        if name in by_name:
            chosen.append(by_name[name])
            continue
        if name in TABLE:
            bundle.model_path(name)  # raises the bundle's one-line "re-export with --precision" error
        raise RingfoldError(
            f"{bundle.path}: has no {name!r} graph to check (has {', '.join(by_name)}); pick from those or 'all'"
        )
    return chosen
