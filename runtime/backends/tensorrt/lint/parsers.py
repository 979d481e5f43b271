"""The TensorRT ONNX parsers the lint knows, loaded from the data files in ``ops/`` (one per target).

No onnx needed: element types stay ``TensorProto`` names ("FLOAT", "INT8"), compared with
:func:`~ringfold.runtime.backends.tensorrt.lint.graph.onnx_type` of a tensor's type.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources

from ringfold.errors import RingfoldError


@dataclass(frozen=True)
class OpSupport:
    supported: bool
    note: str = ""  # partial support / restrictions, in our words
    since: str | None = None  # TensorRT release that added it, when later than the target's baseline


@dataclass(frozen=True)
class ParserSpec:
    target: str
    title: str
    version: str
    opset_min: int
    opset_max: int
    ir_max: int  # newest ONNX IR version of the onnx release the parser is built with
    int64: bool  # native INT64 tensors
    qdq_data_types: tuple[str, ...]  # TensorProto type names allowed as DequantizeLinear data
    io_types: frozenset[str] = field(repr=False)  # types a graph input/output may have
    cast_types: frozenset[str] = field(repr=False)  # types Cast(to=...) may produce
    ops: dict[str, OpSupport] = field(repr=False)
    #: every network is strongly typed (TensorRT 11): the ONNX's own types are the engine's precisions
    strongly_typed: bool = False


def _version_key(target: str) -> tuple[int, ...]:
    return tuple(int(part) for part in target.removeprefix("trt-").split("."))


def _spec(doc: dict) -> ParserSpec:
    ops = {op: OpSupport(True, note) for op, note in doc["supported"].items()}
    ops.update({op: OpSupport(False, since=since) for op, since in doc["unsupported"].items()})
    opset_min, opset_max = doc["opset"]
    return ParserSpec(
        target=doc["target"],
        title=doc["title"],
        version=doc["version"],
        opset_min=opset_min,
        opset_max=opset_max,
        ir_max=doc["ir_max"],
        int64=doc["int64"],
        qdq_data_types=tuple(doc["qdq_data_types"]),
        io_types=frozenset(doc["io_types"]),
        cast_types=frozenset(doc["cast_types"]),
        ops=ops,
        strongly_typed=bool(doc.get("strongly_typed", False)),
    )


def load_parsers() -> dict[str, ParserSpec]:
    """Every ``ops/trt-*.json``, oldest TensorRT first, keyed by its target name."""
    files = [f for f in resources.files(__package__).joinpath("ops").iterdir() if f.name.endswith(".json")]
    docs = [json.loads(f.read_text(encoding="utf-8")) for f in files]
    return {doc["target"]: _spec(doc) for doc in sorted(docs, key=lambda d: _version_key(d["target"]))}


PARSERS: dict[str, ParserSpec] = load_parsers()
TARGETS = tuple(PARSERS)


def parser_spec(target: str) -> ParserSpec:
    if target not in PARSERS:
        raise RingfoldError(f"--target {target!r}: unknown TensorRT target; use one of {', '.join(TARGETS)}")
    return PARSERS[target]
