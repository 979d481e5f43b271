"""``ringfold build-engine``: a TensorRT engine from the bundle's ONNX, built on the target device.

Two steps, so that what is built can be read before anything is built:

1. :func:`plan_build` turns the command's options and the bundle into a
   :class:`BuildPlan` — plain values: which ONNX, FP16/INT8 flags, the one
   optimisation profile of the batch axis, workspace bytes, timing cache,
   the layers pinned to fp32, the calibration cache. Every refusal (bad
   batch, ``--strongly-typed`` on 8.6, ``--calibrator`` on 10.x, no int8
   model) happens here, without TensorRT.
2. :func:`polygraphy_loaders` turns a plan into Polygraphy loaders
   (``NetworkFromOnnxPath`` → ``PostprocessNetwork`` for the fp32 pins →
   ``CreateConfig`` → ``EngineBytesFromNetwork``). Polygraphy, NVIDIA's
   maintained layer over the TensorRT Python API, keeps up with the API
   changes between 8.6 (JetPack 6.0) and 10.x (JetPack 6.1/6.2, desktop);
   constructing its loaders does not import TensorRT, so the configuration
   is tested on machines without it.

ringfold keeps what is its own: the engine key and file name, the refusal
of foreign engines before deserializing (trt_engine), the sidecar and
``engines/index.json``, whole-or-nothing writes of the engine, the timing
cache and the calibration cache.

INT8 comes from the bundle's QDQ ONNX (explicit quantization, any version);
the legacy entropy calibrator (implicit quantization) is offered for 8.6
only, where it is not deprecated. Strongly typed networks (10.x,
``--strongly-typed``) take every precision from the ONNX types, so an fp16
engine is then built from the bundle's fp16 graph, not with the FP16 flag.

The same plan prints as a trtexec command (:func:`trtexec_argv`), and an
engine trtexec built is taken into the bundle by :func:`register_engine`.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ringfold.atomic import atomic_path, write_bytes
from ringfold.errors import RingfoldError

from .precision_policy import FP32_OPS, FP32_TRT_LAYER_TYPES
from .trt_engine import (
    CALIBRATION_CACHE,
    MIN_TRT,
    EngineKey,
    LiveTrtEnvironment,
    current_key,
    engine_dir,
    fp32_layer_names,
    parse_version,
    record_engine,
    require_trt_stack,
    run_polygraphy,
)

ENGINE_PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class BuildOptions:
    precision: str = "fp16"
    batch: tuple[int, int, int] = (1, 8, 16)
    workspace_mib: int = 1024
    timing_cache: Path | None = None
    fp32_layers: bool = False
    strongly_typed: bool = False
    calibrator: str | None = None  # "entropy": implicit INT8 calibration (TensorRT 8.6 only)
    calib: str | None = None
    calib_cache: Path | None = None


# ------------------------------------------------------------------------------------------------ plan
@dataclass(frozen=True)
class Fp32Layers:
    """The layers ``--fp32-layers`` keeps in fp32 (compute precision and output type).

    What is kept is :mod:`~ringfold.runtime.precision_policy`'s, the same the fp16 export keeps.
    A layer is pinned when its TensorRT type is one of ``layer_types``, when its name contains
    one of the ONNX ``op_types`` (exporters name nodes ``…/LayerNormalization``), or when it
    carries the name of one of the ONNX nodes in ``names`` (the parser names layers after their
    node). ``names`` is None when the ``onnx`` package is not installed to list them.
    """

    layer_types: tuple[str, ...] = FP32_TRT_LAYER_TYPES
    op_types: tuple[str, ...] = FP32_OPS
    names: tuple[str, ...] | None = ()


@dataclass(frozen=True)
class CalibrationPlan:
    """Implicit INT8 calibration (TensorRT 8.6): batches of ``batch`` images, the cache read and rewritten."""

    images: tuple[Path, ...]
    batch: int
    cache: Path
    input_name: str
    preprocess: Any = field(repr=False)  # the bundle's PreprocessConfig: the runtime's own preprocessing


@dataclass(frozen=True)
class BuildPlan:
    """Everything a TensorRT build is given, as plain values (see the module docstring)."""

    onnx: Path
    precision: str  # the engine's precision, as its key records it
    trt_version: str  # the TensorRT the plan is for
    #: one optimisation profile: (input name, min shape, opt shape, max shape) per input
    profile: tuple[tuple[str, tuple[int, ...], tuple[int, ...], tuple[int, ...]], ...]
    fp16: bool
    int8: bool
    source_kind: str = "fp32"  # which of the bundle's variants ``onnx`` is
    onnx_sha256: str | None = None
    strongly_typed: bool = False
    workspace_bytes: int | None = None  # None: TensorRT's default (all device memory)
    timing_cache: Path | None = None
    fp32_layers: Fp32Layers | None = None
    calibration: CalibrationPlan | None = None

    @property
    def batch(self) -> tuple[int, int, int]:
        """(min, opt, max) of the first input's batch axis."""
        _, lo, opt, hi = self.profile[0]
        return lo[0], opt[0], hi[0]

    @property
    def precision_constraints(self) -> str | None:
        """``"obey"`` when layers are pinned: TensorRT must not move a pinned layer back to fp16."""
        return "obey" if self.fp32_layers is not None else None


def engine_sources(bundle, precision: str) -> list[str]:
    """The bundle variants an engine of ``precision`` may have been built from, most usual first."""
    if precision not in ENGINE_PRECISIONS:
        raise RingfoldError(
            f"--precision {precision}: TensorRT engines are fp32, fp16 or int8 "
            "(int8-dynamic is for ONNX Runtime on CPU); pick one of those"
        )
    kinds = {"fp32": ["fp32"], "fp16": ["fp32", "fp16"], "int8": ["int8", "fp32"]}[precision]
    return [k for k in kinds if k in bundle.variants]


def source_variant(bundle, precision: str, calibrator: str | None = None, strongly_typed: bool = False) -> str:
    """Which of the bundle's ONNX graphs the engine is built from.

    Weakly typed (the default): the fp32 graph with the FP16 flag for fp16, the QDQ graph for
    int8 (or the fp32 graph with ``--calibrator``). Strongly typed: the graph whose types are
    the precision — the fp16 graph for fp16, the QDQ graph for int8.
    """
    if precision not in ENGINE_PRECISIONS:
        engine_sources(bundle, precision)  # raises the one-line refusal
    if precision == "int8" and calibrator is None:
        if "int8" not in bundle.variants:
            raise RingfoldError(
                f"{bundle.path}: no int8 (QDQ) model; re-export with --precision int8 --calib DIR, "
                "or pass --calibrator entropy --calib DIR (TensorRT 8.6)"
            )
        return "int8"
    if precision == "fp16" and strongly_typed:
        if "fp16" not in bundle.variants:
            raise RingfoldError(
                f"{bundle.path}: no fp16 model for a strongly typed fp16 engine; re-export with --precision fp16, "
                "or drop --strongly-typed to build from the fp32 model with the FP16 flag"
            )
        return "fp16"
    return "fp32"


def source_onnx(bundle, precision: str, calibrator: str | None) -> tuple[str, Path]:
    """(variant, path) of the ONNX a weakly typed engine of ``precision`` is built from."""
    kind = source_variant(bundle, precision, calibrator)
    return kind, bundle.model_path(kind)


def _input_chw(bundle) -> tuple[str, tuple[int, ...]]:
    spec = bundle.manifest.input
    rest = tuple(spec.shape[1:])
    if not rest or not all(isinstance(d, int) for d in rest):
        raise RingfoldError(
            f"{bundle.path}: input {spec.name} has dynamic dimensions {list(spec.shape)} besides the batch; "
            "re-export the bundle (TensorRT's profile covers only the batch axis)"
        )
    return spec.name, rest


def _calibration(bundle, options: BuildOptions, input_name: str, batch: int) -> CalibrationPlan:
    from .images import list_images

    if not options.calib:
        raise RingfoldError("--calibrator entropy needs --calib DIR (images, preprocessed like the runtime's input)")
    paths = list_images([options.calib])
    if len(paths) < batch:
        raise RingfoldError(
            f"{options.calib}: {len(paths)} images; INT8 calibration needs at least one batch of {batch} "
            "(the --batch opt size); add images or lower --batch"
        )
    usable = len(paths) // batch * batch
    cache = options.calib_cache or engine_dir(bundle.path) / CALIBRATION_CACHE
    return CalibrationPlan(tuple(paths[:usable]), batch, Path(cache), input_name, bundle.preprocess)


def plan_build(bundle, options: BuildOptions, trt_version: str) -> BuildPlan:
    """The build for ``bundle`` with ``options`` on TensorRT ``trt_version``; every refusal is raised here.

    Reads the bundle's manifest, lists the ONNX node names for ``--fp32-layers`` and the
    calibration images; never imports TensorRT or Polygraphy.
    """
    version = parse_version(trt_version)
    if version < MIN_TRT:
        raise RingfoldError(f"TensorRT {trt_version} is older than 8.6, the oldest ringfold builds for")
    lo, opt, hi = options.batch
    if not 1 <= lo <= opt <= hi:
        raise RingfoldError(f"--batch {lo},{opt},{hi} invalid; need 1 <= min <= opt <= max")
    precision = options.precision
    engine_sources(bundle, precision)  # fp32 / fp16 / int8 only
    if options.strongly_typed:
        if version < (10,):
            raise RingfoldError(
                f"--strongly-typed needs TensorRT 10 (strongly typed networks do not exist in {trt_version}); "
                "drop --strongly-typed"
            )
        if options.fp32_layers:
            raise RingfoldError(
                "--fp32-layers has no effect on a strongly typed network (the ONNX types decide every layer); "
                "drop one of the two"
            )
        if options.calibrator:
            raise RingfoldError("--calibrator calibrates a weakly typed network; drop --strongly-typed or --calibrator")
    if options.calibrator:
        if precision != "int8":
            raise RingfoldError("--calibrator is for --precision int8; drop it for fp32/fp16 engines")
        if version >= (10,):
            raise RingfoldError(
                f"--calibrator entropy is for TensorRT 8.6 (implicit INT8 calibration is deprecated in {trt_version}); "
                "build from the bundle's QDQ int8 model: drop --calibrator"
            )
    if options.workspace_mib < 1:
        raise RingfoldError(f"--workspace {options.workspace_mib}: give the builder's workspace in MiB, 1 or more")
    if options.timing_cache is not None and options.timing_cache.exists() and not options.timing_cache.is_file():
        raise RingfoldError(f"{options.timing_cache}: --timing-cache must name a file, not a folder")

    kind = source_variant(bundle, precision, options.calibrator, options.strongly_typed)
    onnx = bundle.model_path(kind)
    name, rest = _input_chw(bundle)
    pins = None
    if options.fp32_layers:
        names = fp32_layer_names(onnx)
        pins = Fp32Layers(names=None if names is None else tuple(names))
    return BuildPlan(
        onnx=onnx,
        precision=precision,
        trt_version=trt_version,
        profile=((name, (lo, *rest), (opt, *rest), (hi, *rest)),),
        fp16=precision in ("fp16", "int8") and not options.strongly_typed,
        int8=precision == "int8" and not options.strongly_typed,
        source_kind=kind,
        onnx_sha256=bundle.model_sha256(kind),
        strongly_typed=options.strongly_typed,
        workspace_bytes=options.workspace_mib << 20,
        timing_cache=options.timing_cache,
        fp32_layers=pins,
        calibration=_calibration(bundle, options, name, opt) if options.calibrator else None,
    )


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
        from .trt_engine import import_tensorrt

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
        from .images import load_image
        from .preprocess import preprocess_batch

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
        from .trt_engine import import_tensorrt

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
    verbosity, so ``polygraphy inspect model ENGINE --show layers`` can read it).
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
    kwargs: dict[str, Any] = {"fp16": plan.fp16, "int8": plan.int8, "profiles": [profile]}
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


def build_engine(bundle, options: BuildOptions, env=None, log=print) -> Path:
    """Build, write and record the engine for ``options``; returns its path in ``BUNDLE/engines/``."""
    trt = require_trt_stack()
    env = env or LiveTrtEnvironment()
    plan = plan_build(bundle, options, trt.__version__)
    key = current_key(plan.onnx_sha256 or "", plan.precision, plan.batch, env)  # the GPU, before a long build
    out = engine_dir(bundle.path) / key.file_name()
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
    if loaders.pins is not None and loaders.pins.pinned is not None:
        log(f"pinned {loaders.pins.pinned} LayerNorm/Softmax/reduction/head layers to fp32")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(out, bytes(serialized))
    record_engine(out, key, _sidecar_extra(plan, time.time() - t0, "ringfold build-engine (Polygraphy)"))
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
    if seconds is not None:
        extra["build_seconds"] = seconds
    return extra


# ------------------------------------------------------------------------------------------- trtexec
#: what ``--print-trtexec`` assumes without TensorRT installed and without ``--trt-version``: JetPack 6.1/6.2
DEFAULT_TRT_VERSION = "10.3"
_SPEC_UNSAFE = (",", ":")  # trtexec splits shape and layer specs at these


def trtexec_argv(plan: BuildPlan, engine_path: str | Path) -> list[str]:
    """The trtexec command that builds what ``plan`` builds, one argument per element (for ``shlex.join``).

    Same ONNX, profile, workspace, precision flags, fp32 pins and timing cache; ``--noTF32``
    and ``--profilingVerbosity=detailed`` match Polygraphy's defaults; ``--skipInference``
    stops trtexec after writing the engine. ``--memPoolSize`` is given in MiB without a
    suffix, the unit both 8.6 and 10.x read by default. ``--stronglyTyped`` exists from
    10.0 (the plan refuses it for 8.6). trtexec cannot calibrate from an image folder, so a
    plan with implicit calibration is refused. trtexec pins layers by name only, so
    ``--fp32-layers`` becomes the ONNX node names of the nodes the precision policy keeps fp32;
    the Polygraphy build also pins by TensorRT layer type, which catches the layers a node
    was split into.
    """
    if plan.calibration is not None:
        raise RingfoldError(
            "--print-trtexec: trtexec cannot calibrate from an image folder; build the calibrated engine with "
            "`ringfold build-engine --calibrator entropy`, or use the bundle's QDQ int8 model (drop --calibrator)"
        )

    def spec(name: str, shape: tuple[int, ...]) -> str:
        return f"{name}:{'x'.join(str(d) for d in shape)}"

    argv = ["trtexec", f"--onnx={plan.onnx}", f"--saveEngine={engine_path}"]
    for name, lo, opt, hi in plan.profile:
        if any(c in name for c in _SPEC_UNSAFE):
            raise RingfoldError(f"--print-trtexec: input name {name!r} holds ',' or ':', which trtexec cannot parse")
        argv += [f"--minShapes={spec(name, lo)}", f"--optShapes={spec(name, opt)}", f"--maxShapes={spec(name, hi)}"]
    if plan.workspace_bytes is not None:
        argv.append(f"--memPoolSize=workspace:{max(1, plan.workspace_bytes >> 20)}")
    if plan.strongly_typed:
        argv.append("--stronglyTyped")
    if plan.fp16:
        argv.append("--fp16")
    if plan.int8:
        argv.append("--int8")  # the QDQ graph carries its scales: no calibration cache
    argv.append("--noTF32")
    if plan.fp32_layers is not None:
        names = plan.fp32_layers.names
        if names is None:
            raise RingfoldError(
                "--print-trtexec --fp32-layers lists the fp32 node names (LayerNorm, Softmax, ...) with onnx: "
                "`pip install onnx`, or build with `ringfold build-engine --fp32-layers`"
            )
        bad = [n for n in names if any(c in n for c in _SPEC_UNSAFE)]
        if bad:
            raise RingfoldError(
                f"--print-trtexec: node name {bad[0]!r} holds ',' or ':', which trtexec's --layerPrecisions "
                "cannot parse; build with `ringfold build-engine --fp32-layers`"
            )
        if names:
            pins = ",".join(f"{n}:fp32" for n in names)
            argv += ["--precisionConstraints=obey", f"--layerPrecisions={pins}", f"--layerOutputTypes={pins}"]
    if plan.timing_cache is not None:
        argv.append(f"--timingCacheFile={plan.timing_cache}")
    argv += ["--profilingVerbosity=detailed", "--skipInference"]
    return argv


@dataclass(frozen=True)
class TrtexecRecipe:
    """``--print-trtexec``: the trtexec argv, and the ringfold argv that takes its engine into the bundle."""

    argv: list[str]
    register_argv: list[str]
    engine: Path
    gpu_known: bool


def trtexec_recipe(bundle, options: BuildOptions, trt_version: str, gpu: tuple[str, str] | None) -> TrtexecRecipe:
    """The trtexec line for ``options`` on TensorRT ``trt_version``, writing into ``BUNDLE/engines/``.

    The engine file name comes from the same :class:`EngineKey` as ``build-engine``'s; with
    ``gpu`` unknown (no CUDA here, no ``--gpu/--sm``) the name leaves the GPU part out. Either
    way trtexec writes no sidecar, so ringfold would not trust the engine yet: ``register_argv``
    is the command that checks it on the device and records it (and renames it to its full
    key name). Paths are absolute, so both lines work from any directory.
    """
    if options.calibrator:
        raise RingfoldError(
            "--print-trtexec: trtexec cannot calibrate from an image folder; build the calibrated engine with "
            "`ringfold build-engine --calibrator entropy`, or use the bundle's QDQ int8 model (drop --calibrator)"
        )
    plan = plan_build(bundle, options, trt_version)
    plan = replace(plan, onnx=plan.onnx.absolute())
    if plan.timing_cache is not None:
        plan = replace(plan, timing_cache=plan.timing_cache.absolute())
    device, cc = gpu if gpu else ("", "")
    key = EngineKey(plan.onnx_sha256 or "", trt_version, device, cc, plan.precision, plan.batch)
    engine = engine_dir(bundle.path).absolute() / key.file_name()
    register = ["ringfold", "build-engine", str(bundle.path.absolute()), "--precision", plan.precision]
    if plan.strongly_typed:
        register.append("--strongly-typed")
    register += ["--register", str(engine)]
    return TrtexecRecipe(trtexec_argv(plan, engine), register, engine, gpu is not None)


# ------------------------------------------------------------------------------------------ register
def register_engine(bundle, engine_file: Path, options: BuildOptions, env=None) -> Path:
    """Take an engine trtexec built into the bundle: check it here, name it by its key, record it.

    The engine is deserialized with this machine's TensorRT (an engine from another TensorRT
    version is refused there), its inputs and outputs are checked against the manifest, and its
    batch profile is read from the engine itself. It is moved to its key's name inside
    ``BUNDLE/engines/`` (copied, when it lies elsewhere) and gets its sidecar and index entry, so
    ``--backend tensorrt`` finds and verifies it like an engine ringfold built.
    """
    from .bundle import check_model_io
    from .trt_backend import engine_io, load_engine

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
    if source.resolve().parent == directory.resolve():
        if source.resolve() != out.resolve():
            source.replace(out)  # a rename inside engines/: atomic, and no stray file left there
    else:
        write_bytes(out, data)
    record_engine(out, key, _sidecar_extra(plan, None, f"trtexec (registered from {source.name})"))
    return out
