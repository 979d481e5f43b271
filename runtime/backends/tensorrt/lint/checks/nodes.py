"""Node rules: what the parser refuses in the attributes and inputs of ops it otherwise imports.

:data:`RULES` maps an op type to its rule; a rule returns the findings for one node.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..checks import qdq
from ..findings import Finding
from ..graph import Graphs, attr, dtype_name, onnx_type
from ..parsers import ParserSpec

FIX_FOLD = "fold constants first (`polygraphy surgeon sanitize model.onnx --fold-constants`) or re-export"

Rule = Callable[[Graphs, object, str, ParserSpec], list[Finding]]


def check(g: Graphs, spec: ParserSpec, precision: str | None = None) -> list[Finding]:
    out: list[Finding] = []
    for node, label in g.nodes:
        if node.domain not in ("", "ai.onnx"):
            continue
        rule = RULES.get(node.op_type) or (_reduce if node.op_type.startswith("Reduce") else None)
        if rule is not None:
            out.extend(rule(g, node, label, spec))
    return out


def _issue(label: str, message: str, fix: str, code="unsupported-attribute", severity="blocker") -> list[Finding]:
    return [Finding(severity, code, label, message, fix)]


def _constant_input(g: Graphs, node, label: str, index: int, what: str, since: str | None) -> list[Finding]:
    """A blocker when input ``index`` (``what``) is computed at run time instead of being a weight."""
    if len(node.input) > index and node.input[index] and not g.is_weight(node.input[index]):
        later = f" (TensorRT {since}+ accepts a tensor)" if since else ""
        message = f"{node.op_type} {what} is computed at run time; the parser needs it as an initializer{later}"
        return [Finding("blocker", "non-constant-input", label, message, FIX_FOLD)]
    return []


# ----------------------------------------------------------------------------------- constant inputs
def _squeeze(g, node, label, spec):
    return _constant_input(g, node, label, 1, "axes", "10.7")


def _slice(g, node, label, spec):
    return _constant_input(g, node, label, 3, "axes", "10.3") if spec.target == "trt-8.6" else []


def _cumsum(g, node, label, spec):
    return _constant_input(g, node, label, 1, "axis", "10.8")


def _reduce(g, node, label, spec):
    if node.op_type not in spec.ops:  # the table's Reduce* ops; any other is the ops check's business
        return []
    return _constant_input(g, node, label, 1, "axes", None)


# --------------------------------------------------------------------------------------- attributes
def _dropout(g, node, label, spec):
    if len(node.input) > 2 and node.input[2]:
        value = g.value(node.input[2])
        if value is None or bool(np.asarray(value).any()):
            msg = "Dropout in training mode (or a run-time training_mode) cannot be imported"
            return _issue(label, msg, "export in eval()")
    return []


def _resize(g, node, label, spec):
    problems = []
    if (mode := attr(node, "mode", "nearest")) not in ("nearest", "linear"):
        problems.append(f"mode={mode}")
    if (ctm := attr(node, "coordinate_transformation_mode", "")) == "tf_crop_and_resize":
        problems.append(f"coordinate_transformation_mode={ctm}")
    if attr(node, "antialias", 0):
        problems.append("antialias=1")
    if (policy := attr(node, "keep_aspect_ratio_policy", "stretch")) != "stretch":
        problems.append(f"keep_aspect_ratio_policy={policy}")
    if not problems:
        return []
    return _issue(
        label,
        f"Resize with {', '.join(problems)} is not supported by the {spec.title}",
        "use mode nearest/linear without antialiasing (e.g. F.interpolate bilinear, antialias=False)",
    )


def _pool(g, node, label, spec):
    out = []
    if node.op_type == "MaxPool" and len(node.output) > 1 and node.output[1]:
        out += _issue(label, "MaxPool's Indices output is not supported", "do not use return_indices")
    dilations = attr(node, "dilations", None)
    if dilations and any(d != 1 for d in dilations):
        out += _issue(label, f"{node.op_type} with dilations {dilations} is not supported", "use dilation 1")
    return out


def _layer_norm(g, node, label, spec):
    if any(o for o in node.output[1:]):
        msg = "LayerNormalization's Mean/InvStdDev outputs are not supported"
        return _issue(label, msg, "use only the normalized output")
    return []


def _lstm(g, node, label, spec):
    if attr(node, "input_forget", 0) or attr(node, "layout", 0):
        fix = "export with input_forget=0 and layout=0 (batch_first=False)"
        return _issue(label, "LSTM with input_forget=1 or layout=1", fix)
    return []


def _einsum(g, node, label, spec):
    equation = attr(node, "equation", "") or ""
    if "..." in equation:
        return _issue(
            label,
            f"Einsum with an ellipsis ({equation}) is not supported before TensorRT 10.12",
            "write the equation with explicit axes, or use MatMul",
        )
    return []


def _scatter(g, node, label, spec):
    reduction = attr(node, "reduction", "none")
    if reduction != "none" and (node.op_type == "ScatterND" or spec.target == "trt-8.6"):
        return _issue(label, f"{node.op_type} with reduction={reduction} is not supported", "use reduction none")
    return []


def _pad(g, node, label, spec):
    if spec.target == "trt-8.6" and attr(node, "mode", "constant") == "wrap":
        return _issue(label, "Pad mode wrap needs TensorRT 10", "use constant/reflect/edge padding or --target trt-10")
    return []


def _constant(g, node, label, spec):
    bad = [a.name for a in node.attribute if a.name in ("sparse_value", "value_string", "value_strings")]
    if bad:
        return _issue(label, f"Constant with {bad[0]} is not supported", "use a dense numeric tensor")
    return []


def _cast(g, node, label, spec):
    to = onnx_type(attr(node, "to", 1))  # 1: FLOAT
    if to == "DOUBLE":
        message = "Cast to float64 (DOUBLE): TensorRT has no float64"
        return _issue(label, message, "export in float32 (no .double())", "double")
    if to == "INT8" and spec.target != "trt-8.6":
        return _issue(
            label,
            "Cast to INT8: TensorRT 10 treats INT8 as a quantized type only",
            "express it as QuantizeLinear, or keep the tensor in int32/float",
            "cast-int8",
            "warning",
        )
    if to not in spec.cast_types:
        return _issue(
            label,
            f"Cast to {dtype_name(attr(node, 'to', 1))} is not a TensorRT type in the {spec.title}",
            "cast to float32/float16/int32 instead",
            "unsupported-dtype",
        )
    return []


#: op type -> rule (``Reduce*`` ops of the table share one rule, looked up by prefix)
RULES: dict[str, Rule] = {
    "Squeeze": _squeeze,
    "Unsqueeze": _squeeze,
    "Slice": _slice,
    "CumSum": _cumsum,
    "Dropout": _dropout,
    "Resize": _resize,
    "MaxPool": _pool,
    "AveragePool": _pool,
    "LpPool": _pool,
    "LayerNormalization": _layer_norm,
    "LSTM": _lstm,
    "Einsum": _einsum,
    "ScatterND": _scatter,
    "ScatterElements": _scatter,
    "Pad": _pad,
    "Constant": _constant,
    "Cast": _cast,
    "QuantizeLinear": qdq.check_node,
    "DequantizeLinear": qdq.check_node,
}
