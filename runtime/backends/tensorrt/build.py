"""``ringfold build-engine``: a TensorRT engine from the bundle's ONNX, built on the target device.

The second step after :func:`~.plan.plan_build`: :func:`polygraphy_loaders` turns a plan into
Polygraphy loaders (``NetworkFromOnnxPath`` → ``PostprocessNetwork`` for the fp32 pins →
``CreateConfig`` → ``EngineBytesFromNetwork``), and :func:`build_engine` runs them. Polygraphy,
NVIDIA's maintained layer over the TensorRT Python API, keeps up with the API changes between 8.6
(JetPack 6.0), 10.x (JetPack 6.1/6.2, 7.2) and 11.x (strongly typed only); constructing its loaders does not import
TensorRT, so the configuration is tested on machines without it.

ringfold keeps what is its own: the engine key and file name, the refusal of foreign engines
before deserializing (:mod:`.engines`), the sidecar and ``engines/index.json``
(:mod:`ringfold.runtime.bundle.engines`), whole-or-nothing writes of the engine, the timing cache
and the calibration cache. An engine trtexec built from the same
plan (:mod:`.trtexec`) is taken into the bundle by :func:`register_engine`.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ringfold.atomic import atomic_path, write_bytes
from ringfold.errors import RingfoldError
from ringfold.ownership import record_files
from ringfold.runtime.bundle.engines import check_engine_slot, engine_dir, record_engine
from ringfold.runtime.bundle.loader import Bundle
from ringfold.runtime.bundle.manifest import check_model_io
from ringfold.runtime.pixels.images import load_image
from ringfold.runtime.pixels.preprocess import preprocess_batch

from .engines import LiveTrtEnvironment, current_key
from .plan import BuildOptions, BuildPlan, CalibrationPlan, Fp32Layers, plan_build
from .runner import engine_io, load_engine
from .stack import import_tensorrt, require_trt_stack, run_polygraphy


# ------------------------------------------------------------------------------------------ fp32 pins
def pin_fp32_layers(network, spec: Fp32Layers, trt) -> int:
    """Pin the layers ``spec`` selects to fp32 (compute and outputs); returns how many were pinned.

    Layers with a non-float output (shape arithmetic on int32/int64, bool masks) are left alone:
    a float precision on them would not build.
    """
    kinds = {getattr(trt.LayerType, t) for t in spec.layer_types if hasattr(trt.LayerType, t)}
    names = set(spec.names or ())
    floats = {trt.float32, trt.float16}
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        selected = layer.type in kinds or layer.name in names or any(op in layer.name for op in spec.op_types)
        outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if not selected or not outputs or any(t.dtype not in floats for t in outputs):
            continue
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            layer.set_output_type(j, trt.float32)
        pinned += 1
    return pinned


class PinFp32Layers:
    """Polygraphy ``PostprocessNetwork`` step for ``--fp32-layers``; ``pinned`` counts after the build."""

    __name__ = "ringfold --fp32-layers"

    def __init__(self, spec: Fp32Layers) -> None:
        self.spec = spec
        self.pinned: int | None = None

    def __call__(self, network) -> None:
        self.pinned = pin_fp32_layers(network, self.spec, import_tensorrt())


# -------------------------------------------------------------------------------------- calibration
class CalibrationBatches:
    """Polygraphy ``Calibrator`` data: ``{input: (batch, 3, H, W) float32}``, one batch in memory at a time.

    Re-iterable (the calibrator rewinds it); images go through the runtime's preprocessing,
    the same the engine's inputs will get.
    """

    def __init__(self, plan: CalibrationPlan) -> None:
        self.plan = plan

    def __len__(self) -> int:
        return len(self.plan.images) // self.plan.batch

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        step = self.plan.batch
        for i in range(0, len(self) * step, step):
            chunk = self.plan.images[i : i + step]
            yield {self.plan.input_name: preprocess_batch([load_image(p) for p in chunk], self.plan.preprocess)}


# ------------------------------------------------------------------------------------------- loaders
class BuilderConfig:
    """Polygraphy's ``CreateConfig`` plus the two settings that need TensorRT's own objects.

    ``CreateConfig`` only stores its arguments until the builder asks for the config, but two of
    ours cannot even be written down without importing tensorrt: the workspace limit is keyed by
    ``trt.MemoryPoolType.WORKSPACE``, and Polygraphy's ``Calibrator`` subclasses
    ``trt.IInt8EntropyCalibrator2`` when it is constructed. They wait here as plain values and are
    put on the ``CreateConfig`` when the builder calls this object — so the whole configuration
    is constructed and inspected on machines without TensorRT.
    """

    def __init__(self, create_config, workspace_bytes: int | None, calibration: CalibrationPlan | None) -> None:
        self.create_config = create_config
        self.workspace_bytes = workspace_bytes
        self.calibration = calibration

    def resolve(self, trt) -> None:
        """Fill in the TensorRT-typed settings (``trt``: the tensorrt module)."""
        if self.workspace_bytes is not None:
            self.create_config.memory_pool_limits = {trt.MemoryPoolType.WORKSPACE: self.workspace_bytes}
        if self.calibration is not None and self.create_config.calibrator is None:
            from polygraphy.backend.trt import Calibrator

            self.create_config.calibrator = Calibrator(
                CalibrationBatches(self.calibration), cache=str(self.calibration.cache)
            )

    def __call__(self, builder, network):
        self.resolve(import_tensorrt())
        return self.create_config(builder, network)


@dataclass
class TrtLoaders:
    """The Polygraphy loaders of one plan; nothing is parsed or built until one is called."""

    plan: BuildPlan
    network: Any  # NetworkFromOnnxPath, wrapped in PostprocessNetwork when layers are pinned
    create_config: Any  # polygraphy CreateConfig
    config: BuilderConfig
    pins: PinFp32Layers | None = None

    def engine_bytes(self, save_timing_cache=None):
        """``EngineBytesFromNetwork``: the serialized engine (``save_timing_cache``: where the updated cache goes)."""
        from polygraphy.backend.trt import EngineBytesFromNetwork

        return EngineBytesFromNetwork(self.network, config=self.config, save_timing_cache=save_timing_cache)

    def engine(self):
        """``EngineFromNetwork``: the engine itself, for a runner that uses it at once (``ringfold check``)."""
        from polygraphy.backend.trt import EngineFromNetwork

        return EngineFromNetwork(self.network, config=self.config)


def polygraphy_loaders(plan: BuildPlan) -> TrtLoaders:
    """Polygraphy loaders for ``plan``; imports Polygraphy, not TensorRT.

    Only the arguments a plan sets are passed, so the loaders stay those of Polygraphy's
    defaults otherwise (TF32 off: an fp32 engine computes in fp32; DETAILED profiling
    verbosity, so ``polygraphy inspect model ENGINE --show layers`` can read it). A strongly
    typed plan (the default on TensorRT 10 and 11) passes ``strongly_typed=True`` to the network
    loader and no precision flag at all: TensorRT 11 has no FP16/INT8 builder flags.
    """
    from polygraphy.backend.trt import CreateConfig, NetworkFromOnnxPath, Profile

    if plan.strongly_typed:
        network = NetworkFromOnnxPath(str(plan.onnx), strongly_typed=True)
    else:  # no keyword at all: the plain loader every Polygraphy version has
        network = NetworkFromOnnxPath(str(plan.onnx))
    pins = None
    if plan.fp32_layers is not None:
        from polygraphy.backend.trt import PostprocessNetwork

        pins = PinFp32Layers(plan.fp32_layers)
        network = PostprocessNetwork(network, pins, name=PinFp32Layers.__name__)
    profile = Profile()
    for name, lo, opt, hi in plan.profile:
        profile.add(name, min=lo, opt=opt, max=hi)
    kwargs: dict[str, Any] = {"profiles": [profile]}
    for flag in ("fp16", "int8"):  # weakly typed only: TensorRT 11 has no such builder flags
        if getattr(plan, flag):
            kwargs[flag] = True
    if plan.precision_constraints:
        kwargs["precision_constraints"] = plan.precision_constraints
    if plan.timing_cache is not None and plan.timing_cache.is_file():
        kwargs["load_timing_cache"] = str(plan.timing_cache)
    create_config = CreateConfig(**kwargs)
    config = BuilderConfig(create_config, plan.workspace_bytes, plan.calibration)
    return TrtLoaders(plan, network, create_config, config, pins)


# --------------------------------------------------------------------------------------------- build
@contextlib.contextmanager
def _staged(target: Path | None) -> Iterator[Path | None]:
    """A temporary copy of ``target`` for Polygraphy to read and rewrite in place of it.

    Polygraphy writes its caches with a plain ``open(path, "wb")``; the copy is moved over
    ``target`` only when the build succeeds, so a killed build never leaves half a cache.
    """
    if target is None:
        yield None
        return
    with atomic_path(target) as tmp:
        if target.is_file():
            shutil.copyfile(target, tmp)
        yield tmp


def build_engine(bundle: Bundle, options: BuildOptions, env=None, log=print) -> Path:
    """Build, write and record the engine for ``options``; returns its path in ``BUNDLE/engines/``."""
    trt = require_trt_stack()
    env = env or LiveTrtEnvironment()
    plan = plan_build(bundle, options, trt.__version__)
    key = current_key(plan.onnx_sha256 or "", plan.precision, plan.batch, env)  # the GPU, before a long build
    out = engine_dir(bundle.path) / key.file_name()
    check_engine_slot(out)  # before a long build: never overwrite an engine ringfold did not record
    t0 = time.time()
    calibration = plan.calibration
    with _staged(calibration.cache if calibration else None) as calib_tmp, tempfile.TemporaryFile() as cache_out:
        if calibration is not None and calib_tmp is not None:
            plan = replace(plan, calibration=replace(calibration, cache=calib_tmp))
        loaders = polygraphy_loaders(plan)
        serialized = run_polygraphy(
            loaders.engine_bytes(cache_out if plan.timing_cache else None),
            f"{plan.onnx}: TensorRT {trt.__version__} could not build an engine",
            f"see the TensorRT log above; `ringfold check {bundle.path}` lists ONNX the parser rejects",
        )
        if plan.timing_cache is not None:
            cache_out.seek(0)
            write_bytes(plan.timing_cache, cache_out.read())
    for note in plan.notes:
        log(f"note: {note}")
    if loaders.pins is not None and loaders.pins.pinned is not None:
        log(f"pinned {loaders.pins.pinned} LayerNorm/Softmax/reduction/head layers to fp32")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(out, bytes(serialized))
    record_engine(out, key, _sidecar_extra(plan, time.time() - t0, "ringfold build-engine (Polygraphy)"))
    cache = calibration.cache if calibration else None
    if cache is not None and Path(cache).parent.resolve() == out.parent.resolve():  # the cache ringfold wrote there
        record_files(out.parent, "ringfold build-engine", [Path(cache).name])
    return out


def _sidecar_extra(plan: BuildPlan, seconds: float | None, built_by: str) -> dict:
    import polygraphy

    extra = {
        "source_onnx": plan.onnx.name,
        "source_kind": plan.source_kind,
        "fp32_layers": plan.fp32_layers is not None,
        "strongly_typed": plan.strongly_typed,
        "built_by": built_by,
        "polygraphy_version": polygraphy.__version__,
    }
    if plan.notes:
        extra["notes"] = list(plan.notes)
    if seconds is not None:
        extra["build_seconds"] = seconds
    return extra


# ------------------------------------------------------------------------------------------ register
def register_engine(bundle: Bundle, engine_file: Path, options: BuildOptions, env=None) -> Path:
    """Take an engine trtexec built into the bundle: check it here, name it by its key, record it.

    The engine is deserialized with this machine's TensorRT (an engine from another TensorRT
    version is refused there), its inputs and outputs are checked against the manifest, and its
    batch profile is read from the engine itself. It is moved to its key's name inside
    ``BUNDLE/engines/`` (copied, when it lies elsewhere) and gets its sidecar and index entry, so
    ``--backend tensorrt`` finds and verifies it like an engine ringfold built.
    """
    if options.calibrator:
        raise RingfoldError("--register takes an engine trtexec built from the QDQ model; drop --calibrator")
    source = Path(engine_file)
    if not source.is_file():
        raise RingfoldError(f"{source}: no such engine file; pass the --saveEngine path trtexec wrote")
    trt = require_trt_stack()
    env = env or LiveTrtEnvironment()
    plan = plan_build(bundle, replace(options, fp32_layers=False), trt.__version__)
    data = source.read_bytes()
    engine = load_engine(data, source)
    inputs, outputs, profile = engine_io(engine)
    check_model_io(bundle.manifest, source, inputs, outputs)
    key = current_key(plan.onnx_sha256 or "", plan.precision, profile, env)
    directory = engine_dir(bundle.path)
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / key.file_name()
    if source.resolve() != out.resolve():
        check_engine_slot(out)
    if source.resolve().parent == directory.resolve():
        if source.resolve() != out.resolve():
            source.replace(out)  # a rename inside engines/: atomic, and no stray file left there
    else:
        write_bytes(out, data)
    record_engine(out, key, _sidecar_extra(plan, None, f"trtexec (registered from {source.name})"))
    return out
