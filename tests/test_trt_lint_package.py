"""The TensorRT lint as a package: its operator tables are data files that load, name real ONNX ops and agree with
each other; the public API imports from ``ringfold.runtime.backends.tensorrt.lint`` without onnx or torch."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import onnx
import onnx.defs
import pytest
from onnx import TensorProto

from ringfold.runtime.backends.tensorrt import lint as trt_lint
from ringfold.runtime.backends.tensorrt.lint.parsers import PARSERS, TARGETS, load_parsers

ROOT = Path(__file__).resolve().parents[1]
#: experimental ops ONNX dropped in opset 10 (onnx 1.5) that onnx-tensorrt still imports from old models
REMOVED_FROM_ONNX = {"ImageScaler", "ParametricSoftplus", "ScaledTanh"}
#: ops of opsets 23/24 (onnx 1.18/1.19), unknown to the older onnx releases ringfold supports (1.16 on)
NEWER_THAN_ONNX_1_16 = {"Attention", "RMSNormalization", "RotaryEmbedding", "Swish", "TensorScatter"}
#: element types of onnx 1.18 (TensorRT 10's FP4 Q/DQ), unknown to older onnx releases
TYPES_NEWER_THAN_ONNX_1_16 = {"FLOAT4E2M1"}


def _docs() -> dict[str, dict]:
    ops = resources.files("ringfold.runtime.backends.tensorrt.lint").joinpath("ops")
    files = [f for f in ops.iterdir() if f.name.endswith(".json")]
    return {f.name: json.loads(f.read_text(encoding="utf-8")) for f in files}


def test_one_data_file_per_target_loads_oldest_first():
    docs = _docs()
    assert set(docs) == {"trt-8.6.json", "trt-10.json", "trt-11.json"}
    assert TARGETS == ("trt-8.6", "trt-10", "trt-11")
    for name, doc in docs.items():
        assert name == f"{doc['target']}.json"
        assert doc["about"] and doc["source"]
    fresh = load_parsers()
    assert fresh == PARSERS and tuple(fresh) == TARGETS
    assert trt_lint.PARSERS is PARSERS and trt_lint.TARGETS == TARGETS


@pytest.mark.parametrize("target", ["trt-8.6", "trt-10", "trt-11"])
def test_every_op_in_a_table_is_a_real_onnx_op(target):
    doc = _docs()[f"{target}.json"]
    supported, unsupported = set(doc["supported"]), set(doc["unsupported"])
    assert supported and unsupported and not supported & unsupported
    unknown = {op for op in supported | unsupported if not onnx.defs.has(op)}
    assert unknown <= REMOVED_FROM_ONNX | NEWER_THAN_ONNX_1_16, sorted(unknown)
    if onnx.defs.has("TensorScatter"):  # an onnx that knows opset 24 knows every op of the tables
        assert unknown <= REMOVED_FROM_ONNX, sorted(unknown)
    assert REMOVED_FROM_ONNX <= supported  # the parser's own table lists them


@pytest.mark.parametrize("target", ["trt-8.6", "trt-10", "trt-11"])
def test_element_types_are_tensorproto_names_and_ranges_are_sane(target):
    doc = _docs()[f"{target}.json"]
    known = set(TensorProto.DataType.keys())
    for key in ("io_types", "cast_types", "qdq_data_types"):
        assert doc[key], key
        unknown = set(doc[key]) - known
        assert unknown <= TYPES_NEWER_THAN_ONNX_1_16, (key, sorted(unknown))
        if "FLOAT4E2M1" in known:
            assert unknown == set(), (key, sorted(unknown))
    lo, hi = doc["opset"]
    assert 1 <= lo <= hi <= onnx.defs.onnx_opset_version() + 10
    assert isinstance(doc["ir_max"], int) and isinstance(doc["int64"], bool)
    spec = PARSERS[target]
    assert (spec.opset_min, spec.opset_max) == (lo, hi)
    assert all(v.since is None for v in spec.ops.values() if v.supported)


def test_trt10_imports_everything_trt86_does():
    old, new = PARSERS["trt-8.6"], PARSERS["trt-10"]
    missing = sorted(op for op, s in old.ops.items() if s.supported and not new.ops[op].supported)
    assert missing == []
    # what 8.6 lacks but 10.0-10.3 has is dated; what later 10.x adds is dated past 10.3 in both tables
    for op, s in old.ops.items():
        if not s.supported and op in new.ops and new.ops[op].supported:
            assert s.since is not None, op
    for op, s in new.ops.items():
        if not s.supported and s.since:
            assert tuple(int(x) for x in s.since.split(".")) > (10, 3), op
            assert old.ops[op].since == s.since, op


def test_trt11_is_trt10_with_every_later_10x_op_and_strongly_typed():
    """TensorRT 11 keeps what 10.x imports, has every op a 10.x release after 10.3 added, and drops weak typing."""
    ten, eleven = PARSERS["trt-10"], PARSERS["trt-11"]
    assert eleven.strongly_typed is True and ten.strongly_typed is False and PARSERS["trt-8.6"].strongly_typed is False
    lost = sorted(op for op, s in ten.ops.items() if s.supported and not eleven.ops[op].supported)
    assert lost == []
    dated = sorted(op for op, s in ten.ops.items() if not s.supported and s.since)
    assert dated and all(eleven.ops[op].supported for op in dated), dated
    never = sorted(op for op, s in ten.ops.items() if not s.supported and s.since is None)
    assert all(not eleven.ops[op].supported for op in never)
    assert eleven.ops["Swish"].supported  # the 11.0 parser's addition
    assert (eleven.opset_min, eleven.opset_max, eleven.int64) == (ten.opset_min, ten.opset_max, True)


def test_public_api_is_importable_from_the_package():
    for name in (
        "count",
        "format_report",
        "has_blocker",
        "lint_bundle",
        "lint_model",
        "polygraphy_compare",
        "polygraphy_missing",
        "require_polygraphy",
        "to_json",
        "Finding",
        "PARSERS",
        "parser_spec",
    ):
        assert hasattr(trt_lint, name), name
    assert set(trt_lint.__all__) <= set(dir(trt_lint))


def test_package_imports_without_onnx_and_the_lint_names_it():
    code = (
        "import sys; sys.modules['onnx'] = None\n"
        "import ringfold.runtime.backends.tensorrt.lint as t\n"
        "from ringfold.errors import RingfoldError\n"
        "assert t.TARGETS == ('trt-8.6', 'trt-10', 'trt-11')\n"
        "try:\n    t.lint_model('missing.onnx', 'trt-10')\n"
        "except RingfoldError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "`pip install onnx`, or ringfold's [check] extra" in out.stdout
    assert "pip install 'dist/ringfold-0.1.0-py3-none-any.whl[check]'" in out.stdout


def test_runtime_modules_import_no_torch():
    code = (
        "import importlib, pkgutil, sys, ringfold.runtime as r\n"
        "for m in pkgutil.walk_packages(r.__path__, 'ringfold.runtime.'):\n"
        "    importlib.import_module(m.name)\n"
        "assert 'ringfold.runtime.backends.tensorrt.build' in sys.modules\n"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_pyproject_ships_every_runtime_package_and_the_lint_tables():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = set(config["packages"])
    for init in (ROOT / "runtime").rglob("__init__.py"):
        parts = init.parent.relative_to(ROOT / "runtime").parts
        assert ".".join(("ringfold", "runtime", *parts)) in packages, init
    data = config["package-data"]["ringfold.runtime.backends.tensorrt.lint"]
    assert "ops/*.json" in data
