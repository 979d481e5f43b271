"""Graph inputs and outputs: element types the parser can bind, and no dynamic dimension but the batch axis."""

from __future__ import annotations

from ..findings import Finding
from ..graph import Graphs, dtype_name, onnx_type
from ..parsers import ParserSpec


def check(g: Graphs, spec: ParserSpec, precision: str | None = None) -> list[Finding]:
    out = []
    graph = g.model.graph
    init_names = {t.name for t in graph.initializer}
    for kind, values in (("input", [v for v in graph.input if v.name not in init_names]), ("output", graph.output)):
        for v in values:
            tt = v.type.tensor_type if v.type.HasField("tensor_type") else None
            if tt is None:
                out.append(
                    Finding(
                        "blocker",
                        "io-dtype",
                        v.name,
                        f"graph {kind} {v.name} is not a tensor",
                        "export tensors only (no sequences/maps/optionals) at the model boundary",
                    )
                )
                continue
            out += _element_type(kind, v.name, tt.elem_type, spec)
            if kind == "input":
                out += _input_shape(v.name, tt)
    return out


def _element_type(kind: str, name: str, elem_type: int, spec: ParserSpec) -> list[Finding]:
    et = onnx_type(elem_type)
    if et == "INT64" and not spec.int64:
        return [
            Finding(
                "blocker",
                "io-dtype",
                name,
                f"graph {kind} {name} is int64: TensorRT 8.6 has no INT64 tensors",
                f"export the {kind} as int32 (or target trt-10)",
            )
        ]
    if et == "INT64":
        return [
            Finding(
                "info",
                "io-dtype",
                name,
                f"graph {kind} {name} is int64: TensorRT {spec.version} binds it as INT64",
                "feed/read int64 buffers",
            )
        ]
    if et == "BOOL":
        return [
            Finding(
                "warning",
                "io-dtype",
                name,
                f"graph {kind} {name} is bool: TensorRT binds BOOL, but ringfold's runtime feeds float32 images",
                "export the model boundary as float32",
            )
        ]
    if et == "DOUBLE":
        return [Finding("blocker", "double", name, f"graph {kind} {name} is float64", "export in float32")]
    if et not in spec.io_types:
        return [
            Finding(
                "blocker",
                "io-dtype",
                name,
                f"graph {kind} {name} is {dtype_name(elem_type)}: not a {spec.title} binding type",
                "export the model boundary as float32 (or int32)",
            )
        ]
    return []


def _input_shape(name: str, tt) -> list[Finding]:
    if not tt.HasField("shape"):
        return [
            Finding(
                "blocker",
                "dynamic-shape",
                name,
                f"input {name} has no shape at all",
                "export with a fixed input shape (dynamic batch only)",
            )
        ]
    out = []
    dims = list(tt.shape.dim)
    shape = [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in dims]
    dynamic = [i for i, d in enumerate(dims) if not (d.HasField("dim_value") and d.dim_value > 0)]
    other = [i for i in dynamic if i != 0]
    if other:
        out.append(
            Finding(
                "blocker",
                "dynamic-shape",
                name,
                f"input {name} {shape} has dynamic dimension(s) {other} besides the batch axis; "
                "a bundle has one preprocessing size",
                "export with fixed spatial size (only the batch axis dynamic)",
            )
        )
    if 0 in dynamic:
        out.append(
            Finding(
                "info",
                "dynamic-batch",
                name,
                f"input {name} {shape} has a dynamic batch axis: the engine needs an optimization profile",
                "build with a batch profile: `ringfold build-engine BUNDLE --batch min,opt,max`",
            )
        )
    return out
