"""Opset and IR version: the parser imports one range of default-domain opsets and knows one onnx release."""

from __future__ import annotations

from ..findings import Finding
from ..graph import Graphs
from ..parsers import ParserSpec


def default_opset(model) -> int | None:
    """The model's ai.onnx opset version (None: it imports none)."""
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return None


def check(g: Graphs, spec: ParserSpec, precision: str | None = None) -> list[Finding]:
    model = g.model
    out = []
    opset = default_opset(model)
    if opset is None:
        out.append(
            Finding(
                "blocker",
                "opset",
                None,
                "the model imports no default-domain (ai.onnx) opset",
                "re-export the model with a standard opset (ringfold exports opset 17)",
            )
        )
    elif not spec.opset_min <= opset <= spec.opset_max:
        out.append(
            Finding(
                "blocker",
                "opset",
                None,
                f"opset {opset} is outside the {spec.title}'s range {spec.opset_min}–{spec.opset_max}",
                f"re-export with an opset in {spec.opset_min}–{spec.opset_max} (`ringfold export --opset 17`)"
                + (" or target TensorRT 10 (--target trt-10)" if spec.target == "trt-8.6" and opset <= 20 else ""),
            )
        )
    if model.ir_version > spec.ir_max:
        out.append(
            Finding(
                "warning",
                "ir-version",
                None,
                f"ONNX IR version {model.ir_version} is newer than the parser's onnx (IR {spec.ir_max}); "
                "parsing may fail on new fields",
                "save the model with an older onnx, or set model.ir_version to "
                f"{spec.ir_max} when it uses no newer features",
            )
        )
    return out
