"""``ringfold check``: the TensorRT-compatibility lint (needs neither a GPU nor TensorRT), and its --polygraphy path."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ringfold.cli import main
from ringfold.errors import BundleError, RingfoldError
from ringfold.runtime.backends.tensorrt import lint as trt_lint
from ringfold.runtime.backends.tensorrt.lint import (
    PARSERS,
    lint_bundle,
    lint_model,
    polygraphy_compare,
    polygraphy_missing,
)
from ringfold.runtime.backends.tensorrt.lint.checks import weights as lint_weights

# ----------------------------------------------------------------------------------------- real bundles


@pytest.fixture(scope="module")
def trt_bundle(tmp_path_factory, tiny_run, demo_data):
    """A real export with every precision: fp32, fp16, int8 (static QDQ) and int8-dynamic."""
    out = tmp_path_factory.mktemp("trt_lint") / "bundle"
    argv = ["export", str(tiny_run), "--out", str(out), "--precision", "fp16", "int8", "int8-dynamic"]
    assert main([*argv, "--calib", str(demo_data / "train"), "--calib-min", "24", "--quiet"]) == 0
    return out


def _codes(findings, severity=None):
    return {f.code for f in findings if severity is None or f.severity == severity}


def _blockers(findings):
    return [f for f in findings if f.severity == "blocker"]


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_every_tensorrt_variant_of_a_real_bundle_has_no_trt10_blocker(trt_bundle, precision):
    findings = lint_bundle(trt_bundle, "trt-10", [precision])[precision]
    assert _blockers(findings) == [], [f.to_dict() for f in _blockers(findings)]
    # the dynamic batch axis is reported (it needs an optimization profile), nothing else is dynamic
    assert "dynamic-batch" in _codes(findings, "info")
    assert "dynamic-shape" not in _codes(findings)


def test_int8_variant_keeps_float_biases_and_only_parser_supported_ops(trt_bundle):
    """quantize_static must not put int32 biases under DequantizeLinear (TensorRT rejects them)."""
    findings = lint_bundle(trt_bundle, "trt-8.6", ["int8"])["int8"]
    assert "qdq-dtype" not in _codes(findings) and "unsupported-op" not in _codes(findings)
    assert _blockers(findings) == []


def test_int8_dynamic_variant_is_a_blocker_for_tensorrt(trt_bundle):
    for target in ("trt-10", "trt-8.6"):
        findings = lint_bundle(trt_bundle, target, ["int8-dynamic"])["int8-dynamic"]
        ops = [f for f in findings if f.severity == "blocker" and f.code == "unsupported-op"]
        flagged = " ".join(f.message for f in ops)
        assert "DynamicQuantizeLinear" in flagged and "MatMulInteger" in flagged
        assert all("static QDQ int8 variant" in f.fix for f in ops)
        assert all(f.node for f in ops)


def test_fp32_bundle_passes_trt86_with_at_most_int64_weight_warnings(trt_bundle):
    findings = lint_bundle(trt_bundle, "trt-8.6", ["fp32"])["fp32"]
    assert _blockers(findings) == [], [f.to_dict() for f in _blockers(findings)]
    assert _codes(findings, "warning") <= {"int64-weights"}


def test_op_table_covers_ringfold_graphs_and_quantization_ops(trt_bundle):
    seen = set()
    for precision in ("fp32", "fp16", "int8"):
        seen |= {n.op_type for n in onnx.load(str(trt_bundle / f"{_file(trt_bundle, precision)}")).graph.node}
    for target, spec in PARSERS.items():
        missing = sorted(op for op in seen if not (spec.ops.get(op) and spec.ops[op].supported))
        assert missing == [], (target, missing)
        assert spec.ops["QuantizeLinear"].supported and spec.ops["DequantizeLinear"].supported
        for op in ("DynamicQuantizeLinear", "MatMulInteger", "ConvInteger"):
            assert not spec.ops[op].supported, (target, op)
    assert PARSERS["trt-8.6"].opset_max == 17 and PARSERS["trt-10"].opset_max == 20


def _file(bundle, precision):
    return json.loads((bundle / "manifest.json").read_text())["variants"][precision]["file"]


# ---------------------------------------------------------------------------------- hand-made graphs
def _float_io(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _save(tmp_path, nodes, inputs, outputs, initializers=(), opset=17, extra_opsets=(), name="model.onnx"):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    opsets = [helper.make_opsetid("", opset), *[helper.make_opsetid(d, v) for d, v in extra_opsets]]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _relu_model(tmp_path, shape=("batch", 3, 8, 8), opset=17):
    node = helper.make_node("Relu", ["image"], ["out"], name="relu")
    return _save(tmp_path, [node], [_float_io("image", list(shape))], [_float_io("out", list(shape))], opset=opset)


def test_a_plain_graph_is_clean_on_both_targets(tmp_path):
    path = _relu_model(tmp_path)
    for target in ("trt-8.6", "trt-10"):
        findings = lint_model(path, target)
        assert [(f.severity, f.code, f.node) for f in findings] == [("info", "dynamic-batch", "image")]


@pytest.mark.parametrize("target", ["trt-8.6", "trt-10"])
def test_custom_domain_op_is_a_blocker_with_its_node_name(tmp_path, target):
    node = helper.make_node("FancyGelu", ["x"], ["y"], name="blocks.0.fancy", domain="acme.ops")
    path = _save(tmp_path, [node], [_float_io("x", [1, 4])], [_float_io("y", [1, 4])], extra_opsets=[("acme.ops", 1)])
    (f,) = _blockers(lint_model(path, target))
    assert (f.code, f.node) == ("custom-op", "blocks.0.fancy")
    assert "acme.ops::FancyGelu" in f.message and "plugin" in f.fix


@pytest.mark.parametrize("target", ["trt-8.6", "trt-10"])
def test_string_normalizer_is_unsupported(tmp_path, target):
    node = helper.make_node("StringNormalizer", ["text"], ["norm"], name="normalize_text", case_change_action="LOWER")
    s_in = helper.make_tensor_value_info("text", TensorProto.STRING, [1])
    s_out = helper.make_tensor_value_info("norm", TensorProto.STRING, [1])
    path = _save(tmp_path, [node], [s_in], [s_out])
    findings = lint_model(path, target)
    ops = [f for f in findings if f.code == "unsupported-op"]
    assert len(ops) == 1 and ops[0].severity == "blocker" and ops[0].node == "normalize_text"
    assert "StringNormalizer" in ops[0].message
    # string I/O cannot be bound either
    assert {"text", "norm"} <= {f.node for f in findings if f.code == "io-dtype" and f.severity == "blocker"}


def test_int64_graph_input_blocks_trt86_but_not_trt10(tmp_path):
    ids = helper.make_tensor_value_info("token_ids", TensorProto.INT64, ["batch", 16])
    node = helper.make_node("Cast", ["token_ids"], ["out"], name="to_float", to=TensorProto.FLOAT)
    path = _save(tmp_path, [node], [ids], [_float_io("out", ["batch", 16])])
    f86 = [f for f in lint_model(path, "trt-8.6") if f.code == "io-dtype"]
    assert [(f.severity, f.node) for f in f86] == [("blocker", "token_ids")] and "int64" in f86[0].message
    f10 = [f for f in lint_model(path, "trt-10") if f.code == "io-dtype"]
    assert [(f.severity, f.node) for f in f10] == [("info", "token_ids")]
    assert _blockers(lint_model(path, "trt-10")) == []


@pytest.mark.parametrize("target", ["trt-8.6", "trt-10"])
def test_double_initializer_and_cast_to_double_are_blockers(tmp_path, target):
    weight = numpy_helper.from_array(np.ones((4, 4), dtype=np.float64), "head.weight64")
    nodes = [
        helper.make_node("Cast", ["x"], ["x64"], name="upcast", to=TensorProto.DOUBLE),
        helper.make_node("MatMul", ["x64", "head.weight64"], ["y64"], name="head"),
        helper.make_node("Cast", ["y64"], ["y"], name="downcast", to=TensorProto.FLOAT),
    ]
    path = _save(tmp_path, nodes, [_float_io("x", [1, 4])], [_float_io("y", [1, 4])], [weight])
    doubles = {f.node: f for f in lint_model(path, target) if f.code == "double"}
    assert set(doubles) == {"head.weight64", "upcast"}
    assert all(f.severity == "blocker" and "float32" in f.fix for f in doubles.values())


@pytest.mark.parametrize("target", ["trt-8.6", "trt-10"])
def test_dynamic_spatial_dim_is_a_blocker_batch_alone_is_info(tmp_path, target):
    findings = lint_model(_relu_model(tmp_path, shape=("batch", 3, "h", 224)), target)
    (f,) = _blockers(findings)
    assert (f.code, f.node) == ("dynamic-shape", "image")
    assert "[2]" in f.message and "fixed spatial size" in f.fix
    assert "dynamic-batch" in _codes(findings, "info")


def test_opset_21_is_flagged_for_trt86_and_trt10(tmp_path):
    path = _relu_model(tmp_path, opset=21)
    (f,) = _blockers(lint_model(path, "trt-8.6"))
    assert f.code == "opset" and "21" in f.message and "7–17" in f.message
    (f,) = _blockers(lint_model(path, "trt-10"))
    assert f.code == "opset" and "9–20" in f.message
    # opset 18 is fine for TensorRT 10 only
    path18 = _relu_model(tmp_path, opset=18)
    assert _codes(lint_model(path18, "trt-8.6"), "blocker") == {"opset"}
    assert _blockers(lint_model(path18, "trt-10")) == []


def _qdq_model(tmp_path, bias_dtype, zero_point=0, name="qdq.onnx"):
    """x → Q → DQ → Gemm(W: int8 DQ, bias: float or int32 DQ)."""
    scale = numpy_helper.from_array(np.array(0.1, dtype=np.float32), "x_scale")
    zp = numpy_helper.from_array(np.array(zero_point, dtype=np.int8), "x_zp")
    w_q = numpy_helper.from_array(np.ones((4, 4), dtype=np.int8), "w_q")
    w_scale = numpy_helper.from_array(np.array(0.02, dtype=np.float32), "w_scale")
    w_zp = numpy_helper.from_array(np.array(0, dtype=np.int8), "w_zp")
    inits = [scale, zp, w_q, w_scale, w_zp]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["xq"], name="x_QuantizeLinear"),
        helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zp"], ["xd"], name="x_DequantizeLinear"),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], name="w_DequantizeLinear"),
    ]
    if bias_dtype == "int32":
        inits += [
            numpy_helper.from_array(np.arange(4, dtype=np.int32), "b_q"),
            numpy_helper.from_array(np.array(0.002, dtype=np.float32), "b_scale"),
            numpy_helper.from_array(np.array(0, dtype=np.int32), "b_zp"),
        ]
        nodes.append(helper.make_node("DequantizeLinear", ["b_q", "b_scale", "b_zp"], ["b"], name="b_DequantizeLinear"))
    else:
        inits.append(numpy_helper.from_array(np.arange(4, dtype=np.float32), "b"))
    nodes.append(helper.make_node("Gemm", ["xd", "w", "b"], ["y"], name="fc", transB=1))
    return _save(tmp_path, nodes, [_float_io("x", ["batch", 4])], [_float_io("y", ["batch", 4])], inits, name=name)


@pytest.mark.parametrize("target", ["trt-8.6", "trt-10"])
def test_static_qdq_with_float_bias_is_clean_int32_bias_and_nonzero_zero_point_block(tmp_path, target):
    assert _blockers(lint_model(_qdq_model(tmp_path, "float"), target)) == []
    (f,) = _blockers(lint_model(_qdq_model(tmp_path, "int32", name="b32.onnx"), target))
    assert (f.code, f.node) == ("qdq-dtype", "b_DequantizeLinear") and "QuantizeBias" in f.fix
    # both nodes of the asymmetric pair hit the rule: one row, first node named, the other listed
    (f,) = _blockers(lint_model(_qdq_model(tmp_path, "float", zero_point=3, name="zp.onnx"), target))
    assert (f.code, f.node) == ("qdq-zero-point", "x_QuantizeLinear") and "x_DequantizeLinear" in f.message


@pytest.mark.parametrize("target", ["trt-8.6", "trt-10"])
def test_run_time_unsqueeze_axes_and_cubic_resize_are_blockers(tmp_path, target):
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"], name="shape_of_x"),
        helper.make_node("Slice", ["shape", "zero", "one"], ["axes"], name="pick_axis"),
        helper.make_node("Unsqueeze", ["x", "axes"], ["x5"], name="unsqueeze_runtime_axes"),
        helper.make_node("Squeeze", ["x5", "axes"], ["x4"], name="squeeze_back"),
        helper.make_node("Resize", ["x4", "", "scales"], ["y"], name="upsample_cubic", mode="cubic"),
    ]
    inits = [
        numpy_helper.from_array(np.array([0], dtype=np.int64), "zero"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "one"),
        numpy_helper.from_array(np.array([1, 1, 2, 2], dtype=np.float32), "scales"),
    ]
    path = _save(tmp_path, nodes, [_float_io("x", [1, 3, 8, 8])], [_float_io("y", [1, 3, 16, 16])], inits)
    found = {(f.code, f.node) for f in _blockers(lint_model(path, target))}
    assert ("non-constant-input", "unsqueeze_runtime_axes") in found
    assert ("unsupported-attribute", "upsample_cubic") in found


def test_large_weights_warn_and_oversized_models_block(tmp_path, monkeypatch):
    weight = numpy_helper.from_array(np.zeros((64, 64), dtype=np.float32), "big.weight")
    node = helper.make_node("MatMul", ["x", "big.weight"], ["y"], name="mm")
    path = _save(tmp_path, [node], [_float_io("x", [1, 64])], [_float_io("y", [1, 64])], [weight])
    assert _codes(lint_model(path, "trt-10")) == set()
    monkeypatch.setattr(lint_weights, "LARGE_SINGLE_BYTES", 1024)
    monkeypatch.setattr(lint_weights, "LARGE_TOTAL_BYTES", 4096)
    findings = lint_model(path, "trt-10")
    assert ("warning", "large-weight", "big.weight") in {(f.severity, f.code, f.node) for f in findings}
    assert ("blocker", "model-size") in {(f.severity, f.code) for f in findings}


def test_bad_inputs_are_one_line_ringfold_errors(tmp_path, tiny_bundle):
    with pytest.raises(RingfoldError, match="unknown TensorRT target"):
        lint_model(_relu_model(tmp_path), "trt-7")
    with pytest.raises(RingfoldError, match="no such ONNX file"):
        lint_model(tmp_path / "missing.onnx", "trt-10")
    (tmp_path / "junk.onnx").write_bytes(b"\x00not a protobuf at all\xff" * 4)
    with pytest.raises(RingfoldError, match="not a readable ONNX model"):
        lint_model(tmp_path / "junk.onnx", "trt-10")
    with pytest.raises(BundleError, match="has no fp16 model"):
        lint_bundle(tiny_bundle, "trt-10", ["fp16"])


# --------------------------------------------------------------------------------------------------- CLI
def test_cli_exits_0_on_a_clean_bundle_and_prints_the_table(tiny_bundle, capsys):
    assert main(["check", str(tiny_bundle), "--target", "trt-10"]) == 0
    out = capsys.readouterr().out
    assert "fp32 (model.onnx): ok — 0 blocker(s)" in out
    assert "| severity | code | node | message | fix |" in out and "dynamic-batch" in out
    assert "text (text.onnx): ok" in out  # the text tower is one of the graphs TensorRT may get
    assert main(["check", str(tiny_bundle), "--target", "trt-8.6", "--precision", "fp32"]) == 0


def test_cli_exits_1_naming_the_graph_with_a_blocker(tiny_bundle, capsys):
    """TensorRT 8.6 has no INT64 tensors: the text tower's int64 input_ids is a blocker there, named by file."""
    rc = main(["check", str(tiny_bundle), "--target", "trt-8.6", "--json"])
    captured = capsys.readouterr()
    assert rc == 1
    doc = json.loads(captured.out)
    assert doc["passed"] is False and doc["target"] == "trt-8.6"
    assert doc["precisions"]["fp32"]["blockers"] == 0
    assert doc["precisions"]["text"]["blockers"] == 1 and doc["precisions"]["text"]["file"] == "text.onnx"
    assert {f["code"] for f in doc["precisions"]["text"]["findings"]} >= {"io-dtype"}
    assert "FAILED" in captured.err and "text (text.onnx)" in captured.err and "fp32" not in captured.err


def test_int8_dynamic_is_listed_not_for_tensorrt_and_does_not_fail(trt_bundle, capsys):
    assert main(["check", str(trt_bundle)]) == 0
    out = capsys.readouterr().out
    assert "int8-dynamic (model_int8_dynamic.onnx): not judged — ONNX Runtime CPU only, not for TensorRT" in out
    assert "MatMulInteger" not in out  # its TensorRT findings are not shown: TensorRT never gets it
    for precision in ("fp32", "fp16", "int8"):
        assert f"{precision} (model" in out and "): ok — 0 blocker(s)" in out
    assert main(["check", str(trt_bundle), "--precision", "int8-dynamic", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    row = doc["precisions"]["int8-dynamic"]
    assert doc["passed"] is True and row["for_tensorrt"] is False and row["findings"] == []
    assert row["note"] == "ONNX Runtime CPU only, not for TensorRT"


def test_cli_bad_bundle_path_and_missing_variant_exit_2(tmp_path, tiny_bundle, capsys):
    assert main(["check", str(tmp_path / "nope")]) == 2
    assert "not a bundle directory" in capsys.readouterr().err
    assert main(["check", str(tiny_bundle), "--precision", "int8"]) == 2
    assert "re-export with --precision int8" in capsys.readouterr().err


def test_cli_polygraphy_without_tensorrt_exits_2_naming_what_is_missing(tiny_bundle, capsys, monkeypatch):
    # make the imports fail the same way everywhere, even on a machine that has them
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "polygraphy", None)
    assert main(["check", str(tiny_bundle), "--polygraphy"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "\n" not in err and captured.out == ""
    assert "TensorRT" in err and "polygraphy" in err
    with pytest.raises(RingfoldError, match="TensorRT"):
        polygraphy_compare(tiny_bundle / "model.onnx")


def test_check_is_torch_free(tiny_bundle):
    code = (
        "import sys; from ringfold.cli import main; "
        f"rc = main(['check', {str(tiny_bundle)!r}, '--json']); "
        "print(rc, sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'open_clip', 'torchvision')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "0 []"


class _FakeOutputResult:
    def __init__(self, passed, max_absdiff):
        self.passed, self.max_absdiff, self.max_reldiff = passed, max_absdiff, max_absdiff

    def __bool__(self):
        return self.passed


class _FakeAccuracy(dict):
    def __bool__(self):
        return all(bool(r) for its in self.values() for it in its for r in it.values())


def _fake_polygraphy(monkeypatch, logits_diff):
    """Stand-ins for the polygraphy/tensorrt API surface polygraphy_compare uses (the glue, not TensorRT)."""
    import types

    calls = {}

    class Profile:
        def __init__(self):
            self.shapes = {}

        def add(self, name, min, opt, max):  # noqa: A002 (polygraphy's keyword names)
            self.shapes[name] = (min, opt, max)
            return self

    def create_config(**kwargs):
        calls["config"] = kwargs
        return kwargs

    class Comparator:
        @staticmethod
        def run(runners, data_loader):
            calls["feed"] = list(data_loader)
            return "run-results"

        @staticmethod
        def compare_accuracy(run_results, compare_func):
            tol = compare_func["atol"]
            outs = {
                "logits": _FakeOutputResult(logits_diff <= tol, logits_diff),
                "embedding": _FakeOutputResult(True, 1e-6),
            }
            return _FakeAccuracy({("trt", "onnxrt"): [outs]})

    compare_func = types.SimpleNamespace(simple=lambda atol, rtol: {"atol": atol, "rtol": rtol})
    mods = {
        "tensorrt": types.SimpleNamespace(__version__="10.3.0"),
        "polygraphy": types.ModuleType("polygraphy"),
        "polygraphy.backend": types.ModuleType("polygraphy.backend"),
        "polygraphy.backend.onnxrt": types.SimpleNamespace(
            OnnxrtRunner=lambda s: ("onnxrt", s), SessionFromOnnx=lambda path, providers: (path, providers)
        ),
        "polygraphy.backend.trt": types.SimpleNamespace(
            CreateConfig=create_config,
            EngineFromNetwork=lambda net, config: (net, config),
            NetworkFromOnnxPath=lambda path: path,
            Profile=Profile,
            TrtRunner=lambda e: ("trt", e),
        ),
        "polygraphy.comparator": types.SimpleNamespace(Comparator=Comparator, CompareFunc=compare_func),
    }
    for name, module in mods.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(trt_lint.compare, "polygraphy_missing", lambda: [])
    return calls


@pytest.mark.parametrize("diff,passed", [(1e-4, True), (0.5, False)])
def test_polygraphy_glue_builds_a_batch_profile_and_reads_the_verdict(tiny_bundle, monkeypatch, diff, passed):
    calls = _fake_polygraphy(monkeypatch, diff)
    pixels = np.zeros((3, 3, 64, 64), dtype=np.float32)
    result = polygraphy_compare(tiny_bundle / "model.onnx", "fp16", {"image": pixels}, max_batch=8)
    assert result.passed is passed and result.trt_version == "10.3.0"
    assert result.outputs["logits"]["max_absdiff"] == diff and result.outputs["logits"]["passed"] is passed
    assert calls["config"]["fp16"] is True and calls["config"].get("int8", False) is False
    profile = calls["config"]["profiles"][0].shapes["image"]
    assert profile == ((1, 3, 64, 64), (3, 3, 64, 64), (8, 3, 64, 64))
    assert calls["feed"][0]["image"] is pixels
    assert ("PASS" if passed else "FAIL") in result.summary()


def test_cli_polygraphy_compares_lint_clean_variants_and_fails_on_mismatch(tiny_bundle, monkeypatch, capsys):
    _fake_polygraphy(monkeypatch, 1e-4)
    assert main(["check", str(tiny_bundle), "--polygraphy"]) == 0
    assert "polygraphy fp32: PASS" in capsys.readouterr().out
    _fake_polygraphy(monkeypatch, 0.5)
    assert main(["check", str(tiny_bundle), "--polygraphy", "--json"]) == 1
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["polygraphy"]["fp32"]["passed"] is False and doc["passed"] is False
    assert "fp32 (polygraphy)" in captured.err


@pytest.mark.trt
def test_polygraphy_tensorrt_matches_onnx_runtime_on_the_fp32_bundle(tiny_bundle):
    missing = polygraphy_missing()
    if missing:
        pytest.skip(f"needs polygraphy, TensorRT and a CUDA device; missing: {', '.join(missing)}")
    from ringfold.runtime.bundle.loader import load_bundle

    bundle = load_bundle(tiny_bundle)
    pixels = bundle.reference().pixel_values
    result = polygraphy_compare(bundle.model_path("fp32"), "fp32", {"image": pixels})
    assert result.passed, result.summary()
    assert set(result.outputs) == {"logits", "embedding"}


@pytest.mark.parametrize(
    "adapter",
    [
        {"method": "adaring", "layers": "all"},
        {"method": "adaring", "layers": "all", "combinator": "gated"},
        {"method": "mma", "layers": "all", "rank": 8},
    ],
    ids=["adaring-static", "adaring-gated", "mma"],
)
def test_bundles_of_every_method_pass_the_trt10_lint(tmp_path, adapter):
    from ringfold.exporter.export import export_run
    from ringfold.runtime.bundle.loader import load_bundle
    from ringfold.trainer.run import write_synthetic_run

    run = write_synthetic_run(tmp_path / "run", "ringfold-tiny-vit", adapter, ["a", "b", "c"], adapter_std=0.1)
    export_run(run, tmp_path / "bundle", ref_count=2, synthetic_ref=True, progress=False)
    findings = lint_bundle(load_bundle(tmp_path / "bundle"), "trt-10", ["fp32"])["fp32"]
    assert _blockers(findings) == []
