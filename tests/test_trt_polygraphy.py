"""The TensorRT build through Polygraphy, without TensorRT: the build plan, the configuration Polygraphy is
given, every refusal, ringfold's own glue around the build (files written whole, sidecar, index), the runner's
batch handling, and the trtexec line ``--print-trtexec`` prints.

Polygraphy must be installed (it is pure Python); its loaders are constructed for real and inspected. Where
TensorRT itself would be called, a stand-in takes its place; the real builds are in test_trt.py (``-m trt``).
"""

from __future__ import annotations

import json
import re
import shutil
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

from ringfold.errors import RingfoldError  # noqa: E402
from ringfold.ownership import ownership_problem  # noqa: E402
from ringfold.runtime.backends.tensorrt import build as trt_build  # noqa: E402
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
from ringfold.runtime.backends.tensorrt.engines import find_engine  # noqa: E402
from ringfold.runtime.backends.tensorrt.plan import BuildOptions, Fp32Layers, plan_build  # noqa: E402
from ringfold.runtime.bundle.engines import read_sidecar, sidecar  # noqa: E402
from ringfold.runtime.bundle.loader import load_bundle  # noqa: E402
from tests import trt_stand_ins  # noqa: E402

SHAS, LN, FakeBundle = trt_stand_ins.SHAS, trt_stand_ins.LN, trt_stand_ins.FakeBundle


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
