"""Precision: in an fp16 variant, the nodes ringfold keeps fp32 — the FP16 builder flag may still run them in fp16.

The nodes are :mod:`ringfold.runtime.graph.precision_policy`'s, the same the export kept fp32 and
``build-engine --fp32-layers`` pins. On a strongly typed target (TensorRT 11) the ONNX's types are the
engine's, so the fp32 islands stay fp32 by themselves, and a Q/DQ int8 graph whose other parts are fp32
builds an int8 + fp32 engine, which can be slower than the fp16 one: that is what this family says there.
"""

from __future__ import annotations

from collections import Counter

from onnx import TensorProto

from ringfold.runtime.graph.precision_policy import FP32_OPS, final_normalisation_nodes, is_fp32_node

from ..findings import INT8_FP32_PARTS, Finding
from ..graph import Graphs
from ..parsers import ParserSpec


def check(g: Graphs, spec: ParserSpec, precision: str | None = None) -> list[Finding]:
    if spec.strongly_typed:
        return _int8_float_parts(g, spec) if precision == "int8" else []
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


def _int8_float_parts(g: Graphs, spec: ParserSpec) -> list[Finding]:
    """A Q/DQ graph whose weights outside the quantized ones are float32 and none float16: strongly typed,
    TensorRT runs every non-quantized op in fp32."""
    dtypes = Counter(t.data_type for t in g.initializers.values() if len(t.dims) >= 1 and _elements(t) > 1)
    if not dtypes[TensorProto.FLOAT] or dtypes[TensorProto.FLOAT16]:
        return []
    return [
        Finding(
            "warning",
            INT8_FP32_PARTS,
            None,
            f"the non-quantized parts are float32 ({dtypes[TensorProto.FLOAT]} float32 weight(s), none float16): "
            f"TensorRT {spec.version} builds it strongly typed as int8 + fp32, which can be slower than fp16",
            "export the TensorRT int8 variant whose other parts are fp16 (`ringfold export --precision int8-fp16`) "
            "and build from it",
        )
    ]


def _elements(t) -> int:
    n = 1
    for d in t.dims:
        n *= int(d)
    return n
