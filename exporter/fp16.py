"""float32 → float16 conversion of an ONNX graph, with rules ringfold owns.

Why our own: the converters we used (onnxruntime.transformers.float16 and
onnxconverter-common's copy) change behaviour between releases inside our
declared range — onnxruntime 1.30's emits a tensor name twice (not SSA), and
onnx.checker refuses the model. This module depends only on ``onnx``'s own
helpers (operator schemas, shape inference, numpy_helper), which are stable
from onnx 1.16 on, so the graph it writes is the same on every version.

The rules, in order:

1. Types come from ``onnx.shape_inference``; only float32 tensors change.
2. A node computes in fp16 when its op is in :data:`FP16_OPS` (ops that are
   type-polymorphic over float and numerically safe in half precision), it is
   not in the op or node block list, it has no subgraph, and its operator
   schema admits float16 for every type parameter bound to float. Only the
   inputs and outputs bound to that float parameter change type (Reshape's
   shape, Gather's indices stay int64) — read from the schema, not a table.
3. Nodes whose only float input is a constant (a Constant, an initializer, a
   data-movement op over them) and ``Cast(to=float)`` nodes take the precision
   their consumers want, so constants shared with fp32 nodes (LayerNorm
   weights behind an Identity alias) are not rounded for nothing.
4. Float initializers and Constant values used only by fp16 nodes are stored
   as fp16, values beyond ±65504 clipped (and counted); one used by both
   kinds stays fp32 and a Cast feeds its fp16 users.
5. One Cast per (tensor, target type) at every fp32/fp16 boundary, uniquely
   named and emitted right before its first consumer: the graph is SSA and
   topologically ordered by construction.
6. Graph inputs and outputs keep float32: an output produced in fp16 gets a
   final Cast back under its own name (so do tensors a subgraph reads).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper, shape_inference

FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16
#: the largest finite float16 (65504); larger finite weights are clipped to it
FP16_MAX = float(np.finfo(np.float16).max)

#: Ops run in fp16: matrix products, elementwise arithmetic and activations,
#: and exact data movement. Normalisations, softmax and reductions are absent on
#: purpose (they overflow or lose precision in half); so is anything unlisted.
FP16_OPS = frozenset(
    {
        "Abs",
        "Add",
        "Clip",
        "Concat",
        "Conv",
        "Div",
        "Erf",
        "Expand",
        "Flatten",
        "Gather",
        "Gelu",
        "Gemm",
        "HardSigmoid",
        "HardSwish",
        "Identity",
        "MatMul",
        "Max",
        "MaxPool",
        "Min",
        "Mul",
        "Neg",
        "Pad",
        "Relu",
        "Reshape",
        "Sigmoid",
        "Slice",
        "Split",
        "Squeeze",
        "Sub",
        "Tanh",
        "Tile",
        "Transpose",
        "Unsqueeze",
        "Where",
    }
)
#: Exact in any precision: fed only by constants, they follow their consumers (rule 3).
DATA_MOVEMENT_OPS = frozenset(
    {
        "Concat",
        "Expand",
        "Flatten",
        "Gather",
        "Identity",
        "Reshape",
        "Slice",
        "Split",
        "Squeeze",
        "Tile",
        "Transpose",
        "Unsqueeze",
    }
)
#: Ops that read any input type (Shape and Size only look at the shape, Cast converts): they need no boundary Cast.
ANY_INPUT_OPS = frozenset({"Cast", "Shape", "Size"})
_DEFAULT_DOMAINS = ("", "ai.onnx")
_SUBGRAPH_ATTRS = (AttributeProto.GRAPH, AttributeProto.GRAPHS)


@dataclass(frozen=True)
class Fp16Stats:
    """What the conversion did, for the manifest (counts over the main graph)."""

    nodes_fp16: int  #: nodes that compute in fp16 (Constant nodes not counted)
    nodes_fp32: int  #: nodes that still compute on float32 tensors (blocked, unlisted, shape reads excluded)
    casts_inserted: int
    initializers_fp16: int
    constants_fp16: int  #: Constant nodes whose float value became fp16
    clipped_tensors: int  #: initializers and Constant values with a finite value beyond ±65504
    clipped_values: int  #: how many values were clipped, over all of them

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def to_fp16_array(values: np.ndarray) -> tuple[np.ndarray, int]:
    """float32 array → float16, finite values clipped to ±65504 (not inf); returns the array and the clip count.

    Infinities stay infinite (an additive -inf mask means the same in both precisions); NaN stays NaN.
    """
    finite = np.isfinite(values)
    beyond = finite & (np.abs(values) > FP16_MAX)
    clipped = np.where(beyond, np.sign(values) * FP16_MAX, values)
    return clipped.astype(np.float16), int(beyond.sum())


def convert_to_fp16(
    model: onnx.ModelProto, blocked_ops: Iterable[str] = (), blocked_nodes: Iterable[str] = ()
) -> tuple[onnx.ModelProto, Fp16Stats]:
    """A float16 copy of ``model`` (the argument is not modified) and what was converted.

    ``blocked_ops`` (op types) and ``blocked_nodes`` (node names) stay float32 whatever their op.
    """
    return _Converter(model, frozenset(blocked_ops), frozenset(n for n in blocked_nodes if n)).run()


def _opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in _DEFAULT_DOMAINS:
            return entry.version
    raise ValueError("the model imports no default-domain opset; cannot read its operator schemas")


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Every tensor's element type as shape inference knows it; 0 (undefined) omitted.

    Inference runs on a skeleton whose weights are typed inputs, not data: types
    never depend on weight values, and a multi-GB model is not copied for it.
    """
    graph = model.graph
    input_names = {i.name for i in graph.input}
    weights = [
        helper.make_tensor_value_info(i.name, i.data_type, list(i.dims))
        for i in graph.initializer
        if i.name not in input_names
    ]
    skeleton = helper.make_model(
        helper.make_graph(graph.node, graph.name, [*graph.input, *weights], graph.output, value_info=graph.value_info),
        opset_imports=model.opset_import,
        ir_version=model.ir_version,
    )
    skeleton.functions.extend(model.functions)
    inferred = shape_inference.infer_shapes(skeleton).graph
    types: dict[str, int] = {}
    for vi in (*inferred.input, *inferred.value_info, *inferred.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    return types


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in _SUBGRAPH_ATTRS for a in node.attribute)


def _subgraph_reads(graph: onnx.GraphProto) -> set[str]:
    """Names read by nodes inside subgraphs (If/Loop/Scan bodies), at any depth: they must keep their type."""
    names: set[str] = set()
    for node in graph.node:
        for attr in node.attribute:
            bodies = [attr.g] if attr.type == AttributeProto.GRAPH else list(attr.graphs)
            for body in bodies if attr.type in _SUBGRAPH_ATTRS else []:
                names.update(i for n in body.node for i in n.input if i)
                names.update(_subgraph_reads(body))
    return names


def _constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    """A Constant node's float32 value, or None when it holds anything else."""
    for attr in node.attribute:
        if attr.name == "value" and attr.t.data_type == FLOAT:
            return numpy_helper.to_array(attr.t)
        if attr.name == "value_float":
            return np.array(attr.f, dtype=np.float32)
        if attr.name == "value_floats":
            return np.array(list(attr.floats), dtype=np.float32)
    return None


@dataclass(frozen=True)
class _FloatSlots:
    """The inputs and outputs of one node bound to a float32 type parameter of its schema."""

    inputs: frozenset[int]
    outputs: frozenset[int]


def _formal(params, index: int):
    if index < len(params):
        return params[index]
    if params and params[-1].option == onnx.defs.OpSchema.FormalParameterOption.Variadic:
        return params[-1]
    return None


class _Converter:
    def __init__(self, model: onnx.ModelProto, blocked_ops: frozenset[str], blocked_nodes: frozenset[str]) -> None:
        self.source = model
        self.opset = _opset(model)
        self.blocked_ops = blocked_ops
        self.blocked_nodes = blocked_nodes
        self.types = _elem_types(model)
        self.nodes = list(model.graph.node)
        graph = model.graph
        self.graph_inputs = {i.name for i in graph.input}
        self.pinned = {o.name for o in graph.output} | _subgraph_reads(graph)
        self.consumers: dict[str, list[tuple[int, int]]] = {}
        for idx, node in enumerate(self.nodes):
            for slot, name in enumerate(node.input):
                if name:
                    self.consumers.setdefault(name, []).append((idx, slot))
        self.slots = [self._float_slots(n) for n in self.nodes]
        self.fp16 = [False] * len(self.nodes)
        self.used = {n.name for n in self.nodes} | set(self.types) | self.graph_inputs | self.pinned
        self.used.update(x for n in self.nodes for x in (*n.input, *n.output))

    # ------------------------------------------------------------------ decisions
    def _float_slots(self, node: onnx.NodeProto) -> _FloatSlots | None:
        """The float slots when ``node`` may run in fp16 (rule 2 without the block lists), else None."""
        if node.op_type == "Constant":
            return _FloatSlots(frozenset(), frozenset({0})) if _constant_value(node) is not None else None
        if node.op_type == "Cast":
            to = next((a.i for a in node.attribute if a.name == "to"), None)
            return _FloatSlots(frozenset(), frozenset({0})) if to == FLOAT else None
        if node.op_type not in FP16_OPS or node.domain not in _DEFAULT_DOMAINS or _has_subgraph(node):
            return None
        try:
            schema = onnx.defs.get_schema(node.op_type, self.opset, "")
        except onnx.defs.SchemaError:
            return None
        allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
        bound: dict[str, set[int]] = {}
        for names, params in ((node.input, schema.inputs), (node.output, schema.outputs)):
            for i, name in enumerate(names):
                formal = _formal(params, i)
                if name and formal is not None and formal.type_str in allowed and name in self.types:
                    bound.setdefault(formal.type_str, set()).add(self.types[name])
        float_params = {p for p, kinds in bound.items() if FLOAT in kinds}
        if not float_params:
            return None
        if any(bound[p] != {FLOAT} or "tensor(float16)" not in allowed[p] for p in float_params):
            return None

        def bound_to_float(names, params) -> frozenset[int]:
            return frozenset(
                i
                for i, name in enumerate(names)
                if name and (f := _formal(params, i)) is not None and f.type_str in float_params
            )

        return _FloatSlots(bound_to_float(node.input, schema.inputs), bound_to_float(node.output, schema.outputs))

    def _required(self, idx: int, slot: int) -> int | None:
        """The type node ``idx`` needs on input ``slot`` once decided: FLOAT16, FLOAT, or None (takes either)."""
        node = self.nodes[idx]
        if node.op_type in ANY_INPUT_OPS:
            return None
        slots = self.slots[idx]
        if self.fp16[idx] and slots is not None and slot in slots.inputs:
            return FLOAT16
        return FLOAT if self.types.get(node.input[slot]) == FLOAT else None

    def _wanted(self, name: str) -> set[int | None]:
        wants = {self._required(idx, slot) for idx, slot in self.consumers.get(name, [])}
        return wants | ({FLOAT} if name in self.pinned else set())

    def _follows(self, idx: int, constant: set[str]) -> bool:
        """Rule 3: does node ``idx`` take its consumers' precision?"""
        node, slots = self.nodes[idx], self.slots[idx]
        if node.op_type in ("Constant", "Cast"):
            return True
        return node.op_type in DATA_MOVEMENT_OPS and all(node.input[i] in constant for i in slots.inputs)

    def _decide(self) -> None:
        constant = {i.name for i in self.source.graph.initializer} - self.graph_inputs
        for node in self.nodes:
            inputs = [i for i in node.input if i]
            folds = bool(inputs) and all(i in constant for i in inputs) and not _has_subgraph(node)
            if node.op_type == "Constant" or folds:
                constant.update(o for o in node.output if o)
        for idx in reversed(range(len(self.nodes))):  # consumers come later in a topologically sorted graph
            node, slots = self.nodes[idx], self.slots[idx]
            if slots is None or node.op_type in self.blocked_ops or node.name in self.blocked_nodes:
                continue
            if self._follows(idx, constant):
                wants = set().union(*(self._wanted(node.output[j]) for j in slots.outputs))
                self.fp16[idx] = FLOAT16 in wants and FLOAT not in wants
            else:
                self.fp16[idx] = True

    # ------------------------------------------------------------------ rewriting
    def _unique(self, base: str) -> str:
        name, k = base, 1
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name

    def run(self) -> tuple[onnx.ModelProto, Fp16Stats]:
        self._decide()
        out = onnx.ModelProto()
        out.CopyFrom(self.source)
        graph = out.graph
        del graph.value_info[:]
        del graph.node[:]
        #: (tensor name, element type) → the name that holds it at that type (the tensor or a Cast's output)
        self.available = {(i.name, self.types[i.name]): i.name for i in graph.input if i.name in self.types}
        self.emitted: list[onnx.NodeProto] = []
        self.counts = dict.fromkeys((f.name for f in fields(Fp16Stats)), 0)
        self._convert_initializers(graph)
        for idx, node in enumerate(self.nodes):
            self._rewrite_node(idx, node)
        graph.node.extend(self.emitted)
        return shape_inference.infer_shapes(out), Fp16Stats(**self.counts)

    def _clipped(self, n: int) -> None:
        self.counts["clipped_tensors"] += int(n > 0)
        self.counts["clipped_values"] += n

    def _convert_initializers(self, graph: onnx.GraphProto) -> None:
        """Rule 4: a float32 initializer only fp16 nodes read (and not a graph input) becomes fp16."""
        for init in graph.initializer:
            if init.data_type != FLOAT:
                continue
            wants = self._wanted(init.name)
            if FLOAT16 in wants and FLOAT not in wants and init.name not in self.graph_inputs:
                half, n = to_fp16_array(numpy_helper.to_array(init))
                init.CopyFrom(numpy_helper.from_array(half, init.name))
                self.available[(init.name, FLOAT16)] = init.name
                self.counts["initializers_fp16"] += 1
                self._clipped(n)
            else:
                self.available[(init.name, FLOAT)] = init.name

    def _view(self, name: str, want: int) -> str:
        """The name of tensor ``name`` at type ``want``: itself, or a Cast emitted once and reused."""
        if (name, want) in self.available:
            return self.available[(name, want)]
        source = self.available.get((name, FLOAT if want == FLOAT16 else FLOAT16))
        if source is None:  # a tensor of unknown type: left as it is
            return name
        cast = self._unique(f"{name}_{'fp16' if want == FLOAT16 else 'fp32'}")
        self.emitted.append(helper.make_node("Cast", [source], [cast], name=self._unique(f"{cast}_cast"), to=want))
        self.available[(name, want)] = cast
        self.counts["casts_inserted"] += 1
        return cast

    def _rewrite_node(self, idx: int, node: onnx.NodeProto) -> None:
        """Emit node ``idx`` at its decided precision: inputs cast as it needs them, a Constant's value or a Cast's
        target halved, its outputs made available (a pinned fp16 output cast back to its float32 name)."""
        new = onnx.NodeProto()
        new.CopyFrom(node)
        for slot, name in enumerate(node.input):
            if not name:
                continue
            want = self._required(idx, slot)
            if want is not None:  # else it reads the tensor at whatever type it has
                new.input[slot] = self._view(name, want)
        half = self.fp16[idx]
        if half and node.op_type == "Constant":
            value, n = to_fp16_array(_constant_value(node))
            del new.attribute[:]
            new.attribute.append(helper.make_attribute("value", numpy_helper.from_array(value, "value")))
            self.counts["constants_fp16"] += 1
            self._clipped(n)
        elif half and node.op_type == "Cast":
            for attr in new.attribute:
                if attr.name == "to":
                    attr.i = FLOAT16
        if node.op_type != "Constant":
            touches_fp32 = any(self.types.get(x) == FLOAT for x in (*node.input, *node.output) if x)
            self.counts["nodes_fp16"] += half
            self.counts["nodes_fp32"] += not half and touches_fp32 and node.op_type not in ("Shape", "Size")
        self.emitted.append(new)
        self._bind_outputs(idx, node, new, half)

    def _bind_outputs(self, idx: int, node: onnx.NodeProto, new: onnx.NodeProto, half: bool) -> None:
        float_outs = self.slots[idx].outputs if half else set()
        for j, name in enumerate(node.output):
            if not name:
                continue
            kind = FLOAT16 if j in float_outs else self.types.get(name)
            if kind == FLOAT16 and name in self.pinned:  # rule 6: keep the float32 name and type
                new.output[j] = renamed = self._unique(f"{name}_fp16")
                self.available[(name, FLOAT16)] = renamed
                self.emitted.append(
                    helper.make_node("Cast", [renamed], [name], name=self._unique(f"{name}_cast"), to=FLOAT)
                )
                self.counts["casts_inserted"] += 1
                self.available[(name, FLOAT)] = name
            elif kind in (FLOAT, FLOAT16):
                self.available[(name, kind)] = name
