"""ringfold's int8 writer (exporter/qdq.py) held to onnxruntime's quantizer, which it replaced.

exporter/qdq.py claims to write what ``quantize_static`` (QDQ, per-channel, symmetric int8, only the
weight-bearing MatMul/Gemm/Conv) and ``quantize_dynamic`` (int8 per-channel MatMul) wrote, for the same
activation ranges: the same nodes quantized, the same int8 weights and scales, the same outputs. These tests
run both on the tiny random-weights bundle's graph and compare them; the calibration batches are random
normal pixels (preprocessed-range floats), not images.

Measured here: int8 weights and every scale identical (0 of 893,184 static and 794,880 dynamic weight values
differ), logits within 2.4e-7 (static) and 6e-8 (dynamic). Where the graphs differ, by design, the tests pin
it: onnxruntime also points value-free readers (Shape) at the DequantizeLinear and makes a quantized graph
output (the embedding) the fake-quantized tensor; ringfold leaves both float.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from ringfold.exporter.calibration import activation_ranges
from ringfold.exporter.int8 import basic_optimised
from ringfold.exporter.qdq import INT8_LIMIT, quantize_weight, weight_sites, write_dynamic_int8, write_static_qdq
from ringfold.exporter.quant import weight_bearing_nodes

#: rounding ties (x/scale exactly on .5 in one writer's arithmetic, not the other's) may flip one int8 step;
#: at most this fraction of a graph's weight values may differ, by exactly 1 (none do on the tiny model)
TIE_FRACTION = 1e-4
#: max |logit difference| between ringfold's and onnxruntime's static graph, as a fraction of max |logit|
STATIC_OUTPUT_RTOL = 1e-5
#: the same for the dynamic graphs (they compute the same integer products)
DYNAMIC_OUTPUT_ATOL = 1e-5
#: max |x| on the int8-dynamic graph vs the fp32 graph, relative: measured up to 0.74 % (median 0.08 %) on the tiny
#: random-weights model over two random batches
CALIBRATION_RTOL = 0.03


@pytest.fixture(scope="module")
def basic(tiny_bundle, tmp_path_factory) -> Path:
    """The bundle's fp32 graph after onnxruntime's basic optimisation: what both writers start from."""
    return basic_optimised(tiny_bundle / "model.onnx", tmp_path_factory.mktemp("qdq") / "basic.onnx")


@pytest.fixture(scope="module")
def batches(tiny_bundle) -> list[np.ndarray]:
    height, width = json.loads((tiny_bundle / "preprocess.json").read_text())["size"]
    rng = np.random.default_rng(0)
    return [rng.normal(0.0, 1.0, (4, 3, height, width)).astype(np.float32) for _ in range(2)]


def input_name(path: Path) -> str:
    return onnx.load(str(path), load_external_data=False).graph.input[0].name


class Reader:
    """onnxruntime CalibrationDataReader over fixed batches."""

    def __init__(self, name: str, batches: list[np.ndarray]) -> None:
        self._items = iter([{name: b} for b in batches])

    def get_next(self):
        return next(self._items, None)


@pytest.fixture(scope="module")
def ort_static(basic, batches) -> onnx.ModelProto:
    """onnxruntime's quantize_static with the settings the export used until exporter/qdq.py replaced it."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    dst = basic.with_name("ort_static.onnx")
    quantize_static(
        str(basic),
        str(dst),
        Reader(input_name(basic), batches),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Gemm", "Conv"],
        nodes_to_quantize=weight_bearing_nodes(onnx.load(str(basic))),
        extra_options={
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "QuantizeBias": False,
            "OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm", "Conv"],
        },
    )
    return onnx.load(str(dst))


def initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def activation_scales(model: onnx.ModelProto) -> dict[str, float]:
    """Each quantized activation (named by its ``<tensor>_scale`` initializer) → its scale.

    Not the QuantizeLinear's input: onnxruntime renames a graph output it quantizes (``<tensor>_QuantizeLinear_Input``).
    """
    values = initializers(model)
    return {
        n.input[1].removesuffix("_scale"): float(values[n.input[1]])
        for n in model.graph.node
        if n.op_type == "QuantizeLinear"
    }


def dq_readers(model: onnx.ModelProto) -> set[str]:
    """Names of the nodes that read a DequantizeLinear output: the quantized nodes."""
    dq_outputs = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    return {n.name for n in model.graph.node if n.op_type != "QuantizeLinear" and dq_outputs & set(n.input)}


def weight_dqs(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    """The DequantizeLinear nodes of int8 initializers (the weights), by the int8 initializer's name."""
    names = {i.name for i in model.graph.initializer}
    return {n.input[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in names}


@pytest.fixture(scope="module")
def ours_static(basic, ort_static) -> onnx.ModelProto:
    """ringfold's writer on a fresh load of the same graph, with the ranges onnxruntime calibrated."""
    ranges = {name: scale * INT8_LIMIT for name, scale in activation_scales(ort_static).items()}
    model = onnx.load(str(basic))
    write_static_qdq(model, ranges)
    return model


def compare_int8(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray], names: list[str]) -> tuple[int, int]:
    """(values off by one step, values in all) over ``names``; fails on any larger difference."""
    off = total = 0
    for name in names:
        assert ours[name].dtype == theirs[name].dtype == np.int8, name
        assert ours[name].shape == theirs[name].shape, name
        diff = np.abs(ours[name].astype(np.int32) - theirs[name].astype(np.int32))
        assert diff.max() <= 1, f"{name}: int8 weights differ by {diff.max()}"
        off, total = off + int((diff == 1).sum()), total + diff.size
    return off, total


def readers(model: onnx.ModelProto, tensors: set[str]) -> dict[str, str]:
    """Name → op type of the nodes that read any of ``tensors``."""
    return {n.name: n.op_type for n in model.graph.node if tensors & set(n.input)}


def producer(model: onnx.ModelProto, tensor: str) -> str:
    return next(n.op_type for n in model.graph.node if tensor in n.output)


def test_static_quantizes_the_same_tensors_and_nodes_as_onnxruntime(ours_static, ort_static, basic):
    theirs = activation_scales(ort_static)
    assert set(activation_scales(ours_static)) == set(theirs)
    assert len(theirs) == 19  # the patch Conv's image, 4 per block x 4 blocks, the projection, the head
    fp32 = onnx.load(str(basic))
    quantized = set(weight_bearing_nodes(fp32))
    assert dq_readers(ours_static) == quantized
    # onnxruntime points every reader of a quantized tensor at its DequantizeLinear, ringfold only the quantized
    # ones: the extra readers are the attention blocks' Shape of the ln_1 output, which reads no values
    extra = {name: op for name, op in readers(fp32, set(theirs)).items() if name not in quantized}
    assert extra and set(extra.values()) == {"Shape"}
    assert dq_readers(ort_static) == quantized | set(extra)
    count = Counter(n.op_type for n in ours_static.graph.node)
    assert count == Counter(n.op_type for n in ort_static.graph.node)
    assert (count["QuantizeLinear"], count["DequantizeLinear"]) == (19, 19 + 27)


def test_static_graph_outputs_differ_only_in_the_quantized_embedding(ours_static, ort_static):
    """A graph output that a quantized node reads (the embedding, read by the head): onnxruntime makes the
    output itself the DequantizeLinear's (fake-quantized to int8), ringfold keeps the output float."""
    outputs = [o.name for o in ort_static.graph.output]
    assert outputs == [o.name for o in ours_static.graph.output]
    differ = [o for o in outputs if producer(ort_static, o) != producer(ours_static, o)]
    assert differ == ["embedding"]
    assert (producer(ort_static, "embedding"), producer(ours_static, "embedding")) == ("DequantizeLinear", "Div")


def test_static_weights_and_scales_equal_onnxruntimes(ours_static, ort_static):
    ours, theirs = initializers(ours_static), initializers(ort_static)
    ours_dq, theirs_dq = weight_dqs(ours_static), weight_dqs(ort_static)
    assert set(ours_dq) == set(theirs_dq) and len(ours_dq) == 27
    for name, node in theirs_dq.items():
        axis = {a.name: a.i for a in node.attribute}.get("axis", 1)
        assert {a.name: a.i for a in ours_dq[name].attribute}.get("axis", 1) == axis, name
        np.testing.assert_allclose(ours[node.input[1]], theirs[node.input[1]], rtol=1e-6, err_msg=name)
        assert not ours[node.input[2]].any() and ours[node.input[2]].dtype == theirs[node.input[2]].dtype
    off, total = compare_int8(ours, theirs, sorted(theirs_dq))
    assert off <= TIE_FRACTION * total, f"{off} of {total} int8 weights differ by one step"
    for tensor, scale in activation_scales(ort_static).items():
        np.testing.assert_allclose(activation_scales(ours_static)[tensor], scale, rtol=1e-6, err_msg=tensor)


def run(model: onnx.ModelProto, name: str, batch: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {name: batch})


def test_static_outputs_match_onnxruntimes(ours_static, ort_static, basic, batches):
    """Logits equal to within float noise; the embedding is onnxruntime's rounded to its int8 step (see above)."""
    name = input_name(basic)
    (logits, embedding), (ort_logits, ort_embedding) = (run(m, name, batches[1]) for m in (ours_static, ort_static))
    assert np.abs(logits - ort_logits).max() <= STATIC_OUTPUT_RTOL * np.abs(ort_logits).max()
    step = activation_scales(ort_static)["embedding"]
    fake_quantized = np.clip(np.round(embedding / step), -INT8_LIMIT, INT8_LIMIT) * np.float32(step)
    np.testing.assert_allclose(ort_embedding, fake_quantized, rtol=0, atol=1e-3 * step)
    assert np.abs(embedding - ort_embedding).max() <= step / 2 * (1 + 1e-3)


def test_dynamic_matches_onnxruntimes_quantize_dynamic(basic, batches):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dst = basic.with_name("ort_dynamic.onnx")
    quantize_dynamic(
        str(basic), str(dst), weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul", "Gemm"]
    )
    theirs = onnx.load(str(dst))
    ours = onnx.load(str(basic))
    write_dynamic_int8(ours)
    counts = [Counter(n.op_type for n in m.graph.node) for m in (ours, theirs)]
    for op in ("MatMulInteger", "DynamicQuantizeLinear", "MatMul", "Cast"):
        assert counts[0][op] == counts[1][op], op
    assert (counts[0]["MatMulInteger"], counts[0]["DynamicQuantizeLinear"]) == (26, 18)
    weights = sorted(n.input[1] for n in theirs.graph.node if n.op_type == "MatMulInteger")
    assert weights == sorted(n.input[1] for n in ours.graph.node if n.op_type == "MatMulInteger")
    off, total = compare_int8(initializers(ours), initializers(theirs), weights)
    assert off <= TIE_FRACTION * total, f"{off} of {total} int8 weights differ by one step"
    name = input_name(basic)
    for a, b in zip(run(ours, name, batches[0]), run(theirs, name, batches[0]), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=DYNAMIC_OUTPUT_ATOL)


@pytest.mark.parametrize(("shape", "axis"), [((6, 3, 4, 4), 0), ((16, 5), 1)])
def test_quantize_weight_per_channel(shape, axis):
    weight = np.random.default_rng(1).normal(0.0, 0.2, shape).astype(np.float32)
    zero = [slice(None)] * len(shape)
    zero[axis] = 2
    weight[tuple(zero)] = 0
    quantized = quantize_weight(weight, axis)
    others = tuple(i for i in range(len(shape)) if i != axis)
    absmax = np.abs(weight).max(axis=others)
    expected = np.where(absmax > 0, absmax / np.float32(127), 1).astype(np.float32)
    np.testing.assert_allclose(quantized.scale, expected, rtol=1e-7)
    assert quantized.scale[2] == 1 and quantized.axis == axis
    assert quantized.values.dtype == np.int8 and quantized.values.shape == shape
    assert not quantized.values[tuple(zero)].any()
    assert np.abs(quantized.values).max() == 127
    scale = np.expand_dims(quantized.scale, others)
    assert np.all(np.abs(quantized.values * scale - weight) <= scale / 2 * (1 + 1e-6))


def test_static_missing_range_raises_before_touching_the_graph(basic):
    model = onnx.load(str(basic))
    ranges = {site.activation: 1.0 for site in weight_sites(model)}
    missing = sorted(ranges)[0]
    del ranges[missing]
    nodes, weights = len(model.graph.node), len(model.graph.initializer)
    with pytest.raises(KeyError, match="no calibrated range for 1 tensor"):
        write_static_qdq(model, ranges)
    assert (len(model.graph.node), len(model.graph.initializer)) == (nodes, weights)


def test_ranges_on_the_dynamic_graph_match_fp32s(basic, batches, ort_static):
    model = onnx.load(str(basic))
    tensors = sorted({site.activation for site in weight_sites(model)})
    write_dynamic_int8(model)
    dynamic = basic.with_name("calibration_dynamic.onnx")
    onnx.save(model, str(dynamic))
    fp32 = activation_ranges(basic, tensors, iter(batches))
    on_dynamic = activation_ranges(dynamic, tensors, iter(batches))
    assert set(fp32) == set(on_dynamic) == set(tensors)
    for name in tensors:
        assert on_dynamic[name] == pytest.approx(fp32[name], rel=CALIBRATION_RTOL), name
    image = input_name(basic)
    assert fp32[image] == on_dynamic[image] == max(float(np.abs(b).max()) for b in batches)
    # and the fp32 measurement is onnxruntime's own minmax calibration (the scales quantize_static wrote)
    for name, scale in activation_scales(ort_static).items():
        assert fp32[name] / INT8_LIMIT == pytest.approx(scale, rel=1e-5), name
