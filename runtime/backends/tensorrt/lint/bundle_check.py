"""``ringfold check BUNDLE``: every graph TensorRT gets, judged against one target; the verdict and its exit code.

The lint of each judged subject (:mod:`.subjects`: the TensorRT precisions, the raw-pixel models, the
text tower), optionally Polygraphy's build-and-compare of each that passed, and what fails: a judged
subject with a blocker, or an engine that disagrees with ONNX Runtime. A variant TensorRT never gets
(int8-dynamic, ONNX Runtime on a CPU) is listed, not linted, and fails nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from ringfold.runtime.bundle.loader import Bundle
from ringfold.runtime.bundle.precisions import TABLE

from .compare import PolygraphyResult, polygraphy_compare
from .findings import INT8_FP32_PARTS, Finding, count
from .lint import lint_model
from .parsers import parser_spec
from .report import format_report, judged_blockers, to_json
from .subjects import Subject, select_subjects


@dataclass
class CheckResult:
    """The lint of each judged graph and, with Polygraphy, each engine vs ONNX Runtime."""

    bundle: Bundle
    target: str
    subjects: list[Subject]
    findings: dict[str, list[Finding]]  # subject name -> the lint's rows (judged subjects only)
    compared: dict[str, PolygraphyResult]  # precision -> its engine vs ONNX Runtime

    @property
    def failed(self) -> list[str]:
        """What fails, by file: judged graphs with a blocker, '<precision> (polygraphy)' for a disagreeing engine."""
        labels = {s.name: s.label for s in self.subjects}
        blocked = [labels[name] for name in judged_blockers(self.findings, self.subjects)]
        return blocked + [f"{p} (polygraphy)" for p, r in self.compared.items() if not r.passed]

    @property
    def passed(self) -> bool:
        return not self.failed

    def to_text(self) -> str:
        summaries = [result.summary() for result in self.compared.values()]
        return "\n".join([format_report(self.bundle, self.target, self.findings, self.subjects), *summaries])

    def to_json(self) -> str:
        extra = {"passed": self.passed}
        if self.compared:
            extra["polygraphy"] = {p: r.to_dict() for p, r in self.compared.items()}
        return to_json(self.bundle, self.target, self.findings, extra, self.subjects)

    def failure_line(self) -> str:
        return (
            f"TensorRT check FAILED for {self.bundle.path} against {self.target}: {', '.join(self.failed)}; "
            "see the fix column"
        )


def _int8_engine_source(bundle: Bundle) -> str | None:
    """The variant TensorRT's int8 engine is built from: the precision table's first int8 source the bundle has."""
    sources = TABLE["int8"].engine_sources if "int8" in TABLE else ()
    return next((name for name in sources if name in bundle.variants), None)


#: graphs only a strongly typed build reads (TensorRT >= 10): on 8.6 they are listed, never judged
STRONGLY_TYPED_ONLY = {
    "int8-fp16": "TensorRT 10 and later only (the strongly typed int8 build); 8.6 builds int8 from int8",
}


def _for_target(subject: Subject, version: str) -> Subject:
    """``subject`` as ``version``'s TensorRT sees it: a strongly typed source is not a graph 8.6 gets."""
    why = STRONGLY_TYPED_ONLY.get(subject.name)
    if why and subject.tensorrt and version.split(".")[0] == "8":
        return replace(subject, tensorrt=False, why_not=why)
    return subject


def check_bundle(
    bundle: Bundle, target: str = "trt-10", names: Sequence[str] | str | None = None, *, polygraphy: bool = False
) -> CheckResult:
    """Lint every graph of ``bundle`` TensorRT gets (``names``: a subset, None / "all": every one); with
    ``polygraphy`` (TensorRT + CUDA; the caller checked it is here) also build each precision variant that
    passed and compare it with ONNX Runtime on the bundle's reference images."""
    spec = parser_spec(target)  # an unknown target is refused before any graph is read
    subjects = [_for_target(s, spec.version) for s in select_subjects(bundle, names)]
    findings = {s.name: lint_model(bundle.file(s.file), target, s.precision) for s in subjects if s.tensorrt}
    if "int8" in findings and _int8_engine_source(bundle) != "int8":  # TensorRT builds int8 from another graph
        findings["int8"] = [f for f in findings["int8"] if f.code != INT8_FP32_PARTS]
    compared: dict[str, PolygraphyResult] = {}
    if polygraphy:
        feed = {bundle.manifest.input.name: bundle.reference().pixel_values}
        for s in subjects:
            if s.tensorrt and s.name in bundle.variants and not count(findings[s.name], "blocker"):
                compared[s.name] = polygraphy_compare(bundle.file(s.file), s.name, feed)
    return CheckResult(bundle, target, subjects, findings, compared)
