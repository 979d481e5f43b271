"""The TensorRT build through Polygraphy, without TensorRT: the build plan, the configuration Polygraphy is
given, every refusal, ringfold's own glue around the build (files written whole, sidecar, index), the runner's
batch handling, and the trtexec line ``--print-trtexec`` prints.

Polygraphy must be installed (it is pure Python); its loaders are constructed for real and inspected. Where
TensorRT itself would be called, a stand-in takes its place; the real builds are in test_trt.py (``-m trt``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import types
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("polygraphy", reason="polygraphy is not installed (pip install polygraphy)")

from polygraphy.backend.trt import (  # noqa: E402
    CreateConfig,
    EngineBytesFromNetwork,
    NetworkFromOnnxPath,
    PostprocessNetwork,
)

from ringfold.cli import build_parser, main  # noqa: E402
from ringfold.errors import RingfoldError  # noqa: E402
from ringfold.ownership import ownership_problem  # noqa: E402
from ringfold.runtime.backends.tensorrt import build as trt_build  # noqa: E402
from ringfold.runtime.backends.tensorrt import cuda as trt_cuda  # noqa: E402
from ringfold.runtime.backends.tensorrt import plan as trt_plan  # noqa: E402
from ringfold.runtime.backends.tensorrt import stack as trt_stack  # noqa: E402
from ringfold.runtime.backends.tensorrt.build import (  # noqa: E402
    BuilderConfig,
    CalibrationBatches,
    PinFp32Layers,
    build_engine,
    pin_fp32_layers,
    polygraphy_loaders,
    register_engine,
)
from ringfold.runtime.backends.tensorrt.cuda import parse_nvidia_smi  # noqa: E402
from ringfold.runtime.backends.tensorrt.engines import find_engine  # noqa: E402
from ringfold.runtime.backends.tensorrt.plan import BuildOptions, Fp32Layers, plan_build  # noqa: E402
from ringfold.runtime.backends.tensorrt.trtexec import trtexec_argv  # noqa: E402
from ringfold.runtime.bundle.engines import read_sidecar, sidecar  # noqa: E402
from ringfold.runtime.bundle.loader import load_bundle  # noqa: E402
from ringfold.runtime.bundle.spec import TensorSpec  # noqa: E402
from tests import trt_stand_ins  # noqa: E402

SHAS = {"fp32": "a" * 64, "fp16": "b" * 64, "int8": "c" * 64}
LN = "/visual/transformer/resblocks.0/ln_1/LayerNormalization"


class FakeBundle:
    """The parts of a Bundle the plan reads; every variant is the tiny model's ONNX under its own name."""

    def __init__(self, real, root: Path, variants=("fp32",)) -> None:
        self.path = root
        self.variants = {v: object() for v in variants}
        self.manifest = types.SimpleNamespace(input=TensorSpec("image", "float32", ("batch", 3, 64, 64)))
        self.preprocess = real.preprocess
        self._onnx = real.model_path("fp32")

    def model_path(self, kind: str) -> Path:
        return self._onnx

    def model_sha256(self, kind: str) -> str:
        return SHAS[kind]


class FakeEnv(trt_stand_ins.FakeEnv):
    """These tests default to TensorRT 8.6 (JetPack 6.0)."""

    def __init__(self, version="8.6.2", device="Orin", cc="8.7"):
        super().__init__(version, device, cc)


@pytest.fixture(scope="module")
def real(tiny_bundle):
    return load_bundle(tiny_bundle)


@pytest.fixture
def fake(real, tmp_path):
    return lambda *variants: FakeBundle(real, tmp_path / "bundle", variants or ("fp32",))


def _copy(bundle: Path, dest: Path) -> Path:
    shutil.copytree(bundle, dest)
    return dest


# ------------------------------------------------------------------------------------------------ plan
def test_fp16_plan_builds_the_fp32_graph_with_the_fp16_flag(fake, tmp_path):
    cache = tmp_path / "tc.bin"
    options = BuildOptions("fp16", (1, 4, 8), workspace_mib=512, timing_cache=cache, fp32_layers=True)
    plan = plan_build(fake(), options, "10.3.0")
    assert (plan.source_kind, plan.onnx_sha256, plan.precision) == ("fp32", SHAS["fp32"], "fp16")
    assert (plan.fp16, plan.int8, plan.strongly_typed) == (True, False, False)
    assert plan.profile == (("image", (1, 3, 64, 64), (4, 3, 64, 64), (8, 3, 64, 64)),)
    assert plan.batch == (1, 4, 8) and plan.workspace_bytes == 512 * 1024 * 1024
    assert plan.timing_cache == cache and plan.calibration is None
    assert plan.precision_constraints == "obey" and LN in plan.fp32_layers.names
    assert "LayerNormalization" in plan.fp32_layers.op_types and "NORMALIZATION" in plan.fp32_layers.layer_types


@pytest.mark.parametrize(
    "precision,strongly,variants,kind,fp16,int8",
    [
        ("fp32", False, ("fp32",), "fp32", False, False),
        ("int8", False, ("fp32", "int8"), "int8", True, True),  # QDQ graph, INT8 + FP16 flags
        ("fp16", True, ("fp32", "fp16"), "fp16", False, False),  # strongly typed: the fp16 graph, no flags
        ("int8", True, ("fp32", "int8"), "int8", False, False),
        ("fp32", True, ("fp32",), "fp32", False, False),
    ],
)
def test_plan_picks_the_graph_and_flags_per_precision(fake, precision, strongly, variants, kind, fp16, int8):
    plan = plan_build(fake(*variants), BuildOptions(precision, strongly_typed=strongly), "10.3.1")
    assert (plan.source_kind, plan.onnx_sha256) == (kind, SHAS[kind])
    assert (plan.fp16, plan.int8, plan.strongly_typed) == (fp16, int8, strongly)
    assert plan.precision_constraints is None and plan.fp32_layers is None


@pytest.mark.parametrize(
    "options,version,variants,needle",
    [
        (BuildOptions(batch=(4, 2, 8)), "10.3", ("fp32",), "--batch 4,2,8 invalid"),
        (BuildOptions(batch=(0, 1, 1)), "10.3", ("fp32",), "need 1 <= min"),
        (BuildOptions(strongly_typed=True), "8.6.2", ("fp32", "fp16"), "--strongly-typed needs TensorRT 10"),
        (BuildOptions("int8", calibrator="entropy", calib="x"), "10.3", ("fp32",), "TensorRT 8.6"),
        (BuildOptions("int8"), "10.3", ("fp32",), "no int8 (QDQ) model; re-export with --precision int8"),
        (BuildOptions("fp16", strongly_typed=True), "10.3", ("fp32",), "no fp16 model"),
        (BuildOptions(strongly_typed=True, fp32_layers=True), "10.3", ("fp32", "fp16"), "no effect"),
        (BuildOptions("int8", calibrator="entropy"), "8.6.2", ("fp32",), "needs --calib DIR"),
        (BuildOptions("fp16", calibrator="entropy", calib="x"), "8.6.2", ("fp32",), "for --precision int8"),
        (BuildOptions(), "8.5.3", ("fp32",), "older than 8.6"),
        (BuildOptions("int8-dynamic"), "10.3", ("fp32", "int8-dynamic"), "fp32, fp16 or int8"),
    ],
)
def test_plan_refusals_are_one_line(fake, options, version, variants, needle):
    with pytest.raises(RingfoldError) as info:
        plan_build(fake(*variants), options, version)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_calibration_plan_batches_at_the_opt_size_with_the_cache_in_engines(fake, demo_data):
    bundle = fake("fp32")
    options = BuildOptions("int8", (1, 4, 8), calibrator="entropy", calib=str(demo_data / "train"), calib_min=8)
    plan = plan_build(bundle, options, "8.6.2")
    cal = plan.calibration
    assert (plan.source_kind, plan.fp16, plan.int8) == ("fp32", True, True)
    assert cal.batch == 4 and len(cal.images) % 4 == 0 and len(cal.images) >= 4
    assert cal.cache == bundle.path / "engines" / "calibration.cache" and cal.input_name == "image"
    mine = tmp = bundle.path.parent / "my.cache"
    assert plan_build(bundle, replace(options, calib_cache=tmp), "8.6.2").calibration.cache == mine
    with pytest.raises(RingfoldError, match="needs at least one batch of 1000"):
        plan_build(bundle, replace(options, batch=(1, 1000, 1000)), "8.6.2")


def test_calibration_batches_are_the_runtime_preprocessing_as_float32(fake, demo_data):
    plan = plan_build(
        fake("fp32"),
        BuildOptions("int8", (1, 2, 4), calibrator="entropy", calib=str(demo_data / "train"), calib_min=8),
        "8.6",
    )
    batches = CalibrationBatches(plan.calibration)
    first = list(batches)
    assert len(first) == len(batches) == len(plan.calibration.images) // 2
    assert all(set(b) == {"image"} and b["image"].shape == (2, 3, 64, 64) for b in first)
    assert first[0]["image"].dtype == np.float32
    assert np.array_equal(next(iter(batches))["image"], first[0]["image"])  # re-iterable: the calibrator rewinds


# ------------------------------------------------------------------------------------------- loaders
def test_polygraphy_config_for_an_fp16_plan(fake, tmp_path):
    plan = plan_build(fake(), BuildOptions("fp16", (1, 4, 8), workspace_mib=256), "10.3")
    loaders = polygraphy_loaders(plan)
    assert isinstance(loaders.network, NetworkFromOnnxPath)
    assert loaders.network.path == str(plan.onnx) and loaders.network.strongly_typed is False
    config = loaders.create_config
    assert isinstance(config, CreateConfig) and loaders.config.create_config is config
    assert (config.fp16, config.int8, config.tf32) == (True, False, False)
    assert config.precision_constraints is None and config.calibrator is None
    assert config.timing_cache_path is None
    shapes = config.profiles[0]["image"]
    assert (shapes.min, shapes.opt, shapes.max) == ((1, 3, 64, 64), (4, 3, 64, 64), (8, 3, 64, 64))
    assert len(config.profiles) == 1
    # keyed by trt.MemoryPoolType: held back until TensorRT builds (see BuilderConfig)
    assert config.memory_pool_limits is None and loaders.config.workspace_bytes == 256 << 20
    sink = object()
    engine = loaders.engine_bytes(sink)
    assert isinstance(engine, EngineBytesFromNetwork) and engine.timing_cache_path is sink
    assert engine._network is loaders.network and engine._config is loaders.config


def test_polygraphy_config_pins_fp32_layers_and_loads_the_timing_cache(fake, tmp_path):
    cache = tmp_path / "tc.bin"
    options = BuildOptions("fp16", fp32_layers=True, timing_cache=cache)
    assert polygraphy_loaders(plan_build(fake(), options, "8.6.2")).create_config.timing_cache_path is None  # none yet
    cache.write_bytes(b"cache")
    loaders = polygraphy_loaders(plan_build(fake(), options, "8.6.2"))
    assert loaders.create_config.timing_cache_path == str(cache)
    assert loaders.create_config.precision_constraints == "obey"
    assert isinstance(loaders.network, PostprocessNetwork) and isinstance(loaders.network._network, NetworkFromOnnxPath)
    assert loaders.network._func is loaders.pins and isinstance(loaders.pins, PinFp32Layers)
    assert LN in loaders.pins.spec.names and loaders.pins.pinned is None  # counted when TensorRT parses


def test_polygraphy_config_for_a_strongly_typed_plan(fake):
    loaders = polygraphy_loaders(plan_build(fake("fp32", "fp16"), BuildOptions("fp16", strongly_typed=True), "10.3"))
    assert loaders.network.strongly_typed is True
    assert (loaders.create_config.fp16, loaders.create_config.int8) == (False, False)


def test_tensorrt_typed_settings_are_filled_in_when_tensorrt_builds(fake, demo_data, monkeypatch):
    made = []

    def calibrator(data_loader, cache=None):
        made.append((data_loader, cache))
        return "calibrator"

    monkeypatch.setattr("polygraphy.backend.trt.Calibrator", calibrator)
    trt = types.SimpleNamespace(MemoryPoolType=types.SimpleNamespace(WORKSPACE="WORKSPACE"))
    options = BuildOptions(
        "int8", (1, 2, 4), workspace_mib=64, calibrator="entropy", calib=str(demo_data / "train"), calib_min=8
    )
    plan = plan_build(fake(), options, "8.6.2")
    loaders = polygraphy_loaders(plan)
    assert loaders.create_config.calibrator is None and loaders.config.calibration is plan.calibration
    loaders.config.resolve(trt)
    loaders.config.resolve(trt)  # idempotent: one calibrator
    assert loaders.create_config.memory_pool_limits == {"WORKSPACE": 64 << 20}
    assert loaders.create_config.calibrator == "calibrator" and len(made) == 1
    data, cache = made[0]
    assert isinstance(data, CalibrationBatches) and data.plan is plan.calibration
    assert cache == str(plan.calibration.cache)
    assert (loaders.create_config.int8, loaders.create_config.fp16) == (True, True)


def test_builder_config_without_a_workspace_cap_leaves_tensorrt_default():
    config = BuilderConfig(types.SimpleNamespace(memory_pool_limits=None, calibrator=None), None, None)
    config.resolve(types.SimpleNamespace())
    assert config.create_config.memory_pool_limits is None and config.create_config.calibrator is None


class _Tensor:
    def __init__(self, dtype):
        self.dtype = dtype


class _Layer:
    def __init__(self, name, kind, dtype="f32", outputs=1):
        self.name, self.type, self.precision = name, kind, None
        self.outputs = [_Tensor(dtype) for _ in range(outputs)]
        self.output_types = {}

    num_outputs = property(lambda self: len(self.outputs))

    def get_output(self, j):
        return self.outputs[j]

    def set_output_type(self, j, dtype):
        self.output_types[j] = dtype


def test_fp32_pins_select_norm_softmax_reductions_and_named_layers_but_never_integer_ones():
    trt = types.SimpleNamespace(
        LayerType=types.SimpleNamespace(SOFTMAX="softmax", REDUCE="reduce", MATRIX_MULTIPLY="matmul"),
        float32="f32",
        float16="f16",
        int32="i32",
    )  # no NORMALIZATION member, like TensorRT before 8.6: skipped, not an error
    layers = [
        _Layer("attn/Softmax", "softmax"),
        _Layer("ONNXTRT_reduce_17", "reduce"),
        _Layer("shape/ReduceMean", "reduce", dtype="i32"),  # integer shape arithmetic: left alone
        _Layer(LN, "matmul"),  # op type in the name (a decomposed LayerNorm)
        _Layer("custom_norm", "matmul", dtype="f16", outputs=2),  # named in the spec
        _Layer("fc/MatMul", "matmul"),
        _Layer("no outputs", "softmax", outputs=0),
    ]
    network = types.SimpleNamespace(num_layers=len(layers), get_layer=lambda i: layers[i])
    spec = Fp32Layers(names=("custom_norm",))
    assert pin_fp32_layers(network, spec, trt) == 4
    pinned = {layer.name for layer in layers if layer.precision == "f32"}
    assert pinned == {"attn/Softmax", "ONNXTRT_reduce_17", LN, "custom_norm"}
    assert layers[4].output_types == {0: "f32", 1: "f32"} and layers[5].output_types == {}


def test_polygraphy_log_goes_to_stderr_and_failures_are_one_line(capsys):
    from polygraphy.exception import PolygraphyException
    from polygraphy.logger import G_LOGGER

    with trt_stack.polygraphy_log("INFO"):
        G_LOGGER.warning("from polygraphy")
    out = capsys.readouterr()
    assert out.out == "" and "from polygraphy" in out.err

    def fails():
        raise PolygraphyException("Could not parse ONNX correctly\nmore detail")

    with pytest.raises(RingfoldError) as info:
        trt_stack.run_polygraphy(fails, "model.onnx: TensorRT could not build an engine", "see the log above")
    msg = str(info.value)
    assert msg == "model.onnx: TensorRT could not build an engine (Could not parse ONNX correctly); see the log above"


# --------------------------------------------------------------------------------------- build glue
def _stand_in_tensorrt(monkeypatch, version="8.6.2"):
    trt = types.SimpleNamespace(__version__=version)
    monkeypatch.setattr(trt_build, "require_trt_stack", lambda: trt)
    return trt


def test_build_writes_engine_sidecar_and_both_caches_whole(tiny_bundle, tmp_path, demo_data, monkeypatch):
    """ringfold's part around Polygraphy's build, with the build itself stood in for."""
    _stand_in_tensorrt(monkeypatch)
    bundle = load_bundle(_copy(tiny_bundle, tmp_path / "b"))
    seen = {}

    def engine_bytes(self, save_timing_cache=None):
        def build():
            seen["calibration cache"] = self.plan.calibration.cache
            Path(self.plan.calibration.cache).write_bytes(b"calibration table")
            save_timing_cache.write(b"timing cache")
            return b"serialized engine"

        return build

    monkeypatch.setattr(trt_build.TrtLoaders, "engine_bytes", engine_bytes)
    cache = tmp_path / "timing cache.bin"
    options = BuildOptions(
        "int8",
        (1, 2, 4),
        timing_cache=cache,
        fp32_layers=True,
        calibrator="entropy",
        calib=str(demo_data / "train"),
        calib_min=8,
    )
    out = build_engine(bundle, options, env=FakeEnv(), log=lambda *_: None)
    assert out.name == f"model-int8-trt8.6-orin-sm87-b1-2-4-{bundle.model_sha256('fp32')[:12]}.engine"
    assert out.read_bytes() == b"serialized engine" and cache.read_bytes() == b"timing cache"
    final = bundle.path / "engines" / "calibration.cache"
    assert final.read_bytes() == b"calibration table" and seen["calibration cache"] != final  # staged, then moved
    key, digest = read_sidecar(sidecar(out))
    assert key.batch == (1, 2, 4) and key.onnx_sha256 == bundle.model_sha256("fp32")
    extra = json.loads(sidecar(out).read_text())
    assert extra["source_kind"] == "fp32" and extra["fp32_layers"] is True and extra["polygraphy_version"]
    assert ownership_problem(bundle.path) is None  # no staging or lock files: the bundle stays replaceable
    assert find_engine(bundle.path, "int8", FakeEnv(), [bundle.model_sha256("fp32")]) == out


def test_failed_build_is_one_line_and_leaves_the_caches_as_they_were(tiny_bundle, tmp_path, demo_data, monkeypatch):
    from polygraphy.exception import PolygraphyException

    _stand_in_tensorrt(monkeypatch)
    bundle = load_bundle(_copy(tiny_bundle, tmp_path / "b"))

    def engine_bytes(self, save_timing_cache=None):
        def build():
            Path(self.plan.calibration.cache).write_bytes(b"half a cache")
            raise PolygraphyException("Invalid Engine. Please ensure the engine was built correctly")

        return build

    monkeypatch.setattr(trt_build.TrtLoaders, "engine_bytes", engine_bytes)
    cal = bundle.path / "engines" / "calibration.cache"
    cal.parent.mkdir()
    cal.write_bytes(b"good cache")
    options = BuildOptions("int8", (1, 2, 4), calibrator="entropy", calib=str(demo_data / "train"), calib_min=8)
    with pytest.raises(RingfoldError) as info:
        build_engine(bundle, options, env=FakeEnv())
    msg = str(info.value)
    assert "could not build an engine (Invalid Engine" in msg and "ringfold check" in msg and "\n" not in msg
    assert cal.read_bytes() == b"good cache" and sorted(p.name for p in cal.parent.iterdir()) == ["calibration.cache"]


def _engine_io(bundle):
    def spec(s):
        return s.name, s.dtype, [None if isinstance(d, str) else d for d in s.shape]

    return [spec(bundle.manifest.input)], [spec(s) for s in bundle.manifest.outputs]


def _stand_in_engine(monkeypatch, bundle, profile=(1, 4, 8), io=None):
    inputs, outputs = io or _engine_io(bundle)
    monkeypatch.setattr(trt_build, "load_engine", lambda data, path: ("engine", data))  # what register_engine calls
    monkeypatch.setattr(trt_build, "engine_io", lambda engine: (inputs, outputs, profile))


def test_register_renames_a_trtexec_engine_in_engines_and_records_it(tiny_bundle, tmp_path, monkeypatch):
    _stand_in_tensorrt(monkeypatch, "10.3.0")
    bundle = load_bundle(_copy(tiny_bundle, tmp_path / "b"))
    _stand_in_engine(monkeypatch, bundle)
    engines = bundle.path / "engines"
    engines.mkdir()
    loose = engines / "model-fp16-trt10.3-b1-8-16-aaaaaaaaaaaa.engine"  # as --print-trtexec names it without a GPU
    loose.write_bytes(b"trtexec engine")
    env = FakeEnv("10.3.0")
    out = register_engine(bundle, loose, BuildOptions("fp16"), env=env)
    assert out.name == f"model-fp16-trt10.3-orin-sm87-b1-4-8-{bundle.model_sha256('fp32')[:12]}.engine"
    assert out.read_bytes() == b"trtexec engine" and not loose.exists()
    assert json.loads(sidecar(out).read_text())["built_by"].startswith("trtexec")
    assert find_engine(bundle.path, "fp16", env, bundle.model_sha256("fp32")) == out
    assert ownership_problem(bundle.path) is None


def test_register_copies_an_engine_from_elsewhere_and_checks_its_io(tiny_bundle, tmp_path, monkeypatch):
    _stand_in_tensorrt(monkeypatch, "10.3.0")
    bundle = load_bundle(_copy(tiny_bundle, tmp_path / "b"))
    _stand_in_engine(monkeypatch, bundle, profile=(2, 2, 4))
    outside = tmp_path / "my engines" / "pets.engine"
    outside.parent.mkdir()
    outside.write_bytes(b"trtexec engine")
    out = register_engine(bundle, outside, BuildOptions("fp16"), env=FakeEnv("10.3.0"))
    assert (
        outside.read_bytes() == b"trtexec engine" and out.parent == bundle.path / "engines" and "-b2-2-4-" in out.name
    )

    inputs, outputs = _engine_io(bundle)
    _stand_in_engine(monkeypatch, bundle, io=([("pixels", "float32", [None, 3, 64, 64])], outputs))
    with pytest.raises(RingfoldError) as info:
        register_engine(bundle, outside, BuildOptions("fp16"), env=FakeEnv("10.3.0"))
    assert str(outside) in str(info.value) and "differ from the manifest" in str(info.value)


def test_register_refuses_a_missing_file_and_calibrated_engines_without_tensorrt(tiny_bundle, tmp_path):
    bundle = load_bundle(tiny_bundle)
    with pytest.raises(RingfoldError, match="no such engine file; pass the --saveEngine path"):
        register_engine(bundle, tmp_path / "none.engine", BuildOptions("fp16"))
    with pytest.raises(RingfoldError, match="drop --calibrator"):
        register_engine(bundle, tmp_path / "none.engine", BuildOptions("int8", calibrator="entropy"))


# ------------------------------------------------------------------------------------------- runner
class _ReusingRunner:
    """Like Polygraphy's TrtRunner: the same output buffer every call."""

    is_active = False

    def __init__(self):
        self.buffer = np.zeros((1, 2), np.float16)
        self.feeds = []

    def infer(self, feed, check_inputs=True):
        self.feeds.append(feed)
        x = feed["image"]
        self.buffer = np.resize(self.buffer, (len(x), 2))
        self.buffer[:] = x.reshape(len(x), -1)[:, :2]
        return {"logits": self.buffer, "embedding": self.buffer}


def _model(lo=2, hi=4):
    return trt_stand_ins.stand_in_trt_model(lo, hi, _ReusingRunner(), sample_shape=(3, 64, 64))


def test_runner_refuses_a_batch_outside_the_profile_with_the_rebuild_command():
    model = _model(2, 4)
    for batch, fix in ((1, "--batch 1,1,4"), (5, "--batch 2,5,5")):
        with pytest.raises(RingfoldError) as info:
            model.run(np.zeros((batch, 3, 64, 64), np.float32))
        msg = str(info.value)
        assert "outside this engine's profile 2..4" in msg and fix in msg and "\n" not in msg
    with pytest.raises(RingfoldError, match="does not fit"):
        model.run(np.zeros((2, 3, 32, 32), np.float32))
    assert model._runner.feeds == []


def test_runner_returns_float32_copies_the_next_call_cannot_change():
    model = _model(1, 4)
    first = model.run(np.ones((2, 3, 64, 64), np.float64))
    kept = first["logits"].copy()
    model.run(np.full((2, 3, 64, 64), 7.0, np.float32))
    assert np.array_equal(first["logits"], kept) and first["logits"].dtype == np.float32
    feed = model._runner.feeds[0]["image"]
    assert feed.dtype == np.float32 and feed.flags["C_CONTIGUOUS"]
    assert model.run_batched(np.zeros((8, 3, 64, 64), np.float32))["logits"].shape == (8, 2)


# ------------------------------------------------------------------------------------------- trtexec
def test_trtexec_argv_matches_the_plan_per_tensorrt_version(fake, tmp_path):
    bundle = fake("fp32", "int8")
    plan = plan_build(
        bundle, BuildOptions("fp16", (1, 4, 8), workspace_mib=2048, timing_cache=tmp_path / "tc"), "8.6.2"
    )
    argv = trtexec_argv(plan, "e.engine")
    assert argv == [
        "trtexec",
        f"--onnx={plan.onnx}",
        "--saveEngine=e.engine",
        "--minShapes=image:1x3x64x64",
        "--optShapes=image:4x3x64x64",
        "--maxShapes=image:8x3x64x64",
        "--memPoolSize=workspace:2048",  # MiB: the unit 8.6 and 10.x both read without a suffix
        "--fp16",
        "--noTF32",
        f"--timingCacheFile={tmp_path / 'tc'}",
        "--profilingVerbosity=detailed",
        "--skipInference",
    ]
    strongly = trtexec_argv(plan_build(bundle, BuildOptions("fp32", strongly_typed=True), "10.3"), "e")
    assert "--stronglyTyped" in strongly and "--fp16" not in strongly and "--int8" not in strongly
    int8 = trtexec_argv(plan_build(bundle, BuildOptions("int8"), "10.3"), "e")
    assert "--int8" in int8 and "--fp16" in int8
    fp32 = trtexec_argv(plan_build(bundle, BuildOptions("fp32"), "8.6"), "e")
    assert not {"--fp16", "--int8", "--stronglyTyped"} & set(fp32)
    pinned = trtexec_argv(plan_build(bundle, BuildOptions("fp16", fp32_layers=True), "8.6"), "e")
    assert "--precisionConstraints=obey" in pinned
    layers = next(a for a in pinned if a.startswith("--layerPrecisions=")).split("=", 1)[1].split(",")
    assert f"{LN}:fp32" in layers and f"--layerOutputTypes={','.join(layers)}" in pinned


def test_trtexec_refuses_what_it_cannot_express(fake, tmp_path, monkeypatch):
    bundle = fake()
    monkeypatch.setattr(trt_plan, "fp32_layer_names", lambda onnx: None)  # no onnx package
    plan = plan_build(bundle, BuildOptions("fp16", fp32_layers=True), "10.3")
    assert plan.fp32_layers.names is None
    with pytest.raises(RingfoldError, match="pip install onnx"):
        trtexec_argv(plan, "e")
    monkeypatch.setattr(trt_plan, "fp32_layer_names", lambda onnx: ["a,b"])
    with pytest.raises(RingfoldError, match="cannot parse"):
        trtexec_argv(plan_build(bundle, BuildOptions("fp16", fp32_layers=True), "10.3"), "e")


def _print(capsys, bundle, *extra, version="8.6.2"):
    argv = ["build-engine", str(bundle), "--print-trtexec", *(["--trt-version", version] if version else []), *extra]
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def _register_argv(err: str) -> list[str]:
    assert len(err.strip().splitlines()) == 1, err
    return shlex.split(err[err.index(": ringfold build-engine ") + 2 :])  # "…registered on the device: <command>"


@pytest.fixture
def gpu(monkeypatch):
    """What this machine's GPU looks like to --print-trtexec (None: no CUDA, no nvidia-smi)."""

    def set_gpu(value):
        monkeypatch.setattr(trt_cuda, "detect_gpu", lambda: value)

    set_gpu(("NVIDIA Jetson AGX Orin", "8.7"))
    return set_gpu


def test_print_trtexec_line_round_trips_through_a_shell(tiny_bundle, tmp_path, capsys, gpu):
    bundle = _copy(tiny_bundle, tmp_path / "my bundles" / "pets v2")
    cache = tmp_path / "cache dir" / "timing.cache"
    code, out, err = _print(capsys, bundle, "--batch", "1,4,8", "--timing-cache", str(cache), "--workspace", "512")
    assert code == 0 and len(out.strip().splitlines()) == 1
    line = out.strip()
    assert "<" not in line and ">" not in line and "'" in line  # paths with spaces are quoted
    sha = load_bundle(bundle).model_sha256("fp32")[:12]
    engine = bundle / "engines" / f"model-fp16-trt8.6-nvidia-jetson-agx-orin-sm87-b1-4-8-{sha}.engine"
    assert shlex.split(line) == [
        "trtexec",
        f"--onnx={bundle / 'model.onnx'}",
        f"--saveEngine={engine}",
        "--minShapes=image:1x3x64x64",
        "--optShapes=image:4x3x64x64",
        "--maxShapes=image:8x3x64x64",
        "--memPoolSize=workspace:512",
        "--fp16",
        "--noTF32",
        f"--timingCacheFile={cache}",
        "--profilingVerbosity=detailed",
        "--skipInference",
    ]
    register = _register_argv(err)
    assert register == ["ringfold", "build-engine", str(bundle), "--precision", "fp16", "--register", str(engine)]
    args = build_parser().parse_args(register[1:])  # the next step is a valid command
    assert args.register == str(engine) and args.precision == "fp16"


def test_print_trtexec_without_a_gpu_names_the_engine_without_it(tiny_bundle, capsys, gpu, monkeypatch):
    gpu(None)
    monkeypatch.setattr("ringfold.commands.installed_trt_version", lambda: None)
    code, out, err = _print(capsys, tiny_bundle, version=None)
    assert code == 0
    sha = load_bundle(tiny_bundle).model_sha256("fp32")[:12]
    assert f"--saveEngine={tiny_bundle.absolute() / 'engines'}/model-fp16-trt10.3-b1-8-16-{sha}.engine" in out
    assert "TensorRT 10.3 assumed" in err and "no GPU seen here" in err and "--register" in _register_argv(err)
    assert err.startswith("ringfold build-engine: trtexec writes no sidecar")


def test_print_trtexec_for_another_device_takes_gpu_and_sm(tiny_bundle, capsys, monkeypatch):
    def no_detection():
        raise AssertionError("--gpu/--sm given: nothing to detect")

    monkeypatch.setattr(trt_cuda, "detect_gpu", no_detection)
    code, out, err = _print(capsys, tiny_bundle, "--gpu", "Orin", "--sm", "8.7", version="10.3.0")
    assert code == 0 and "-trt10.3-orin-sm87-b1-8-16-" in out and "no GPU" not in err


def test_print_trtexec_asks_nvidia_smi_when_cuda_cannot_say(tiny_bundle, tmp_path, capsys, monkeypatch):
    def no_cuda(device=0):
        raise RingfoldError("no libcudart")

    monkeypatch.setattr(trt_cuda, "cuda_device", no_cuda)
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text("#!/bin/sh\necho 'NVIDIA GeForce RTX 4090, 8.9'\n")
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{smi.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    code, out, _ = _print(capsys, tiny_bundle, version="10.3")
    assert code == 0 and "-nvidia-geforce-rtx-4090-sm89-" in out


@pytest.mark.parametrize(
    "text,expected",
    [
        ("NVIDIA GeForce RTX 4090, 8.9\n", ("NVIDIA GeForce RTX 4090", "8.9")),
        ("NVIDIA A100-SXM4-80GB, 8.0\nNVIDIA A100-SXM4-80GB, 8.0\n", ("NVIDIA A100-SXM4-80GB", "8.0")),
        ("Orin (nvgpu), [N/A]\n", None),  # Jetson's nvidia-smi does not report it
        ("", None),
        ("garbage", None),
    ],
)
def test_nvidia_smi_output_is_read_or_ignored(text, expected):
    assert parse_nvidia_smi(text) == expected


def test_print_trtexec_per_tensorrt_version(tiny_bundle, capsys, gpu):
    code, out, err = _print(capsys, tiny_bundle, "--precision", "fp32", "--strongly-typed", version="8.6.2")
    assert code == 2 and out == "" and "--strongly-typed needs TensorRT 10" in err and len(err.splitlines()) == 1
    code, out, err = _print(capsys, tiny_bundle, "--precision", "fp32", "--strongly-typed", version="10.3")
    argv = shlex.split(out)
    assert code == 0 and "--stronglyTyped" in argv and "--fp16" not in argv and "-trt10.3-" in out
    assert "--strongly-typed" in _register_argv(err)
    code, out, err = _print(capsys, tiny_bundle, "--precision", "int8", "--calibrator", "entropy", "--calib", ".")
    assert code == 2 and "trtexec cannot calibrate" in err and len(err.splitlines()) == 1


def test_print_trtexec_pins_the_onnx_nodes_by_name(tiny_bundle, capsys, gpu):
    code, out, _ = _print(capsys, tiny_bundle, "--fp32-layers")
    argv = shlex.split(out)
    layers = next(a for a in argv if a.startswith("--layerPrecisions=")).split("=", 1)[1].split(",")
    assert code == 0 and f"{LN}:fp32" in layers and "/visual/transformer/resblocks.0/attn/Softmax:fp32" in layers
    assert "--precisionConstraints=obey" in argv


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--print-trtexec", "--gpu", "Orin"], "--gpu and --sm go together"),
        (["--print-trtexec", "--sm", "87"], "is not a compute capability"),
        (["--print-trtexec", "--gpu", "  ", "--sm", "8.7"], "is not a GPU name"),
        (["--print-trtexec", "--trt-version", "8.5.2"], "older than TensorRT 8.6"),
        (["--print-trtexec", "--trt-version", "ten"], "is not a TensorRT version"),
        (["--gpu", "Orin", "--sm", "8.7"], "describe the target of --print-trtexec"),
        (["--trt-version", "10.3"], "describe the target of --print-trtexec"),
        (["--print-trtexec", "--register", "x.engine"], "not allowed with argument"),
    ],
)
def test_print_trtexec_values_are_checked(tiny_bundle, capsys, args, needle):
    try:
        code = main(["build-engine", str(tiny_bundle), *args])
    except SystemExit as exc:  # refused by the parser
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


def test_gpu_queries_never_raise_on_a_machine_without_cuda(monkeypatch):
    monkeypatch.setenv("PATH", "")
    assert isinstance(trt_cuda.cuda_device_count(), int)
    found = trt_cuda.detect_gpu()
    assert found is None or (isinstance(found[0], str) and "." in found[1])


@pytest.mark.parametrize("count, calib_min, needle", [(3, 32, "3 image(s), fewer than the 32"), (0, 1, "0 image(s)")])
def test_calibrator_folder_is_checked_before_a_build(fake, tmp_path, demo_data, count, calib_min, needle):
    folder = tmp_path / "calib"
    folder.mkdir()
    for src in sorted((demo_data / "train").rglob("*.png"))[:count]:
        (folder / src.name).write_bytes(src.read_bytes())
    options = BuildOptions("int8", (1, 1, 1), calibrator="entropy", calib=str(folder), calib_min=calib_min)
    with pytest.raises(RingfoldError, match=re.escape(needle)):
        plan_build(fake("fp32"), options, "8.6")
    with pytest.raises(RingfoldError, match="no such folder"):
        plan_build(fake("fp32"), BuildOptions("int8", calibrator="entropy", calib=str(tmp_path / "typo")), "8.6")


def test_calibrator_refuses_an_undecodable_image_before_a_build(fake, tmp_path, demo_data):
    folder = tmp_path / "calib"
    shutil.copytree(demo_data / "train", folder)
    (folder / "broken.png").write_bytes(b"not a png")
    options = BuildOptions("int8", (1, 1, 1), calibrator="entropy", calib=str(folder), calib_min=8)
    with pytest.raises(RingfoldError, match="broken.png"):
        plan_build(fake("fp32"), options, "8.6")
