"""Precision: in an fp16 variant, the nodes ringfold keeps fp32 — the FP16 builder flag may still run them in fp16.

The nodes are :mod:`ringfold.runtime.graph.precision_policy`'s, the same the export kept fp32 and
``build-engine --fp32-layers`` pins.
"""

from __future__ import annotations

from collections import Counter

from ringfold.runtime.graph.precision_policy import FP32_OPS, final_normalisation_nodes, is_fp32_node

from ..findings import Finding
from ..graph import Graphs
from ..parsers import ParserSpec


def check(g: Graphs, spec: ParserSpec, precision: str | None = None) -> list[Finding]:
    if precision != "fp16":
        return []
    tail = frozenset(final_normalisation_nodes(g.model))
    kept = [(node, label) for node, label in g.nodes if is_fp32_node(node, tail)]
    if not kept:
        return []
    ops = Counter(node.op_type for node, _ in kept if node.op_type in FP32_OPS)
    what = ", ".join(f"{n} {op}" for op, n in sorted(ops.items(), key=lambda item: FP32_OPS.index(item[0])))
    if any(node.name in tail and node.op_type not in FP32_OPS for node, _ in kept):
        what += (", " if what else "") + "the final L2-normalisation and head"
    # named by its first LayerNormalization, the op most likely to overflow
    first = next((label for node, label in kept if node.op_type == "LayerNormalization"), kept[0][1])
    return [
        Finding(
            "info",
            "fp16-layernorm",
            first,
            f"{len(kept)} node(s) ringfold keeps in fp32 ({what}): under the FP16 builder flag TensorRT may run "
            "them in fp16, and LayerNorm/Softmax overflow",
            "build with `ringfold build-engine --fp32-layers` (or --strongly-typed on TensorRT 10)",
        )
    ]
