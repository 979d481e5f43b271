"""Precision: in an fp16 variant, LayerNormalization may overflow when the FP16 builder flag runs it in fp16."""

from __future__ import annotations

from ..findings import Finding
from ..graph import Graphs
from ..parsers import ParserSpec


def check(g: Graphs, spec: ParserSpec, precision: str | None = None) -> list[Finding]:
    ln = [label for node, label in g.nodes if node.op_type == "LayerNormalization"]
    if precision != "fp16" or not ln:
        return []
    return [
        Finding(
            "info",
            "fp16-layernorm",
            ln[0],
            f"{len(ln)} LayerNormalization node(s): under the FP16 builder flag TensorRT may run them in fp16 "
            "and overflow",
            "build with `ringfold build-engine --fp32-layers` (or --strongly-typed on TensorRT 10)",
        )
    ]
