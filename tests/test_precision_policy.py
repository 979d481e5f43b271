"""The fp32-kept op set is defined once (runtime/graph/precision_policy.py) and the fp16 export, the TensorRT build
(``--fp32-layers``, the trtexec line) and the lint all keep the same nodes fp32."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

from ringfold.exporter import precision as exporter_precision
from ringfold.runtime.backends.tensorrt import plan as trt_plan
from ringfold.runtime.backends.tensorrt.lint import lint_model
from ringfold.runtime.backends.tensorrt.lint.checks import precision as lint_precision
from ringfold.runtime.graph import precision_policy
from ringfold.runtime.graph.precision_policy import (
    FP32_OPS,
    FP32_TRT_LAYER_TYPES,
    final_normalisation_nodes,
    fp32_layer_names,
    fp32_node_names,
)

#: nodes of the graph below the policy keeps fp32, in graph order
KEPT = ["ln", "softmax", "pow", "reduce_sum", "sqrt", "reduce_mean", "reduce_l2", "normalise", "head"]
HALF = ["mm", "scale", "residual"]


def test_the_three_users_read_the_same_object():
    assert exporter_precision.FP16_BLOCKED_OPS is FP32_OPS
    assert trt_plan.Fp32Layers().op_types is FP32_OPS
    assert trt_plan.Fp32Layers().layer_types is FP32_TRT_LAYER_TYPES
    assert lint_precision.FP32_OPS is FP32_OPS
    assert exporter_precision.final_normalisation_nodes is final_normalisation_nodes
    assert set(FP32_OPS) == {"LayerNormalization", "Softmax", "ReduceL2", "ReduceMean", "ReduceSum", "Pow", "Sqrt"}


def _vit_like(path):
    """LayerNorm → MatMul → Softmax, a hand-written norm (Pow/ReduceSum/Sqrt), a mean, then L2-normalise + head."""
    d = 4
    inits = [
        numpy_helper.from_array(np.ones(d, np.float32), "ln.w"),
        numpy_helper.from_array(np.zeros(d, np.float32), "ln.b"),
        numpy_helper.from_array(np.eye(d, dtype=np.float32) * 0.5, "w"),
        numpy_helper.from_array(np.array(2.0, np.float32), "two"),
        numpy_helper.from_array(np.array([-1], np.int64), "last"),
        numpy_helper.from_array(np.linspace(-1, 1, d * 3, dtype=np.float32).reshape(d, 3), "head.w"),
    ]
    nodes = [
        helper.make_node("LayerNormalization", ["x", "ln.w", "ln.b"], ["h0"], name="ln", axis=-1),
        helper.make_node("MatMul", ["h0", "w"], ["h1"], name="mm"),
        helper.make_node("Softmax", ["h1"], ["h2"], name="softmax", axis=-1),
        helper.make_node("Pow", ["h2", "two"], ["h3"], name="pow"),
        helper.make_node("ReduceSum", ["h3", "last"], ["h4"], name="reduce_sum", keepdims=1),
        helper.make_node("Sqrt", ["h4"], ["h5"], name="sqrt"),
        helper.make_node("Div", ["h2", "h5"], ["h6"], name="scale"),
        helper.make_node("ReduceMean", ["h6", "last"], ["h7"], name="reduce_mean", keepdims=1),
        helper.make_node("Add", ["h6", "h7"], ["h8"], name="residual"),
        helper.make_node("ReduceL2", ["h8", "last"], ["n"], name="reduce_l2", keepdims=1),
        helper.make_node("Div", ["h8", "n"], ["embedding"], name="normalise"),
        helper.make_node("MatMul", ["embedding", "head.w"], ["logits"], name="head"),
    ]
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "vit_like",
        [helper.make_tensor_value_info("x", f32, ["batch", d])],
        [
            helper.make_tensor_value_info("logits", f32, ["batch", 3]),
            helper.make_tensor_value_info("embedding", f32, ["batch", d]),
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def test_policy_picks_the_ops_and_the_final_normalisation(tmp_path):
    model = onnx.load(str(_vit_like(tmp_path / "m.onnx")))
    assert fp32_node_names(model) == KEPT
    assert final_normalisation_nodes(model) == ["head", "normalise", "reduce_l2"]


def test_tensorrt_pins_exactly_the_policy_nodes(tmp_path):
    assert fp32_layer_names(_vit_like(tmp_path / "m.onnx")) == KEPT


def test_fp16_export_keeps_exactly_the_policy_nodes_fp32(tmp_path):
    src = _vit_like(tmp_path / "m.onnx")
    dst = tmp_path / "m_fp16.onnx"
    info = exporter_precision.convert_fp16(src, dst)
    assert info["fp32_ops"] == list(FP32_OPS)
    model = shape_inference.infer_shapes(onnx.load(str(dst)))
    types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.output]}
    types |= {t.name: t.data_type for t in model.graph.initializer}
    types |= {v.name: v.type.tensor_type.elem_type for v in model.graph.input}
    compute = {}
    for node in model.graph.node:
        if node.name in KEPT + HALF:
            floats = {types[x] for x in (*node.input, *node.output) if x and types.get(x) in (1, 10)}
            compute[node.name] = floats
    assert {n for n, t in compute.items() if t == {TensorProto.FLOAT}} == set(KEPT)
    assert {n for n, t in compute.items() if t == {TensorProto.FLOAT16}} == set(HALF)


def test_lint_counts_the_policy_nodes_in_an_fp16_variant(tmp_path):
    path = _vit_like(tmp_path / "m.onnx")
    (note,) = [f for f in lint_model(path, "trt-10", "fp16") if f.code == "fp16-layernorm"]
    assert note.severity == "info" and note.node == "ln" and "--fp32-layers" in note.fix
    assert re.match(rf"{len(KEPT)} node\(s\) ringfold keeps in fp32 \(", note.message)
    assert "the final L2-normalisation and head" in note.message
    assert [f for f in lint_model(path, "trt-10", "fp32") if f.code == "fp16-layernorm"] == []


def test_final_normalisation_stops_where_the_graph_quantizes():
    """An int8 QDQ graph quantizes its head: the walk keeps the normalisation, not the Q/DQ'd MatMul after it."""
    nodes = [
        helper.make_node("ReduceL2", ["e"], ["n"], name="reduce_l2"),
        helper.make_node("Div", ["e", "n"], ["emb"], name="normalise"),
        helper.make_node("QuantizeLinear", ["emb", "s", "z"], ["q"], name="emb_q"),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"], name="emb_dq"),
        helper.make_node("MatMul", ["dq", "w"], ["logits"], name="head"),
    ]
    model = helper.make_model(helper.make_graph(nodes, "g", [], []))
    assert final_normalisation_nodes(model) == ["normalise", "reduce_l2"]
    assert fp32_node_names(model) == ["reduce_l2", "normalise"]


def test_policy_module_imports_neither_onnx_nor_torch():
    """At its top: only ``fp32_layer_names``, which reads a file, imports onnx, inside it (None without onnx)."""
    source = Path(precision_policy.__file__).read_text()
    assert not re.search(r"^(import|from)\s+(onnx|torch)\b", source, re.M)
    assert not re.search(r"^\s*(import|from)\s+torch\b", source, re.M)
    assert re.findall(r"^\s+(?:import|from)\s+onnx\b.*$", source, re.M) == ["        import onnx"]


def test_the_precision_names_and_their_properties_are_one_table():
    """File, suffix, backends, TensorRT or not, tolerances: each reader looks the precision up in the table."""
    from ringfold.runtime.backends.tensorrt.lint.compare import POLYGRAPHY_TOLERANCES
    from ringfold.runtime.bundle.precisions import ENGINE_PRECISIONS, PRECISIONS, TABLE, numerics
    from ringfold.runtime.parity.metrics import DEFAULT_TOLERANCES, tolerance_for

    assert PRECISIONS == ("fp32", "fp16", "int8", "int8-dynamic", "int8-fp16")
    assert ENGINE_PRECISIONS == ("fp32", "fp16", "int8")
    assert exporter_precision.VARIANT_FILES == {
        "fp32": "model.onnx",
        "fp16": "model_fp16.onnx",
        "int8": "model_int8.onnx",
        "int8-dynamic": "model_int8_dynamic.onnx",
        "int8-fp16": "model_int8_fp16.onnx",
    }
    # int8-fp16 is TensorRT's int8 source (strongly typed), meant for TensorRT only, judged by its own tolerance
    assert TABLE["int8"].engine_sources[0] == "int8-fp16" and not TABLE["int8-fp16"].tensorrt
    assert TABLE["int8-fp16"].targets == ("tensorrt",) and TABLE["int8"].targets == ("onnxruntime", "tensorrt")
    assert numerics("int8-fp16") == "int8-fp16" and tolerance_for("int8-fp16").expected_logit_error == 0.11
    assert TABLE["int8-dynamic"].backends == ("onnxruntime",) and TABLE["int8-dynamic"].cpu_only
    assert not TABLE["int8-dynamic"].tensorrt and all(TABLE[p].tensorrt for p in ENGINE_PRECISIONS)
    assert tolerance_for("int8-dynamic") == DEFAULT_TOLERANCES["int8"] and numerics("fp16") == "fp16"
    assert set(POLYGRAPHY_TOLERANCES) == {numerics(p) for p in PRECISIONS}

    class Variants:
        variants = dict.fromkeys(PRECISIONS)

    assert trt_plan.engine_sources(Variants, "fp16") == list(TABLE["fp16"].engine_sources) == ["fp32", "fp16"]
