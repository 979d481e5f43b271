"""The lint's reports: a markdown table per variant (``ringfold check``) and JSON (``--json``)."""

from __future__ import annotations

import json
from typing import Any

from ringfold.runtime.bundle.loader import Bundle

from .findings import SEVERITIES, Finding, count, has_blocker
from .parsers import parser_spec


def _cell(text: str | None) -> str:
    return (text or "—").replace("|", "\\|").replace("\n", " ")


def format_table(findings: list[Finding]) -> str:
    if not findings:
        return "no findings"
    rows = ["| severity | code | node | message | fix |", "|---|---|---|---|---|"]
    rows += [f"| {f.severity} | {f.code} | {_cell(f.node)} | {_cell(f.message)} | {_cell(f.fix)} |" for f in findings]
    return "\n".join(rows)


def format_report(bundle: Bundle, target: str, results: dict[str, list[Finding]]) -> str:
    spec = parser_spec(target)
    parts = [f"TensorRT check of {bundle.path} against the {spec.title} ({target})"]
    for precision, findings in results.items():
        b, w, i = (count(findings, s) for s in SEVERITIES)
        verdict = "FAIL" if b else "ok"
        file = bundle.variants[precision].file if precision in bundle.variants else "?"
        parts.append(f"\n{precision} ({file}): {verdict} — {b} blocker(s), {w} warning(s), {i} info")
        parts.append(format_table(findings))
    return "\n".join(parts)


def to_json(bundle: Bundle, target: str, results: dict[str, list[Finding]], extra: dict | None = None) -> str:
    spec = parser_spec(target)
    doc: dict[str, Any] = {
        "bundle": str(bundle.path),
        "target": target,
        "parser": spec.title,
        "passed": not has_blocker(results),
        "precisions": {
            p: {
                "file": bundle.variants[p].file if p in bundle.variants else None,
                **{f"{s}s" if s != "info" else s: count(f, s) for s in SEVERITIES},
                "findings": [x.to_dict() for x in f],
            }
            for p, f in results.items()
        },
    }
    if extra:
        doc.update(extra)
    return json.dumps(doc, indent=2)
