"""Reading an ONNX model for the checks: every (sub)graph's nodes, weights and constants, gathered once.

This module and ``checks/`` import onnx at their top: :func:`~ringfold.runtime.backends.tensorrt.lint.lint.lint_model`
imports them only after its one-line "pip install onnx" check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import ExternalDataInfo, uses_external_data

from ringfold.errors import RingfoldError

#: numpy's spelling where it differs from ONNX's name lower-cased ("float" is float32 in numpy)
_NUMPY_SPELLING = {"FLOAT": "float32", "DOUBLE": "float64"}


def load_model(path: Path):
    """The ModelProto at ``path`` without its external data (the checks read shapes and types, not weights)."""
    if not path.is_file():
        raise RingfoldError(f"{path}: no such ONNX file; pass a bundle directory or an .onnx file")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise RingfoldError(f"{path}: not a readable ONNX model ({exc.__class__.__name__}); re-export it") from None


# ------------------------------------------------------------------------------------------ element types
def onnx_type(elem_type: int) -> str:
    """ONNX's name of an element type ("FLOAT", "INT64", "FLOAT8E4M3FN"), the names the ``ops/`` tables use."""
    try:
        return TensorProto.DataType.Name(elem_type)
    except ValueError:  # a number this onnx does not know
        return str(elem_type)


def type_label(onnx_name: str) -> str:
    """An ONNX type name as messages spell it: "FLOAT" -> "float32", "INT64" -> "int64", "BFLOAT16" -> "bfloat16"."""
    return _NUMPY_SPELLING.get(onnx_name, onnx_name.lower())


def dtype_name(elem_type: int) -> str:
    """An element type as messages spell it: "float32", "int64", "bfloat16", "float8e4m3fn"."""
    return type_label(onnx_type(elem_type))


def tensor_nbytes(t) -> int:
    """Bytes a weight takes: its raw data or external-data length as stored, else elements × numpy's item size."""
    if uses_external_data(t):
        length = ExternalDataInfo(t).length
        if length:
            return int(length)
    elif t.HasField("raw_data"):
        return len(t.raw_data)
    n = int(np.prod(t.dims, dtype=np.int64)) if len(t.dims) else 1
    try:
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    except (KeyError, TypeError):  # UNDEFINED, or a type this onnx does not map
        itemsize = 1
    return n * itemsize


def is_external(t) -> bool:
    return uses_external_data(t)


# ------------------------------------------------------------------------------------------------- nodes
def iter_graphs(graph):
    """The graph and every subgraph (If/Loop/Scan bodies), depth first."""
    yield graph
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("g"):
                yield from iter_graphs(a.g)
            for g in a.graphs:
                yield from iter_graphs(g)


def node_label(node, index: int) -> str:
    return node.name or f"{node.op_type}#{index}"


def attr(node, name: str, default=None):
    """The value of attribute ``name`` of ``node`` (strings decoded), or ``default`` when it is not set."""
    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode(errors="replace") if isinstance(value, bytes) else value
    return default


class Graphs:
    """Everything the checks need from a model, gathered once across all (sub)graphs."""

    def __init__(self, model) -> None:
        self.model = model
        self.graphs = list(iter_graphs(model.graph))
        self.initializers: dict[str, Any] = {}
        self.constants: dict[str, Any] = {}  # Constant node output -> TensorProto
        self.nodes: list[tuple[Any, str]] = []  # (node, label) in graph order, subgraphs after their parent
        index = 0
        for g in self.graphs:
            for t in g.initializer:
                self.initializers[t.name] = t
            for node in g.node:
                self.nodes.append((node, node_label(node, index)))
                index += 1
                if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output:
                    value = _constant_value(node)
                    if value is not None:
                        self.constants[node.output[0]] = value
        # Identity of a weight is still a weight to the parser
        self.aliases: dict[str, str] = {}
        for node, _ in self.nodes:
            if node.op_type == "Identity" and node.input and node.output:
                self.aliases[node.output[0]] = node.input[0]

    def _resolve(self, name: str) -> str:
        seen = set()
        while name in self.aliases and name not in seen:
            seen.add(name)
            name = self.aliases[name]
        return name

    def weight(self, name: str):
        """The TensorProto behind ``name`` when the parser sees it as weights (initializer / Constant), else None."""
        name = self._resolve(name)
        found = self.initializers.get(name)
        return found if found is not None else self.constants.get(name)

    def is_weight(self, name: str) -> bool:
        return self.weight(name) is not None

    def value(self, name: str) -> np.ndarray | None:
        t = self.weight(name)
        if t is None or is_external(t):
            return None
        try:
            return numpy_helper.to_array(t)
        except Exception:
            return None


def _constant_value(node):
    """A Constant node's value as a TensorProto (value, or value_float(s)/value_int(s) made into one)."""
    for a in node.attribute:
        if a.name == "value":
            return a.t
        if a.name in ("value_float", "value_floats"):
            return numpy_helper.from_array(np.array(helper.get_attribute_value(a), dtype=np.float32))
        if a.name in ("value_int", "value_ints"):
            return numpy_helper.from_array(np.array(helper.get_attribute_value(a), dtype=np.int64))
    return None  # sparse / string constants: flagged by the Constant rule
