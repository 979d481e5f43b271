"""The lint's reports: a markdown table per graph (``ringfold check``) and JSON (``--json``).

Each graph of the bundle is a subject (:mod:`.subjects`): a judged one gets its verdict and table, one
TensorRT never gets (int8-dynamic) a line saying which backend takes it instead.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ringfold.runtime.bundle.loader import Bundle

from .findings import SEVERITIES, Finding, count
from .parsers import parser_spec
from .subjects import Subject, bundle_subjects


def _cell(text: str | None) -> str:
    return (text or "—").replace("|", "\\|").replace("\n", " ")


def format_table(findings: list[Finding]) -> str:
    if not findings:
        return "no findings"
    rows = ["| severity | code | node | message | fix |", "|---|---|---|---|---|"]
    rows += [f"| {f.severity} | {f.code} | {_cell(f.node)} | {_cell(f.message)} | {_cell(f.fix)} |" for f in findings]
    return "\n".join(rows)


def _subjects(bundle: Bundle, results: dict[str, list[Finding]], subjects: Sequence[Subject] | None) -> list[Subject]:
    """What the report lists: ``subjects`` as given, else those of ``results`` as the bundle names them."""
    if subjects is not None:
        return list(subjects)
    known = {s.name: s for s in bundle_subjects(bundle)}
    return [known.get(name, Subject(name, "?", name, True)) for name in results]


def judged_blockers(results: dict[str, list[Finding]], subjects: Sequence[Subject]) -> list[str]:
    """The judged subjects with a blocker, by name: what fails the check."""
    judged = {s.name for s in subjects if s.tensorrt}
    return [name for name, findings in results.items() if name in judged and count(findings, "blocker")]


def format_report(
    bundle: Bundle, target: str, results: dict[str, list[Finding]], subjects: Sequence[Subject] | None = None
) -> str:
    spec = parser_spec(target)
    parts = [f"TensorRT check of {bundle.path} against the {spec.title} ({target})"]
    for subject in _subjects(bundle, results, subjects):
        if not subject.tensorrt:
            parts.append(f"\n{subject.label}: not judged — {subject.why_not}")
            continue
        findings = results.get(subject.name, [])
        b, w, i = (count(findings, s) for s in SEVERITIES)
        verdict = "FAIL" if b else "ok"
        parts.append(f"\n{subject.label}: {verdict} — {b} blocker(s), {w} warning(s), {i} info")
        parts.append(format_table(findings))
    return "\n".join(parts)


def to_json(
    bundle: Bundle,
    target: str,
    results: dict[str, list[Finding]],
    extra: dict | None = None,
    subjects: Sequence[Subject] | None = None,
) -> str:
    spec = parser_spec(target)
    listed = _subjects(bundle, results, subjects)
    doc: dict[str, Any] = {
        "bundle": str(bundle.path),
        "target": target,
        "parser": spec.title,
        "strongly_typed": spec.strongly_typed,
        "passed": not judged_blockers(results, listed),
        "precisions": {s.name: _subject_json(s, results.get(s.name, [])) for s in listed},
    }
    if extra:
        doc.update(extra)
    return json.dumps(doc, indent=2)


def _subject_json(subject: Subject, findings: list[Finding]) -> dict[str, Any]:
    row: dict[str, Any] = {"file": subject.file, "for_tensorrt": subject.tensorrt}
    if not subject.tensorrt:
        return {**row, "note": subject.why_not, "findings": []}
    counts = {f"{s}s" if s != "info" else s: count(findings, s) for s in SEVERITIES}
    return {**row, **counts, "findings": [x.to_dict() for x in findings]}
