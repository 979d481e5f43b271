"""The int8 graphs of the transformer recipe, written in one vectorised pass: static Q/DQ and dynamic int8.

Why not onnxruntime's ``quantize_static`` / ``quantize_dynamic`` any more: for the placement this recipe
uses (only the weight-bearing MatMul/Gemm/Conv; see :mod:`ringfold.exporter.quant`) they write the same
graph as this module — Q/DQ pairs with int8 symmetric scales, zero points 0, per-channel weights — but
quantize each output channel in a Python loop and re-run shape inference on every load: on ViT-B/16 that was
6–9 s per variant of a 30 s export budget, here well under a second (``benchmarks/bench_export.py``).
``tests/test_qdq.py`` holds the two to each other: same nodes quantized, same int8 weights and scales as
onnxruntime's for the same activation ranges, outputs within one int8 step.

Conventions (onnxruntime's, so its CPU fusions — QDQ → ``MatMulIntegerToFloat``; DynamicQuantizeLinear +
MatMulInteger + Cast + Mul → ``DynamicQuantizeMatMul`` — and TensorRT's explicit quantization both apply):

- weights int8 symmetric per output channel, range ±127, scale ``max|w| / 127`` (1 where a channel is all 0);
- static activations int8 symmetric per tensor from the calibrated ``max|x|``, one Q/DQ pair per tensor
  shared by every quantized reader (a LayerNorm output feeding Q, K and V is quantized once);
- dynamic: ``DynamicQuantizeLinear`` (uint8, scale and zero point per call) → ``MatMulInteger`` → ``Cast`` →
  ``Mul`` by ``x_scale · w_scale``; MatMul only (Conv and Gemm stay float, as onnxruntime leaves them);
- biases, outputs, LayerNorm, GELU, Softmax, residual adds and the attention core stay float.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ringfold.runtime.graph.head_rewrite import quantize_per_column

from .quant import constant_tensors, weight_bearing_nodes

#: int8 symmetric range: onnxruntime's (and TensorRT's) ±127, so that −x quantizes to −q
INT8_LIMIT = 127


@dataclass
class QuantizedWeight:
    """One weight initializer as int8 per output channel: the values, the scales and the channel axis."""

    values: np.ndarray
    scale: np.ndarray
    axis: int


def quantize_weight(weight: np.ndarray, axis: int) -> QuantizedWeight:
    """``weight`` int8 symmetric per channel along ``axis`` (vectorised; see the module's conventions)."""
    moved = np.moveaxis(weight.astype(np.float32), axis, -1)
    values, scale = quantize_per_column(moved.reshape(-1, moved.shape[-1]))
    return QuantizedWeight(np.moveaxis(values.reshape(moved.shape), -1, axis), scale, axis)


def activation_scale(absmax: float) -> np.float32:
    """The static int8 scale for a tensor whose calibrated ``max|x|`` is ``absmax`` (1 when it is 0)."""
    return np.float32(absmax / INT8_LIMIT) if absmax > 0 else np.float32(1)


@dataclass
class WeightSite:
    """A weight-bearing node's activation input, its weight initializer and the weight's channel axis."""

    node: onnx.NodeProto
    activation: str
    weight: str
    axis: int


def weight_sites(model: onnx.ModelProto, op_types: tuple[str, ...] = ("MatMul", "Gemm", "Conv")) -> list[WeightSite]:
    """The recipe's quantization sites: nodes whose weight is an initializer and whose other input is not.

    The channel axis is the weight's output dimension: MatMul [K, N] → 1, Gemm → 0 with ``transB`` else 1,
    Conv [O, I, kh, kw] → 0. A node whose weight is computed (not an initializer) stays float.
    """
    weights = constant_tensors(model)
    initializers = {i.name: i for i in model.graph.initializer}
    wanted = set(weight_bearing_nodes(model))
    sites = []
    for node in model.graph.node:
        if node.name not in wanted or node.op_type not in op_types:
            continue
        activation, weight = node.input[0], node.input[1]
        if activation in weights or weight not in initializers or len(initializers[weight].dims) < 2:
            continue
        sites.append(WeightSite(node, activation, weight, _channel_axis(node)))
    return sites


def _channel_axis(node: onnx.NodeProto) -> int:
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        trans_b = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return 1


@dataclass
class _Rewrite:
    """New nodes to put before a node (by node id), new initializers, and the weights no longer read."""

    model: onnx.ModelProto
    before: dict[int, list[onnx.NodeProto]] = field(default_factory=dict)
    initializers: list[TensorProto] = field(default_factory=list)
    replaced_weights: set[str] = field(default_factory=set)
    dropped: set[int] = field(default_factory=set)

    def add(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def finish(self) -> onnx.ModelProto:
        """The graph with the new nodes in topological order and the float weights that are no longer read gone."""
        graph = self.model.graph
        nodes = [
            new
            for node in graph.node
            for new in (*self.before.get(id(node), ()), *(() if id(node) in self.dropped else (node,)))
        ]
        del graph.node[:]
        graph.node.extend(nodes)
        read = {i for n in nodes for i in n.input}
        kept = [i for i in graph.initializer if i.name not in self.replaced_weights or i.name in read]
        del graph.initializer[:]
        graph.initializer.extend([*kept, *self.initializers])
        return self.model


def _quantized_weights(model: onnx.ModelProto, sites: list[WeightSite], cache: dict) -> dict[str, QuantizedWeight]:
    """Each site's weight quantized once (``cache`` shares them between the static and the dynamic graph)."""
    initializers = {i.name: i for i in model.graph.initializer}
    out = {}
    for site in sites:
        key = (site.weight, site.axis)
        if key not in cache:
            cache[key] = quantize_weight(numpy_helper.to_array(initializers[site.weight]), site.axis)
        out[site.weight] = cache[key]
    return out


def write_static_qdq(model: onnx.ModelProto, ranges: dict[str, float], cache: dict | None = None) -> dict[str, int]:
    """Insert the recipe's Q/DQ into ``model`` in place; ``ranges``: calibrated ``max|x|`` per activation.

    Returns counts for the manifest. Every site's activation must have a range (a missing one is a bug in the
    caller's calibration, raised as KeyError before the graph is touched).
    """
    sites = weight_sites(model)
    missing = sorted({s.activation for s in sites} - set(ranges))
    if missing:
        raise KeyError(f"no calibrated range for {len(missing)} tensor(s), first {missing[0]!r}")
    weights = _quantized_weights(model, sites, {} if cache is None else cache)
    rewrite = _Rewrite(model)
    done: dict[str, str] = {}
    for site in sites:
        if site.activation not in done:
            done[site.activation] = _static_activation(rewrite, site, ranges[site.activation])
        if site.weight not in done:
            done[site.weight] = _static_weight(rewrite, site.weight, weights[site.weight])
        site.node.input[0], site.node.input[1] = done[site.activation], done[site.weight]
    rewrite.finish()
    return {"quantized_nodes": len(sites), "quantized_activations": len({s.activation for s in sites})}


def _static_activation(rewrite: _Rewrite, site: WeightSite, absmax: float) -> str:
    """Q → DQ on ``site.activation`` just before its first quantized reader; returns the DQ output."""
    name = site.activation
    scale = rewrite.add(f"{name}_scale", np.array(activation_scale(absmax), np.float32))
    zero = rewrite.add(f"{name}_zero_point", np.array(0, np.int8))
    q, dq = f"{name}_QuantizeLinear_Output", f"{name}_DequantizeLinear_Output"
    rewrite.before.setdefault(id(site.node), []).extend(
        [
            helper.make_node("QuantizeLinear", [name, scale, zero], [q], name=f"{name}_QuantizeLinear"),
            helper.make_node("DequantizeLinear", [q, scale, zero], [dq], name=f"{name}_DequantizeLinear"),
        ]
    )
    return dq


def _static_weight(rewrite: _Rewrite, name: str, weight: QuantizedWeight) -> str:
    """An int8 initializer and its per-channel DequantizeLinear, put first in the graph; returns the DQ output."""
    values = rewrite.add(f"{name}_quantized", weight.values)
    scale = rewrite.add(f"{name}_scale", weight.scale)
    zero = rewrite.add(f"{name}_zero_point", np.zeros(weight.scale.shape, np.int8))
    out = f"{name}_DequantizeLinear_Output"
    first = rewrite.model.graph.node[0]
    rewrite.before.setdefault(id(first), []).append(
        helper.make_node(
            "DequantizeLinear", [values, scale, zero], [out], name=f"{name}_DequantizeLinear", axis=weight.axis
        )
    )
    rewrite.replaced_weights.add(name)
    return out


def write_dynamic_int8(model: onnx.ModelProto, cache: dict | None = None) -> dict[str, int]:
    """Rewrite ``model``'s weight-bearing MatMuls in place into onnxruntime's dynamic int8 pattern."""
    sites = weight_sites(model, ("MatMul",))
    weights = _quantized_weights(model, sites, {} if cache is None else cache)
    rewrite = _Rewrite(model)
    quantized: dict[str, tuple[str, str, str]] = {}
    weight_names: dict[str, tuple[str, str, str]] = {}
    for site in sites:
        if site.activation not in quantized:
            quantized[site.activation] = _dynamic_activation(rewrite, site)
        if site.weight not in weight_names:
            weight_names[site.weight] = _dynamic_weight(rewrite, site.weight, weights[site.weight])
        _dynamic_matmul(rewrite, site, quantized[site.activation], weight_names[site.weight])
        rewrite.dropped.add(id(site.node))  # the float MatMul: its output is now written by the scale Mul
    rewrite.finish()
    return {"quantized_nodes": len(sites), "quantized_activations": len(quantized)}


def _dynamic_activation(rewrite: _Rewrite, site: WeightSite) -> tuple[str, str, str]:
    name = site.activation
    outs = (f"{name}_quantized", f"{name}_scale", f"{name}_zero_point")
    node = helper.make_node("DynamicQuantizeLinear", [name], list(outs), name=f"{name}_QuantizeLinear")
    rewrite.before.setdefault(id(site.node), []).append(node)
    return outs


def _dynamic_weight(rewrite: _Rewrite, name: str, weight: QuantizedWeight) -> tuple[str, str, str]:
    rewrite.replaced_weights.add(name)
    return (
        rewrite.add(f"{name}_quantized", weight.values),
        rewrite.add(f"{name}_scale", weight.scale),
        rewrite.add(f"{name}_zero_point", np.zeros(weight.scale.shape, np.int8)),
    )


def _dynamic_matmul(rewrite: _Rewrite, site: WeightSite, x: tuple[str, str, str], w: tuple[str, str, str]) -> None:
    """MatMulInteger → Cast → Mul(x_scale · w_scale), writing the MatMul's own output name."""
    base, out = site.node.name or site.node.output[0], site.node.output[0]
    product, as_float, scales = f"{base}_quant_output", f"{base}_quant_output_float", f"{base}_quant_scales"
    rewrite.before.setdefault(id(site.node), []).extend(
        [
            helper.make_node("MatMulInteger", [x[0], w[0], x[2], w[2]], [product], name=f"{base}_quant"),
            helper.make_node("Cast", [product], [as_float], name=f"{base}_quant_cast", to=TensorProto.FLOAT),
            helper.make_node("Mul", [x[1], w[1]], [scales], name=f"{base}_quant_scales_mul"),
            helper.make_node("Mul", [as_float, scales], [out], name=f"{base}_quant_output_scale_mul"),
        ]
    )
