"""``ringfold check`` judges what TensorRT gets: the raw-input models and the text tower beside the precision
variants, and the strongly typed TensorRT 11 target (split from test_trt_lint.py, which holds the rules)."""

from __future__ import annotations

import json

import pytest

from ringfold.cli import main
from ringfold.errors import RingfoldError
from ringfold.runtime.backends.tensorrt.lint import lint_bundle


def _codes(findings, severity=None):
    return {f.code for f in findings if severity is None or f.severity == severity}


def test_raw_input_models_are_checked(raw_bundle, capsys):
    assert main(["check", str(raw_bundle), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    for dtype, file in (("float32", "model_raw.onnx"), ("uint8", "model_raw_uint8.onnx")):
        row = doc["precisions"][f"raw-{dtype}"]
        assert row["file"] == file and row["for_tensorrt"] is True and row["blockers"] == 0
        assert ("dynamic-batch", "image_raw") in {(f["code"], f["node"]) for f in row["findings"]}
    findings = lint_bundle(raw_bundle, "trt-10", ["raw-uint8"])
    assert list(findings) == ["raw-uint8"]
    with pytest.raises(RingfoldError, match="has no 'raw-int16' graph to check"):
        lint_bundle(raw_bundle, "trt-10", ["raw-int16"])


def test_trt11_target_is_strongly_typed_and_flags_an_int8_graph_with_fp32_parts(raw_bundle, capsys):
    assert main(["check", str(raw_bundle), "--target", "trt-11", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["target"] == "trt-11" and doc["strongly_typed"] is True and doc["passed"] is True
    int8 = {f["code"]: f for f in doc["precisions"]["int8"]["findings"]}
    assert int8["int8-fp32-parts"]["severity"] == "warning"
    assert "--precision int8-fp16" in int8["int8-fp32-parts"]["fix"]
    assert "int8-fp32-parts" not in {f["code"] for f in doc["precisions"]["fp32"]["findings"]}
    # the weakly typed targets keep their advice: no such row there
    assert "int8-fp32-parts" not in _codes(lint_bundle(raw_bundle, "trt-10", ["int8"])["int8"])
    with pytest.raises(SystemExit) as exited:
        main(["check", str(raw_bundle), "--target", "trt-12"])
    assert exited.value.code == 2 and "invalid choice: 'trt-12'" in capsys.readouterr().err


def test_trt11_int8_warning_is_dropped_when_tensorrt_builds_int8_from_another_graph(raw_bundle, monkeypatch):
    """The precision table names the graphs an int8 engine comes from, in order: when the bundle has one before
    the fp32-parts Q/DQ graph (int8-fp16), that graph's int8 + fp32 warning does not apply."""
    from dataclasses import replace

    from ringfold.runtime.backends.tensorrt.lint import bundle_check
    from ringfold.runtime.bundle.loader import load_bundle

    bundle = load_bundle(raw_bundle)
    assert "int8-fp32-parts" in _codes(bundle_check.check_bundle(bundle, "trt-11", ["int8"]).findings["int8"])
    table = dict(bundle_check.TABLE)
    table["int8"] = replace(table["int8"], engine_sources=("fp32", "int8"))  # as if the bundle had a preferred one
    monkeypatch.setattr(bundle_check, "TABLE", table)
    assert "int8-fp32-parts" not in _codes(bundle_check.check_bundle(bundle, "trt-11", ["int8"]).findings["int8"])


def test_raw_qdq_model_is_checked_by_its_int8_variants_rules(raw_bundle, capsys):
    """model_raw_int8.onnx (the Q/DQ graph DeepStream builds its int8 engine from) is judged like model_int8.onnx:
    on the strongly typed trt-11 target it gets the same findings as the int8 variant it was built from."""
    assert main(["check", str(raw_bundle), "--target", "trt-11", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    row, int8 = doc["precisions"]["raw-int8"], doc["precisions"]["int8"]
    assert row["file"] == "model_raw_int8.onnx" and row["for_tensorrt"] is True
    assert {f["code"] for f in row["findings"]} == {f["code"] for f in int8["findings"]}
    assert {f["code"] for f in row["findings"]} != {f["code"] for f in doc["precisions"]["raw-float32"]["findings"]}
    assert list(lint_bundle(raw_bundle, "trt-10", ["raw-int8"])) == ["raw-int8"]
