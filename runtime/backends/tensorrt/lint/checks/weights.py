"""Weights: float64 (TensorRT has none), INT64 for 8.6 (cast down to INT32), and sizes against protobuf's limit."""

from __future__ import annotations

from typing import Any

from ..findings import Finding
from ..graph import Graphs, is_external, onnx_type, tensor_nbytes
from ..parsers import ParserSpec

LARGE_TOTAL_BYTES = 2 * 1024**3  # protobuf's hard limit for one serialized model
LARGE_SINGLE_BYTES = 500 * 1024**2


def check(g: Graphs, spec: ParserSpec, precision: str | None = None) -> list[Finding]:
    out = []
    tensors: list[tuple[str, Any]] = list(g.initializers.items()) + list(g.constants.items())
    double = [name for name, t in tensors if onnx_type(t.data_type) == "DOUBLE"]
    if double:
        out.append(
            Finding(
                "blocker",
                "double",
                double[0],
                f"{len(double)} float64 weight(s) ({', '.join(double[:3])}"
                f"{', …' if len(double) > 3 else ''}): TensorRT has no float64 and clamps them to float32",
                "export in float32 (call model.float() before export)",
            )
        )
    if not spec.int64:
        int64 = [name for name, t in tensors if onnx_type(t.data_type) == "INT64"]
        if int64:
            out.append(
                Finding(
                    "warning",
                    "int64-weights",
                    int64[0],
                    f"{len(int64)} INT64 weight(s)/constant(s): TensorRT 8.6 casts them to INT32 "
                    "(values beyond ±2^31 are clamped; shape constants are fine)",
                    "nothing to do for shape constants; keep real int64 data within int32 range",
                )
            )
    out += _sizes(tensors)
    return out


def _sizes(tensors: list[tuple[str, Any]]) -> list[Finding]:
    out = []
    sizes = [(name, tensor_nbytes(t), is_external(t)) for name, t in tensors]
    total = sum(s for _, s, _ in sizes)
    inline = sum(s for _, s, ext in sizes if not ext)
    if inline > LARGE_TOTAL_BYTES:
        out.append(
            Finding(
                "blocker",
                "model-size",
                None,
                f"{inline / 1024**3:.2f} GiB of inline weights exceed protobuf's 2 GiB limit",
                "save with external data (onnx.save_model(..., save_as_external_data=True)) "
                "and build from the file path",
            )
        )
    elif total > LARGE_TOTAL_BYTES:
        out.append(
            Finding(
                "info",
                "model-size",
                None,
                f"{total / 1024**3:.2f} GiB of weights, stored as external data",
                "keep the external data files next to the .onnx and build from its path",
            )
        )
    for name, size, _ in sizes:
        if size > LARGE_SINGLE_BYTES:
            out.append(
                Finding(
                    "warning",
                    "large-weight",
                    name,
                    f"single weight of {size / 1024**2:.0f} MiB: heavy on builder memory (Jetson)",
                    "check the builder workspace / device memory; consider int8/fp16",
                )
            )
    return out
