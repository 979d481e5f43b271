"""The ``int8-fp16`` variant: the int8 Q/DQ model with every part that is not quantized computed in fp16.

Why a variant of its own: TensorRT ≥ 10 builds an int8 engine *strongly typed* from the Q/DQ
graph, and a strongly typed build keeps every non-quantized op in the ONNX's own type. From the
CPU's int8 model (float parts fp32) that is an int8 + fp32 engine, often slower than the fp16
one; ModelOpt's int8 recipe casts the float parts to fp16 for that reason. The CPU backends want
fp32 there (ONNX Runtime's CPU provider has few fp16 kernels), so ``int8`` keeps fp32 and this
file, ``model_int8_fp16.onnx``, is the one TensorRT builds from (the precision table says so).

How: the same fp16 rewrite as the fp16 variant (:func:`ringfold.exporter.fp16.convert_to_fp16`
with the policy's fp32 islands — LayerNorm, Softmax, the reductions and the final L2-normalisation
— from :mod:`ringfold.runtime.graph.precision_policy`), on the int8 model lifted to opset 19,
the first in which QuantizeLinear/DequantizeLinear take fp16 scales. The rewrite leaves Q/DQ in
fp32 behind Casts; :func:`halve_qdq` then gives each its fp16 scale and drops those Casts, so
DequantizeLinear feeds the fp16 MatMul directly — the pattern TensorRT fuses into an int8 kernel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper, version_converter

from ringfold.atomic import atomic_path
from ringfold.runtime.graph.precision_policy import FP32_OPS, final_normalisation_nodes

from .fp16 import convert_to_fp16

#: the ONNX Runtime graph optimisation level the parity run uses: onnxruntime 1.32's CPU provider fuses a
#: DequantizeLinear with fp16 scales into its int8 MatMul wrongly at "extended" (logits off by 1.6 on the tiny
#: model, all zeros on some rows); "basic" runs the graph as written (0.06 from the int8 model)
ORT_OPTIMIZATION = "basic"
#: QuantizeLinear/DequantizeLinear accept fp16 scales from this opset on
QDQ_FP16_OPSET = 19
FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16
#: ops that read only a tensor's shape: they take the fp16 tensor as well as the fp32 one
SHAPE_OPS = ("Shape", "Size")


def _opset(model: onnx.ModelProto) -> int:
    return next(e.version for e in model.opset_import if e.domain in ("", "ai.onnx"))


def _is_cast_to(node: onnx.NodeProto, kind: int) -> bool:
    return node.op_type == "Cast" and any(a.name == "to" and a.i == kind for a in node.attribute)


class _Halver:
    """Rewires Cast-wrapped Q/DQ nodes to fp16 (see :func:`halve_qdq`)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.graph = model.graph
        self.inits = {i.name: i for i in self.graph.initializer}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        self.producer = {o: n for n in self.graph.node for o in n.output}
        for node in self.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.outputs = {o.name for o in self.graph.output}
        self.dropped: set[int] = set()
        self.twins: dict[int, onnx.NodeProto] = {}
        self.halved = 0

    def _half_scale(self, node: onnx.NodeProto) -> bool:
        """Point ``node``'s scale at an fp16 copy of its fp32 initializer (False: not an fp32 initializer)."""
        scale = self.inits.get(node.input[1])
        if scale is None or scale.data_type not in (FLOAT, FLOAT16):
            return False
        if scale.data_type == FLOAT:
            name = f"{scale.name}_fp16"
            if name not in self.inits:
                half = numpy_helper.to_array(scale).astype(np.float16)
                self.inits[name] = numpy_helper.from_array(half, name)
                self.graph.initializer.append(self.inits[name])
            node.input[1] = name
        return True

    def dequantize(self, node: onnx.NodeProto) -> None:
        """DQ → Cast(fp16) → users becomes DQ(fp16 scale) → users, when every user of the DQ is such a Cast
        (or reads only its shape)."""
        users = self.consumers.get(node.output[0], [])
        casts = [u for u in users if _is_cast_to(u, FLOAT16)]
        shape_reads = [u for u in users if u.op_type in SHAPE_OPS]
        if node.output[0] in self.outputs and casts:  # a graph output stays fp32: a twin DQ feeds the fp16 users
            node = self._twin(node)
            shape_reads = []
        elif not casts or len(casts) + len(shape_reads) != len(users):
            return
        if not self._half_scale(node):
            return
        old, new = node.output[0], casts[0].output[0]
        node.output[0] = new
        for reader in shape_reads + [r for c in casts[1:] for r in self.consumers.get(c.output[0], [])]:
            reader.input[:] = [new if i in (old, *(c.output[0] for c in casts)) else i for i in reader.input]
        self.dropped.update(id(u) for u in casts)
        self.halved += 1

    def _twin(self, node: onnx.NodeProto) -> onnx.NodeProto:
        """A copy of ``node`` (named apart), emitted right after it; the caller renames its output."""
        twin = onnx.NodeProto()
        twin.CopyFrom(node)
        twin.name = f"{node.name}_fp16"
        self.twins[id(node)] = twin
        return twin

    def quantize(self, node: onnx.NodeProto) -> None:
        """fp16 x → Cast(fp32) → Q becomes fp16 x → Q(fp16 scale); the Cast goes when nothing else reads it."""
        cast = self.producer.get(node.input[0])
        if cast is None or not _is_cast_to(cast, FLOAT) or not self._half_scale(node):
            return
        node.input[0] = cast.input[0]
        readers = [n for n in self.consumers.get(cast.output[0], []) if n is not node]
        self.consumers[cast.output[0]] = readers
        if not readers and cast.output[0] not in self.outputs:
            self.dropped.add(id(cast))
        self.halved += 1

    def finish(self) -> None:
        kept = [m for n in self.graph.node if id(n) not in self.dropped for m in (n, self.twins.get(id(n))) if m]
        del self.graph.node[:]
        self.graph.node.extend(kept)
        used = {i for n in kept for i in n.input}
        fresh = [i for i in self.graph.initializer if i.name in used or i.name in self.outputs]
        del self.graph.initializer[:]
        self.graph.initializer.extend(fresh)


def halve_qdq(model: onnx.ModelProto) -> int:
    """Give the Q/DQ nodes the fp16 rewrite left behind Casts fp16 scales and drop the Casts; returns how many."""
    halver = _Halver(model)
    for node in list(model.graph.node):
        if node.op_type == "DequantizeLinear":
            halver.dequantize(node)
        elif node.op_type == "QuantizeLinear":
            halver.quantize(node)
    halver.finish()
    return halver.halved


def int8_to_fp16(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The int8 Q/DQ ``model`` with its float parts in fp16 (policy islands kept fp32) and what was done."""
    if _opset(model) < QDQ_FP16_OPSET:
        model = version_converter.convert_version(model, QDQ_FP16_OPSET)
    blocked = final_normalisation_nodes(model)
    converted, stats = convert_to_fp16(model, FP32_OPS, blocked)
    halved = halve_qdq(converted)
    converted = onnx.shape_inference.infer_shapes(converted, strict_mode=True)
    return converted, {"opset": QDQ_FP16_OPSET, "qdq_fp16": halved, "fp32_nodes": len(blocked), **stats.to_dict()}


def write_int8_fp16(int8_path: Path, dst: Path) -> dict[str, Any]:
    """``model_int8_fp16.onnx`` from the int8 variant at ``int8_path``; the saved file passes the full onnx check."""
    converted, stats = int8_to_fp16(onnx.load(str(int8_path)))
    with atomic_path(dst) as tmp:
        onnx.save(converted, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)
    return {
        "precision": "int8-fp16",
        "format": "QDQ",
        "float_parts": "fp16 (LayerNorm, Softmax, reductions and the final L2-normalisation fp32)",
        "fp32_ops": list(FP32_OPS),
        "target": "TensorRT strongly typed build (ONNX Runtime CPU runs it for parity only)",
        "ort_optimization": ORT_OPTIMIZATION,
        **stats,
        "tool": "ringfold.exporter.quant_fp16",
    }
