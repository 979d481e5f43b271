"""ringfold's own fp16 conversion (exporter/fp16.py), variant failures and the converters' log capture."""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from ringfold.cli import main
from ringfold.exporter import precision as precision_mod
from ringfold.exporter.fp16 import FP16_MAX, convert_to_fp16
from ringfold.exporter.library_log import captured_library_log, normalise
from ringfold.exporter.precision import (
    FP16_BLOCKED_OPS,
    FP16_ORT_OPTIMIZATION,
    PrecisionRequest,
    convert_fp16,
    variant_messages,
    variant_report,
    write_variants,
)
from ringfold.runtime.bundle.loader import load_bundle
from ringfold.runtime.graph.precision_policy import final_normalisation_nodes
from ringfold.runtime.parity.metrics import compare, tolerance_for

F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16


# ----------------------------------------------------------------------------- helpers
def _types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*g.input, *g.value_info, *g.output)}
    types.update({i.name: i.data_type for i in g.initializer})
    return types


def _assert_ssa_and_casts_unique(model: onnx.ModelProto) -> None:
    produced = Counter(o for n in model.graph.node for o in n.output if o)
    assert max(produced.values()) == 1, [k for k, v in produced.items() if v > 1]
    assert not produced.keys() & {i.name for i in model.graph.initializer}
    casts = Counter((n.input[0], n.attribute[0].i) for n in model.graph.node if n.op_type == "Cast")
    assert max(casts.values()) == 1  # one Cast per (tensor, target type)


def _model(nodes, inputs, outputs, initializers=(), opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8  # what onnx 1.16 / onnxruntime 1.17 read
    onnx.checker.check_model(model, full_check=True)
    return model


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _vi(name: str, shape, kind: int = F32):
    return helper.make_tensor_value_info(name, kind, shape)


# ----------------------------------------------------------------------------- the tiny exported model
@pytest.fixture(scope="module")
def tiny_fp16(tiny_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("fp16") / "model_fp16.onnx"
    info = convert_fp16(tiny_bundle / "model.onnx", out)
    return onnx.load(str(tiny_bundle / "model.onnx")), onnx.load(str(out)), info, out


def test_tiny_model_is_ssa_checked_and_counted(tiny_fp16):
    src, model, info, path = tiny_fp16
    onnx.checker.check_model(str(path), full_check=True)
    _assert_ssa_and_casts_unique(model)
    assert info["tool"] == "ringfold.exporter.fp16" and info["ort_optimization"] == FP16_ORT_OPTIMIZATION
    casts_before = sum(n.op_type == "Cast" for n in src.graph.node)
    casts_after = sum(n.op_type == "Cast" for n in model.graph.node)
    assert info["casts_inserted"] == casts_after - casts_before > 0
    assert len(model.graph.node) == len(src.graph.node) + info["casts_inserted"]
    halves = sum(i.data_type == F16 for i in model.graph.initializer)
    assert info["initializers_fp16"] == halves > 0
    assert info["nodes_fp16"] > info["nodes_fp32"] > 0
    assert info["clipped_tensors"] == info["clipped_values"] == 0  # trained weights are far below 65504


def test_tiny_model_keeps_io_blocked_ops_and_head_fp32_and_matmuls_fp16(tiny_fp16):
    src, model, _, _ = tiny_fp16
    types = _types(model)
    assert [types[i.name] for i in model.graph.input] == [F32]
    assert [types[o.name] for o in model.graph.output] == [F32, F32]
    assert [o.name for o in model.graph.output] == [o.name for o in src.graph.output]
    head = set(final_normalisation_nodes(src))
    assert head and "ReduceL2" in {n.op_type for n in src.graph.node if n.name in head}
    checked = Counter()
    for node in model.graph.node:
        floats = {types[x] for x in (*node.input, *node.output) if x and types.get(x) in (F32, F16)}
        if node.op_type in FP16_BLOCKED_OPS or node.name in head:
            assert floats == {F32}, (node.name, floats)
            checked["fp32"] += 1
        elif node.op_type in ("MatMul", "Conv", "Gemm"):
            assert floats == {F16}, (node.name, floats)  # no fp32 compute in the heavy ops
            checked[node.op_type] += 1
    n_blocked = sum(n.op_type in FP16_BLOCKED_OPS or n.name in head for n in src.graph.node)
    assert checked["fp32"] == n_blocked
    assert checked["Conv"] == 1 and checked["MatMul"] + checked["Gemm"] == sum(
        n.op_type in ("MatMul", "Gemm") and n.name not in head for n in src.graph.node
    )


def test_tiny_model_parity_within_the_fp16_gate(tiny_bundle, tiny_fp16):
    _, _, info, path = tiny_fp16
    ref = load_bundle(tiny_bundle).reference()
    out = precision_mod.run_variant(path, ref.pixel_values, info["ort_optimization"])
    comp = compare("fp16", "fp16", out["logits"], out["embedding"], ref.logits, ref.embedding)
    tol = tolerance_for("fp16")
    assert comp.cosine_min >= tol.min_cosine and comp.top1_agreement >= tol.min_top1
    assert comp.max_abs_logit < 0.05  # measured ~2e-3 on this model (the old converter: ~4e-3)


# ----------------------------------------------------------------------------- small graphs
def test_initializer_shared_by_blocked_and_fp16_node_stays_fp32_with_one_cast():
    w = numpy_helper.from_array(np.linspace(0.5, 2.0, 4, dtype=np.float32), "w")
    b = numpy_helper.from_array(np.zeros(4, np.float32), "b")
    nodes = [
        helper.make_node("Mul", ["x", "w"], ["scaled"], name="scale"),
        helper.make_node("Add", ["scaled", "w"], ["shifted"], name="shift"),
        helper.make_node("LayerNormalization", ["shifted", "w", "b"], ["y"], name="norm", axis=-1),
    ]
    model = _model(nodes, [_vi("x", [2, 4])], [_vi("y", [2, 4])], [w, b])
    converted, stats = convert_to_fp16(model, FP16_BLOCKED_OPS)
    onnx.checker.check_model(converted, full_check=True)
    _assert_ssa_and_casts_unique(converted)
    inits = {i.name: i.data_type for i in converted.graph.initializer}
    assert inits == {"w": F32, "b": F32}
    by_name = {n.name: n for n in converted.graph.node}
    assert list(by_name["norm"].input[1:]) == ["w", "b"]  # the blocked node reads the float32 originals
    w16 = by_name["scale"].input[1]
    assert by_name["shift"].input[1] == w16 != "w"
    (cast,) = [n for n in converted.graph.node if n.output[0] == w16]
    assert cast.op_type == "Cast" and cast.input[0] == "w" and cast.attribute[0].i == F16
    # x → fp16 for Mul, Add's result → fp32 for the LayerNorm, w → fp16 once
    assert stats.casts_inserted == 3 and stats.nodes_fp16 == 2 and stats.nodes_fp32 == 1
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    (want,), (got,) = _run(model, {"x": x}), _run(converted, {"x": x})
    assert got.dtype == np.float32 and np.abs(got - want).max() < 1e-2


def test_values_beyond_fp16_range_are_clipped_and_counted():
    big = numpy_helper.from_array(np.array([1e5, -7e4, 1.0, -np.inf], np.float32), "big")
    nodes = [
        helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.array([2e6], np.float32))),
        helper.make_node("Add", ["x", "big"], ["s"], name="add"),
        helper.make_node("Min", ["s", "c"], ["y"], name="min"),
    ]
    model = _model(nodes, [_vi("x", [4])], [_vi("y", [4])], [big])
    converted, stats = convert_to_fp16(model)
    onnx.checker.check_model(converted, full_check=True)
    assert (stats.clipped_tensors, stats.clipped_values) == (2, 3)  # big: 2 finite values, c: 1; -inf is no clip
    assert (stats.initializers_fp16, stats.constants_fp16) == (1, 1)
    (init,) = converted.graph.initializer
    np.testing.assert_array_equal(numpy_helper.to_array(init), np.array([FP16_MAX, -FP16_MAX, 1.0, -np.inf], "f2"))
    const = next(n for n in converted.graph.node if n.op_type == "Constant")
    np.testing.assert_array_equal(numpy_helper.to_array(const.attribute[0].t), np.array([FP16_MAX], "f2"))
    (got,) = _run(converted, {"x": np.zeros(4, np.float32)})
    np.testing.assert_array_equal(got, np.array([FP16_MAX, -FP16_MAX, 1.0, -np.inf], np.float32))


def test_output_computed_in_fp16_is_cast_back_under_its_name_and_int_inputs_stay_int():
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    shape = numpy_helper.from_array(np.array([4, 2], np.int64), "shape")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("Relu", ["h"], ["act"], name="relu"),
        helper.make_node("Reshape", ["h", "shape"], ["r"], name="reshape"),
        helper.make_node("Gather", ["r", "idx"], ["y"], name="gather", axis=0),
    ]
    inputs = [_vi("x", [2, 4]), _vi("idx", [1], TensorProto.INT64)]
    model = _model(nodes, inputs, [_vi("h", [2, 4]), _vi("act", [2, 4]), _vi("y", [1, 2])], [w, shape])
    converted, stats = convert_to_fp16(model)
    onnx.checker.check_model(converted, full_check=True)
    _assert_ssa_and_casts_unique(converted)
    types = _types(converted)
    assert [types[o.name] for o in converted.graph.output] == [F32, F32, F32]
    assert types["shape"] == types["idx"] == TensorProto.INT64  # Reshape's shape and Gather's indices
    producers = {o: n for n in converted.graph.node for o in n.output}
    for name in ("h", "act", "y"):
        assert producers[name].op_type == "Cast" and types[producers[name].input[0]] == F16
    assert stats.nodes_fp16 == 4 and stats.casts_inserted == 4  # x in, h / act / y out
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    want, got = _run(model, {"x": x, "idx": np.array([1])}), _run(converted, {"x": x, "idx": np.array([1])})
    for a, b in zip(want, got, strict=True):
        np.testing.assert_array_equal(a, b)  # small integers are exact in fp16


def test_unlisted_ops_and_blocked_node_names_stay_fp32():
    nodes = [
        helper.make_node("Exp", ["x"], ["e"], name="exp"),  # not on the fp16 list
        helper.make_node("Mul", ["e", "x"], ["m"], name="keep_me"),
        helper.make_node("Mul", ["m", "x"], ["y"], name="half"),
    ]
    model = _model(nodes, [_vi("x", [3])], [_vi("y", [3])])
    converted, stats = convert_to_fp16(model, blocked_nodes=["keep_me"])
    types = _types(converted)
    assert types["e"] == types["m"] == F32
    assert (stats.nodes_fp16, stats.nodes_fp32) == (1, 2)


def test_tensor_read_inside_a_subgraph_keeps_its_float32_name():
    branch = helper.make_graph([helper.make_node("Identity", ["h"], ["t"])], "then", [], [_vi("t", [2])])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [], [_vi("e", [2])])
    nodes = [
        helper.make_node("Mul", ["x", "x"], ["h"], name="square"),
        helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=branch, else_branch=other),
    ]
    model = _model(nodes, [_vi("x", [2]), _vi("cond", [], TensorProto.BOOL)], [_vi("y", [2])])
    converted, stats = convert_to_fp16(model)
    onnx.checker.check_model(converted, full_check=True)
    _assert_ssa_and_casts_unique(converted)
    producers = {o: n for n in converted.graph.node for o in n.output}
    assert producers["h"].op_type == "Cast" and producers["h"].attribute[0].i == F32
    assert (stats.nodes_fp16, stats.casts_inserted) == (1, 2)  # Mul in fp16; x in, h back out
    x = np.array([3.0, -2.0], np.float32)
    for cond in (True, False):
        feeds = {"x": x, "cond": np.array(cond)}
        np.testing.assert_array_equal(_run(converted, feeds)[0], _run(model, feeds)[0])


# ----------------------------------------------------------------------------- variants: failure and logs
def test_failing_variant_is_left_out_with_one_line_error_and_the_rest_is_written(
    tiny_run, tmp_path, monkeypatch, capsys
):
    def broken(src, dst):
        dst.write_bytes(b"half-written")
        raise onnx.checker.ValidationError("Graph must be in single static assignment (SSA) form\nsecond line")

    monkeypatch.setattr(precision_mod, "convert_fp16", broken)
    out = tmp_path / "bundle"
    argv = ["export", str(tiny_run), "--out", str(out), "--precision", "fp16", "int8-dynamic", "--ref-count", "4"]
    assert main([*argv, "--quiet"]) == 2
    captured = capsys.readouterr()
    assert captured.out.startswith("bundle written to")
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("ringfold export: error: fp16: conversion failed: ValidationError: Graph must be in")
    assert "second line" in line and "written without it (has fp32, int8-dynamic)" in line
    assert "--precision fp32 int8-dynamic" in line
    bundle = load_bundle(out)  # the bundle is whole and verifies
    assert set(bundle.variants) == {"fp32", "int8-dynamic"}
    assert not (out / "model_fp16.onnx").exists()
    failed = bundle.manifest.raw["export"]["failed_variants"]
    assert list(failed) == ["fp16"] and failed["fp16"].startswith("conversion failed: ValidationError")
    assert "**fp16 not written**" in (out / "export_report.md").read_text()


def _tiny_gemm_model(path):
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    b = numpy_helper.from_array(np.ones(3, np.float32), "b")
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="/blk/Gemm")]
    onnx.save(_model(nodes, [_vi("x", [1, 4])], [_vi("y", [1, 3])], [w, b]), str(path))


# the block counts warnings as the default filter shows them; PYTHONWARNINGS=ignore (or -W error) in the
# user's environment must not decide what it sees
@pytest.mark.filterwarnings("default")
def test_quantizer_log_is_captured_and_summarised_not_printed(tmp_path, capfd, caplog):
    from onnxruntime.quantization import quantize_dynamic

    _tiny_gemm_model(tmp_path / "m.onnx")
    caplog.set_level(logging.WARNING)
    handlers = list(logging.getLogger().handlers)
    with captured_library_log() as log:
        # not pre-processed: every onnxruntime in the range logs "Please consider pre-processing…"
        quantize_dynamic(str(tmp_path / "m.onnx"), str(tmp_path / "q.onnx"), op_types_to_quantize=["Gemm"])
        logging.getLogger("onnxruntime.quantization.x").warning("Bias of Gemm node '/a/Gemm' is not constant.")
        logging.warning("Bias of Gemm node '/b/Gemm' is not constant.")
        warnings.warn("`mapping.X` is deprecated", UserWarning, stacklevel=1)
        print("Collecting tensor data and making histogram ...")
    out, err = capfd.readouterr()
    assert out == err == ""
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    summary = log.summary()
    assert summary["warnings"]["WARNING: Bias of Gemm node '…' is not constant."] == 2
    assert summary["warnings"]["UserWarning: '…' is deprecated"] == 1
    assert any(k.startswith("WARNING: Please consider") and "pre-process" in k for k in summary["warnings"])
    assert summary["printed"] == {"Collecting tensor data and making histogram ...": 1}
    assert logging.getLogger().handlers == handlers and not caplog.handler.filters  # all restored
    logging.getLogger("onnxruntime").warning("after the block")
    assert [r.getMessage() for r in caplog.records] == ["after the block"]


def test_write_variants_puts_the_converter_log_in_the_entry(tiny_bundle, tmp_path, monkeypatch, capfd):
    """What a converting library logs (root logger, as onnxruntime.quantization does) lands in the entry."""
    shutil.copy(tiny_bundle / "model.onnx", tmp_path / "model.onnx")
    convert = precision_mod.convert_fp16

    def noisy(src, dst):
        for node in ("/visual/a/Gemm", "/visual/b/Gemm"):
            logging.warning(f"Please consider to run pre-processing before quantization: node '{node}'")
        return convert(src, dst)

    monkeypatch.setattr(precision_mod, "convert_fp16", noisy)
    variants, failed = write_variants(tmp_path, PrecisionRequest(("fp32", "fp16", "int8-dynamic")), None)
    assert failed == {} and capfd.readouterr() == ("", "")
    logged = variants["fp16"]["library_log"]["warnings"]
    assert logged == {"WARNING: Please consider to run pre-processing before quantization: node '…'": 2}
    assert "library_log" not in variants["int8-dynamic"]  # ringfold's own writer logs nothing
    errors, notes = variant_messages({"variants": variants, "export": {}})
    assert errors == [] and len(notes) == 1 and notes[0].startswith("fp16: the converter logged 2 warning(s)")
    report = variant_report({"variants": variants})
    assert report.count("\n- ") == len(logged) and "fp16 converter warning ×2" in report
    json.dumps(variants)  # manifest-ready


def test_normalise_strips_names_and_keeps_one_line():
    text = "Bias of Gemm node '/visual/blocks.0/Gemm' is not constant.\n  details"
    assert normalise(text) == "Bias of Gemm node '…' is not constant."
    assert len(normalise("x" * 500)) == 200
