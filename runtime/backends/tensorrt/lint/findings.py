"""What the lint reports: one :class:`Finding` per problem, and how many-node rules fold into one row."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

SEVERITIES = ("blocker", "warning", "info")
_SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
#: a strongly typed target's warning on a Q/DQ graph whose other parts are fp32 (int8 + fp32 engine)
INT8_FP32_PARTS = "int8-fp32-parts"

#: node-level findings folded into one row when many nodes hit the same rule
GROUPED_CODES = frozenset(
    {"qdq-dtype", "qdq-zero-point", "qdq-scale", "non-constant-input", "unsupported-attribute", "double",
     "cast-int8", "unsupported-dtype"}
)  # fmt: skip


@dataclass(frozen=True)
class Finding:
    severity: str  # blocker | warning | info
    code: str
    node: str | None
    message: str
    fix: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def count(findings: Iterable[Finding], severity: str) -> int:
    return sum(1 for f in findings if f.severity == severity)


def has_blocker(results: dict[str, list[Finding]]) -> bool:
    return any(count(f, "blocker") for f in results.values())


def grouped(findings: Iterable[Finding]) -> list[Finding]:
    """One row per (severity, code, fix) for node-level rules hit many times; blockers first."""
    groups: dict[tuple[str, str, str], list[Finding]] = defaultdict(list)
    order: list[tuple[str, str, str] | Finding] = []
    for f in findings:
        if f.code in GROUPED_CODES:
            key = (f.severity, f.code, f.fix)
            if key not in groups:
                order.append(key)
            groups[key].append(f)
        else:
            order.append(f)
    out = []
    for item in order:
        if isinstance(item, Finding):
            out.append(item)
            continue
        first, *rest = groups[item]
        if rest:
            names = ", ".join(str(f.node) for f in rest[:3]) + (", …" if len(rest) > 3 else "")
            first = Finding(
                first.severity,
                first.code,
                first.node,
                f"{first.message} — and {len(rest)} more node(s) like it: {names}",
                first.fix,
            )
        out.append(first)
    return sorted(out, key=lambda f: _SEVERITY_RANK[f.severity])
