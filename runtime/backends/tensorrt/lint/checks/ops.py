"""Operators: ops the parser has no importer for, custom-domain ops, and ONNX local functions."""

from __future__ import annotations

from collections import defaultdict

from ..findings import Finding
from ..graph import Graphs
from ..parsers import ParserSpec

#: ONNX Runtime's integer / dynamic-quantization ops: what an int8-dynamic variant is made of
DYNAMIC_QUANT_OPS = ("DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul")

FIX_DYNAMIC_QUANT = (
    "use the static QDQ int8 variant for TensorRT (`ringfold export --precision int8 --calib DIR`); "
    "int8-dynamic is for ONNX Runtime on CPU"
)


def check(g: Graphs, spec: ParserSpec, precision: str | None = None) -> list[Finding]:
    local_functions = {(f.domain, f.name) for f in g.model.functions}
    unsupported: dict[tuple[str, str], list[str]] = defaultdict(list)
    for node, label in g.nodes:
        domain = node.domain or ""
        if (domain, node.op_type) in local_functions:
            if spec.target == "trt-8.6":
                unsupported[("local-function", node.op_type)].append(label)
            continue
        if domain not in ("", "ai.onnx"):
            unsupported[(f"custom:{domain}", node.op_type)].append(label)
            continue
        support = spec.ops.get(node.op_type)
        if support is None or not support.supported:
            unsupported[("op", node.op_type)].append(label)
    out = []
    for (kind, op), labels in unsupported.items():
        names = ", ".join(labels[:3]) + (", …" if len(labels) > 3 else "")
        count = f"{len(labels)} node{'s' if len(labels) > 1 else ''}: {names}"
        if kind == "local-function":
            out.append(
                Finding(
                    "blocker",
                    "local-function",
                    labels[0],
                    f"{op} is an ONNX local function; TensorRT 8.6 cannot import functions ({count})",
                    "inline functions (onnx.inliner.inline_local_functions) or target trt-10",
                )
            )
        elif kind.startswith("custom:"):
            out.append(_custom_op(kind.split(":", 1)[1], op, labels[0], count, spec))
        else:
            out.append(_unsupported_op(op, labels[0], count, spec))
    return out


def _custom_op(domain: str, op: str, first: str, count: str, spec: ParserSpec) -> Finding:
    if op in DYNAMIC_QUANT_OPS:
        fix = FIX_DYNAMIC_QUANT
    elif domain == "com.microsoft":
        fix = "export without ONNX Runtime-specific fusions (they emit com.microsoft contrib ops)"
    else:
        fix = f"replace the op, or build with a TensorRT plugin registered as {op!r}"
    return Finding(
        "blocker",
        "custom-op",
        first,
        f"{domain}::{op} is not an ONNX standard op; the {spec.title} has no importer for it ({count})",
        fix,
    )


def _unsupported_op(op: str, first: str, count: str, spec: ParserSpec) -> Finding:
    support = spec.ops.get(op)
    if op in DYNAMIC_QUANT_OPS:
        fix = FIX_DYNAMIC_QUANT
    elif support is not None and support.since:
        fix = (
            f"supported from TensorRT {support.since}"
            + (" (--target trt-10, JetPack 6.1+)" if spec.target == "trt-8.6" else "")
            + "; or rewrite it with supported ops"
        )
    else:
        fix = "rewrite it with supported ops in the PyTorch model and re-export, or supply a TensorRT plugin"
    listed = "is listed as unsupported by" if support is not None else "is not in the operator table of"
    return Finding("blocker", "unsupported-op", first, f"{op} {listed} the {spec.title} ({count})", fix)
