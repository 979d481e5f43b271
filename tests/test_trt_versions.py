"""Every TensorRT a Jetson user meets (docs/deploying.md's support table), with TensorRT stood in by its version:
the build plan, the Polygraphy configuration, the trtexec line, the engine's recorded version and DeepStream's
INT8 files for 8.6 (JetPack 6.0), 10.3 (JetPack 6.1/6.2), 10.16 (JetPack 7.2, DeepStream 9.2) and 11.4.

TensorRT 11 removed weak typing (NVIDIA's 10.x -> 11.x migration guide): no FP16/INT8 builder flags, no
calibrators, no trtexec --fp16/--int8/--best/--calib, --stronglyTyped always on.
"""

from __future__ import annotations

import json
import shlex
import shutil
import types

import pytest

pytest.importorskip("polygraphy", reason="polygraphy is not installed (pip install polygraphy)")

from ringfold.cli import main  # noqa: E402
from ringfold.errors import RingfoldError  # noqa: E402
from ringfold.runtime.backends.tensorrt import build as trt_build  # noqa: E402
from ringfold.runtime.backends.tensorrt import cuda as trt_cuda  # noqa: E402
from ringfold.runtime.backends.tensorrt.build import build_engine, polygraphy_loaders  # noqa: E402
from ringfold.runtime.backends.tensorrt.engines import check_engine, find_engine  # noqa: E402
from ringfold.runtime.backends.tensorrt.plan import BuildOptions, engine_sources, plan_build  # noqa: E402
from ringfold.runtime.backends.tensorrt.trtexec import trtexec_argv  # noqa: E402
from ringfold.runtime.backends.tensorrt.versions import SUPPORT  # noqa: E402
from ringfold.runtime.bundle.engines import read_sidecar, sidecar  # noqa: E402
from ringfold.runtime.bundle.loader import load_bundle  # noqa: E402
from ringfold.runtime.deploy.deepstream import DeepStreamTarget, deepstream_files  # noqa: E402
from tests.trt_stand_ins import SHAS, FakeBundle, FakeEnv  # noqa: E402

ALL = ("fp32", "fp16", "int8", "int8-fp16")
WEAK_FLAGS = {"--fp16", "--int8", "--best", "--calib"}


@pytest.fixture
def fake(tiny_bundle, tmp_path):
    real = load_bundle(tiny_bundle)
    return lambda *variants: FakeBundle(real, tmp_path / "bundle", variants or ALL)


def test_the_support_table_covers_every_version_of_the_issue():
    assert [r.version for r in SUPPORT] == ["8.6.2", "10.3.0", "10.16.0", "11.4.0"]
    platforms = [r.platforms for r in SUPPORT]
    assert platforms[0] == "JetPack 6.0" and platforms[1] == "JetPack 6.1, 6.2"
    assert platforms[2] == "JetPack 7.2, DeepStream 9.2" and platforms[3].startswith("JetPack >= 7.2.2")


# (version, precision) -> (source variant, strongly typed, FP16 flag, INT8 flag, trtexec typing flag)
EXPECTED = {
    ("8.6.2", "fp16"): ("fp32", False, True, False, False),
    ("8.6.2", "int8"): ("int8", False, True, True, False),
    ("8.6.2", "fp32"): ("fp32", False, False, False, False),
    ("10.3.0", "fp16"): ("fp16", True, False, False, True),
    ("10.3.0", "int8"): ("int8-fp16", True, False, False, True),
    ("10.3.0", "fp32"): ("fp32", True, False, False, True),
    ("10.16.0", "fp16"): ("fp16", True, False, False, True),
    ("10.16.0", "int8"): ("int8-fp16", True, False, False, True),
    ("11.4.0", "fp16"): ("fp16", True, False, False, False),  # strongly typed always on: no --stronglyTyped
    ("11.4.0", "int8"): ("int8-fp16", True, False, False, False),
    ("11.4.0", "fp32"): ("fp32", True, False, False, False),
}


@pytest.mark.parametrize("version,precision", sorted(EXPECTED))
def test_default_build_plan_and_trtexec_line_per_version(fake, version, precision):
    kind, strongly, fp16, int8, typed_flag = EXPECTED[(version, precision)]
    plan = plan_build(fake(), BuildOptions(precision), version)
    assert (plan.source_kind, plan.onnx_sha256, plan.strongly_typed) == (kind, SHAS[kind], strongly)
    assert (plan.fp16, plan.int8, plan.notes) == (fp16, int8, ())
    argv = trtexec_argv(plan, "e.engine")
    assert ("--stronglyTyped" in argv) == typed_flag
    assert ("--fp16" in argv, "--int8" in argv) == (fp16, int8)
    if version.startswith("11."):
        assert not WEAK_FLAGS & set(argv)
    config = polygraphy_loaders(plan)
    assert config.network.strongly_typed is (True if strongly else False)
    assert (config.create_config.fp16, config.create_config.int8) == (fp16, int8)


@pytest.mark.parametrize("version", ["10.3.0", "10.16.0", "11.4.0"])
def test_int8_without_the_int8_fp16_variant_builds_the_qdq_model_and_says_the_engine_is_int8_fp32(fake, version):
    plan = plan_build(fake("fp32", "fp16", "int8"), BuildOptions("int8"), version)
    assert (plan.source_kind, plan.strongly_typed, plan.fp16, plan.int8) == ("int8", True, False, False)
    assert len(plan.notes) == 1 and "int8+fp32" in plan.notes[0] and "int8-fp16" in plan.notes[0]


def test_engines_of_the_int8_fp16_variant_are_found_as_int8_engines(fake):
    assert engine_sources(fake(), "int8")[0] == "int8-fp16"


@pytest.mark.parametrize(
    "options,needle",
    [
        (BuildOptions("fp16", strongly_typed=False), "--weakly-typed: TensorRT 11.4.0 builds strongly typed"),
        (BuildOptions("fp16", fp32_layers=True), "--fp32-layers: TensorRT 11.4.0 builds strongly typed"),
        (BuildOptions("int8", calibrator="entropy", calib="x"), "--calibrator: TensorRT 11.4.0 builds strongly"),
        (BuildOptions("fp16"), "no fp16 model for a strongly typed fp16 engine; re-export with --precision fp16"),
    ],
)
def test_weakly_typed_requests_on_tensorrt_11_are_one_line_naming_the_strongly_typed_way(fake, options, needle):
    variants = ("fp32", "int8") if options.precision == "fp16" and options.strongly_typed is None else ALL
    if options.fp32_layers:
        variants = ALL
    with pytest.raises(RingfoldError) as info:
        plan_build(fake(*variants), options, "11.4.0")
    msg = str(info.value)
    assert needle in msg and "\n" not in msg
    assert "drop it" in msg or "re-export" in msg


@pytest.mark.parametrize("version", ["10.3.0", "10.16.0"])
def test_tensorrt_10_keeps_the_weakly_typed_build_on_request(fake, version):
    weak = plan_build(fake(), BuildOptions("fp16", strongly_typed=False), version)
    assert (weak.source_kind, weak.strongly_typed, weak.fp16) == ("fp32", False, True)
    pinned = plan_build(fake(), BuildOptions("fp16", fp32_layers=True), version)  # pins need a weakly typed network
    assert (pinned.strongly_typed, pinned.fp16, pinned.precision_constraints) == (False, True, "obey")
    fallback = plan_build(fake("fp32"), BuildOptions("fp16"), version)  # no fp16 model: the flag, with a note
    assert (fallback.source_kind, fallback.fp16) == ("fp32", True) and "weakly typed" in fallback.notes[0]
    with pytest.raises(RingfoldError, match="TensorRT 8.6"):
        plan_build(fake(), BuildOptions("int8", calibrator="entropy", calib="x"), version)


# ------------------------------------------------------------------------------------ the CLI per version
@pytest.fixture
def orin(monkeypatch):
    monkeypatch.setattr(trt_cuda, "detect_gpu", lambda: ("Orin", "8.7"))


def _print(capsys, bundle, version, *extra):
    code = main(["build-engine", str(bundle), "--print-trtexec", "--trt-version", version, *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("row", SUPPORT, ids=lambda r: r.version)
def test_print_trtexec_per_row_of_the_table(tiny_bundle, capsys, orin, row):
    code, out, err = _print(capsys, tiny_bundle, row.version, "--precision", "fp32")
    argv = shlex.split(out.split(" && ", 1)[1])
    assert code == 0 and out.startswith("mkdir -p ") and not WEAK_FLAGS & set(argv)
    assert ("--stronglyTyped" in argv) == row.version.startswith("10.")
    major_minor = ".".join(row.version.split(".")[:2])
    assert f"-trt{major_minor}-orin-sm87-" in out
    register = shlex.split(err[err.index(": ringfold build-engine ") + 2 :])
    typing = {"8.6.2": [], "11.4.0": []}.get(row.version, ["--strongly-typed"])
    assert [a for a in register if a in ("--strongly-typed", "--weakly-typed")] == typing


def test_print_trtexec_for_11_refuses_the_weak_flags_in_one_line(tiny_bundle, capsys, orin):
    for extra, needle in (
        (["--weakly-typed"], "--weakly-typed: TensorRT 11.4 builds strongly typed networks only"),
        (["--fp32-layers"], "--fp32-layers: TensorRT 11.4 builds strongly typed networks only"),
        (["--precision", "int8", "--calibrator", "entropy", "--calib", "."], "trtexec cannot calibrate"),
    ):
        code, out, err = _print(capsys, tiny_bundle, "11.4", *extra)
        assert code == 2 and out == "" and needle in err and len(err.strip().splitlines()) == 1


def test_print_trtexec_on_10_without_an_fp16_model_says_it_fell_back_to_the_flag(tiny_bundle, capsys, orin):
    code, out, err = _print(capsys, tiny_bundle, "10.3")  # the tiny bundle has only fp32
    assert code == 0 and "--fp16" in out and "--stronglyTyped" not in out
    assert "no fp16 model in the bundle" in err and len(err.splitlines()) == 1
    register = shlex.split(err[err.index(": ringfold build-engine ") + 2 :])
    assert register[-3:-1] == ["--weakly-typed", "--register"]  # keyed by the ONNX trtexec built from: fp32
    code, out, err = _print(capsys, tiny_bundle, "10.3", "--precision", "fp32")
    assert code == 0 and "--strongly-typed --register" in err


# --------------------------------------------------------------------------------- the engine's version
def test_the_sidecar_records_the_tensorrt_that_built_the_engine_and_other_versions_are_refused(
    tiny_bundle, tmp_path, monkeypatch
):
    monkeypatch.setattr(trt_build, "require_trt_stack", lambda: types.SimpleNamespace(__version__="11.4.0"))
    monkeypatch.setattr(
        trt_build.TrtLoaders, "engine_bytes", lambda self, save_timing_cache=None: lambda: b"serialized engine"
    )
    bundle = load_bundle(shutil.copytree(tiny_bundle, tmp_path / "b"))
    out = build_engine(bundle, BuildOptions("fp32"), env=FakeEnv("11.4.0"), log=lambda *_: None)
    key, _ = read_sidecar(sidecar(out))
    extra = json.loads(sidecar(out).read_text())
    assert key.trt_version == "11.4.0" and "-trt11.4-" in out.name and extra["strongly_typed"] is True
    assert check_engine(out, FakeEnv("11.4.0")).trt_version == "11.4.0"
    for other in ("10.16.0", "10.3.0", "11.4.1"):
        with pytest.raises(RingfoldError) as info:
            check_engine(out, FakeEnv(other))
        msg = str(info.value)
        assert f"built with TensorRT 11.4.0, this machine has {other}; rebuild it here" in msg and "\n" not in msg
    with pytest.raises(RingfoldError, match="built with TensorRT 11.4.0, this machine has 10.3.0"):
        find_engine(bundle.path, "fp32", FakeEnv("10.3.0"), bundle.model_sha256("fp32"))


# ------------------------------------------------------------------------------------------ DeepStream
@pytest.mark.parametrize(
    "version,int8", [(None, True), ("8.6.2", True), ("10.3", True), ("10.16", True), ("11.4", False)]
)
def test_deepstream_writes_the_int8_cache_only_for_tensorrt_that_reads_one(raw_bundle, tmp_path, capsys, version, int8):
    out = tmp_path / "ds"
    argv = ["deepstream", str(raw_bundle), "--out", str(out)] + (["--trt-version", version] if version else [])
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert (out / "calibration_int8.cache").exists() == int8
    assert (out / "config_infer_primary_fp16.txt").exists()
    # the bundle carries the Q/DQ raw-input model: int8 configs on every version, built from it, no cache read
    int8_config = (out / "config_infer_primary_int8.txt").read_text()
    assert "model_raw_int8.onnx" in int8_config and "int8-calib-file" not in int8_config
    assert "reads no INT8 calibration cache" not in err


def test_deepstream_int8_from_a_qdq_raw_model_points_at_its_engine_without_a_cache():
    target = DeepStreamTarget("../model_raw.onnx", ["cat", "dog"], (64, 64), ("fp16", "int8"), None, "../raw_qdq.onnx")
    files = deepstream_files(target)
    int8 = files["config_infer_primary_int8.txt"]
    assert "onnx-file=../raw_qdq.onnx\n" in int8 and "model-engine-file=../raw_qdq.onnx_b1_gpu0_int8.engine\n" in int8
    assert "int8-calib-file" not in int8 and "calibration_int8.cache" not in files
    assert "onnx-file=../model_raw.onnx\n" in files["config_infer_primary_fp16.txt"]
