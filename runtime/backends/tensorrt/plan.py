"""The plan of a TensorRT build: the command's options and the bundle as plain values, every refusal made.

``ringfold build-engine`` works in two steps so that what is built can be read before anything is
built. This module is the first: :func:`plan_build` turns the options and the bundle into a
:class:`BuildPlan` — which ONNX, FP16/INT8 flags, the one optimisation profile of the batch axis,
workspace bytes, timing cache, the layers pinned to fp32, the calibration cache. Every refusal (bad
batch, ``--strongly-typed`` on 8.6, ``--calibrator`` on 10.x, anything weakly typed on 11, no int8
model) happens here, without TensorRT or Polygraphy, so all of it is tested on machines that have
neither.

On TensorRT 10 and newer the build is strongly typed by default (:mod:`.versions`): every precision
comes from the ONNX types, so an fp16 engine is built from the bundle's fp16 graph (its fp32 islands
kept) and an int8 engine from its Q/DQ graph — ``int8-fp16`` (float parts fp16, for TensorRT) when the
bundle has it, else ``int8``, whose fp32 float parts make an int8+fp32 engine (the plan notes it).
TensorRT 8.6 builds weakly typed (FP16/INT8 flags; the legacy entropy calibrator, implicit
quantization, is offered there only). On 10.x ``--weakly-typed`` (or ``--fp32-layers``, which pins
layers of a weakly typed network) asks for the flags; 11.x has none, and asking is refused in one
line naming the strongly typed alternative.

The plan is carried out by Polygraphy (:mod:`.build`) or printed as a trtexec line
(:mod:`.trtexec`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ringfold.errors import RingfoldError
from ringfold.runtime.bundle.engines import CALIBRATION_CACHE, engine_dir, parse_version
from ringfold.runtime.bundle.loader import Bundle
from ringfold.runtime.bundle.precisions import ENGINE_PRECISIONS, TABLE
from ringfold.runtime.graph.precision_policy import FP32_OPS, FP32_TRT_LAYER_TYPES, fp32_layer_names
from ringfold.runtime.pixels.images import list_images, load_image
from ringfold.runtime.pixels.preprocess import PreprocessConfig

from .stack import MIN_TRT
from .versions import has_strong_typing, has_weak_typing, strongly_typed_only

#: the Q/DQ variant whose non-quantized parts are fp16: what a strongly typed int8 engine is built from
TRT_INT8_VARIANT = "int8-fp16"


@dataclass
class BuildOptions:
    precision: str = "fp16"
    batch: tuple[int, int, int] = (1, 8, 16)
    workspace_mib: int = 1024
    timing_cache: Path | None = None
    fp32_layers: bool = False
    strongly_typed: bool | None = None  # None: strongly typed on TensorRT 10+, weakly on 8.6 (see plan_build)
    calibrator: str | None = None  # "entropy": implicit INT8 calibration (TensorRT 8.6 only)
    calib: str | None = None
    calib_cache: Path | None = None
    calib_min: int = 32  # fewer images give ranges that do not hold on real inputs (--calib-min overrides)


@dataclass(frozen=True)
class Fp32Layers:
    """The layers ``--fp32-layers`` keeps in fp32 (compute precision and output type).

    What is kept is :mod:`~ringfold.runtime.graph.precision_policy`'s, the same the fp16 export keeps.
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
    preprocess: PreprocessConfig = field(repr=False)  # the bundle's: the runtime's own preprocessing


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
    notes: tuple[str, ...] = ()  # what the user should know about the engine (printed, never fatal)

    @property
    def batch(self) -> tuple[int, int, int]:
        """(min, opt, max) of the first input's batch axis."""
        _, lo, opt, hi = self.profile[0]
        return lo[0], opt[0], hi[0]

    @property
    def precision_constraints(self) -> str | None:
        """``"obey"`` when layers are pinned: TensorRT must not move a pinned layer back to fp16."""
        return "obey" if self.fp32_layers is not None else None


def engine_sources(bundle: Bundle, precision: str) -> list[str]:
    """The bundle variants an engine of ``precision`` may have been built from, most usual first.

    For int8 that includes :data:`TRT_INT8_VARIANT`, what the strongly typed build prefers.
    """
    if precision not in ENGINE_PRECISIONS:
        raise RingfoldError(
            f"--precision {precision}: TensorRT engines are fp32, fp16 or int8 "
            "(int8-dynamic is for ONNX Runtime on CPU); pick one of those"
        )
    sources = TABLE[precision].engine_sources
    if precision == "int8" and TRT_INT8_VARIANT not in sources:
        sources = (TRT_INT8_VARIANT, *sources)
    return [k for k in sources if k in bundle.variants]


def source_variant(bundle: Bundle, precision: str, calibrator: str | None = None, strongly_typed: bool = False) -> str:
    """Which of the bundle's ONNX graphs the engine is built from.

    Weakly typed: the fp32 graph with the FP16 flag for fp16, the QDQ graph for int8 (or the
    fp32 graph with ``--calibrator``). Strongly typed: the graph whose types are the precision —
    the fp16 graph for fp16, the int8-fp16 QDQ graph for int8 (the int8 one when it is absent).
    """
    if precision not in ENGINE_PRECISIONS:
        engine_sources(bundle, precision)  # raises the one-line refusal
    if precision == "int8" and calibrator is None:
        if strongly_typed and TRT_INT8_VARIANT in bundle.variants:
            return TRT_INT8_VARIANT
        if "int8" not in bundle.variants:
            raise RingfoldError(
                f"{bundle.path}: no int8 (QDQ) model; re-export with --precision int8 --calib DIR"
                + ("" if strongly_typed else ", or pass --calibrator entropy --calib DIR (TensorRT 8.6)")
            )
        return "int8"
    if precision == "fp16" and strongly_typed:
        if "fp16" not in bundle.variants:
            raise RingfoldError(
                f"{bundle.path}: no fp16 model for a strongly typed fp16 engine; re-export with --precision fp16 "
                "(on TensorRT 10.x --weakly-typed builds the fp32 model with the FP16 flag instead)"
            )
        return "fp16"
    return "fp32"


def resolve_typing(bundle: Bundle, options: BuildOptions, version: str) -> tuple[bool, tuple[str, ...]]:
    """(strongly typed?, notes) for ``options`` on TensorRT ``version``; refuses what that version lacks.

    8.6: weakly typed only. 11.x: strongly typed only — ``--weakly-typed``, ``--fp32-layers`` and
    ``--calibrator`` are refused, each naming what to do instead. 10.x: strongly typed unless asked
    otherwise (``--weakly-typed``, or ``--fp32-layers``, which pins layers of a weakly typed network);
    an fp16 build falls back to the FP16 flag, with a note, when the bundle has no fp16 model.
    """
    asked = options.strongly_typed
    if not has_strong_typing(version):
        if asked:
            raise RingfoldError(
                f"--strongly-typed needs TensorRT 10 (strongly typed networks do not exist in {version}); "
                "drop --strongly-typed"
            )
        return False, ()
    if not has_weak_typing(version):
        if asked is False:
            raise RingfoldError(strongly_typed_only("--weakly-typed", version, "drop it: the ONNX types decide"))
        if options.fp32_layers:
            raise RingfoldError(
                strongly_typed_only(
                    "--fp32-layers", version, "drop it: the fp16 model already keeps LayerNorm/Softmax/head in fp32"
                )
            )
        if options.calibrator:
            raise RingfoldError(
                strongly_typed_only("--calibrator", version, "drop it: int8 is built from the bundle's Q/DQ model")
            )
        return True, ()
    if asked is None:
        if options.fp32_layers or options.calibrator:
            return False, ()  # both are weakly typed features: asking for one asks for the flags
        if options.precision == "fp16" and "fp16" not in bundle.variants:
            note = "no fp16 model in the bundle: fp16 engine built weakly typed (fp32 model + FP16 flag)"
            return False, (note + "; re-export with --precision fp16 for the strongly typed build",)
        return True, ()
    return asked, ()


def _int8_note(kind: str, strongly: bool) -> tuple[str, ...]:
    if strongly and kind == "int8":
        return (
            "the bundle has no int8-fp16 model: TensorRT keeps the Q/DQ model's float parts in fp32, so the engine "
            "is int8+fp32 (may be slower than fp16); re-export adding int8-fp16 to --precision",
        )
    return ()


def _input_chw(bundle: Bundle) -> tuple[str, tuple[int, ...]]:
    spec = bundle.manifest.input
    rest = tuple(spec.shape[1:])
    if not rest or not all(isinstance(d, int) for d in rest):
        raise RingfoldError(
            f"{bundle.path}: input {spec.name} has dynamic dimensions {list(spec.shape)} besides the batch; "
            "re-export the bundle (TensorRT's profile covers only the batch axis)"
        )
    return spec.name, rest


def _calibration(bundle: Bundle, options: BuildOptions, input_name: str, batch: int) -> CalibrationPlan:
    if not options.calib:
        raise RingfoldError("--calibrator entropy needs --calib DIR (images, preprocessed like the runtime's input)")
    if not Path(options.calib).is_dir():
        raise RingfoldError(f"--calib {options.calib}: no such folder; pass a folder of calibration images")
    paths = list_images([options.calib])
    if len(paths) < options.calib_min:
        raise RingfoldError(
            f"--calib {options.calib}: {len(paths)} image(s), fewer than the {options.calib_min} INT8 calibration "
            f"needs; add images (a few hundred is typical), or pass --calib-min {max(1, len(paths))} to use them"
        )
    for path in paths:
        load_image(path)  # regular file that decodes: found before a build, not in TensorRT's calibrator
    if len(paths) < batch:
        raise RingfoldError(
            f"{options.calib}: {len(paths)} images; INT8 calibration needs at least one batch of {batch} "
            "(the --batch opt size); add images or lower --batch"
        )
    usable = len(paths) // batch * batch
    cache = options.calib_cache or engine_dir(bundle.path) / CALIBRATION_CACHE
    return CalibrationPlan(tuple(paths[:usable]), batch, Path(cache), input_name, bundle.preprocess)


def plan_build(bundle: Bundle, options: BuildOptions, trt_version: str) -> BuildPlan:
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
    strongly, notes = resolve_typing(bundle, options, trt_version)
    _check_weak_options(options, strongly, trt_version)
    if options.workspace_mib < 1:
        raise RingfoldError(f"--workspace {options.workspace_mib}: give the builder's workspace in MiB, 1 or more")
    if options.timing_cache is not None and options.timing_cache.exists() and not options.timing_cache.is_file():
        raise RingfoldError(f"{options.timing_cache}: --timing-cache must name a file, not a folder")

    kind = source_variant(bundle, precision, options.calibrator, strongly)
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
        fp16=precision in ("fp16", "int8") and not strongly,
        int8=precision == "int8" and not strongly,
        source_kind=kind,
        onnx_sha256=bundle.model_sha256(kind),
        strongly_typed=strongly,
        workspace_bytes=options.workspace_mib << 20,
        timing_cache=options.timing_cache,
        fp32_layers=pins,
        calibration=_calibration(bundle, options, name, opt) if options.calibrator else None,
        notes=notes + _int8_note(kind, strongly),
    )


def _check_weak_options(options: BuildOptions, strongly: bool, trt_version: str) -> None:
    """``--fp32-layers`` and ``--calibrator`` against the resolved typing (TensorRT 10.x and 8.6)."""
    if strongly:
        if options.fp32_layers:
            raise RingfoldError(
                "--fp32-layers has no effect on a strongly typed network (the ONNX types decide every layer); "
                "drop one of the two"
            )
        if options.calibrator:
            raise RingfoldError("--calibrator calibrates a weakly typed network; drop --strongly-typed or --calibrator")
    if options.calibrator:
        if options.precision != "int8":
            raise RingfoldError("--calibrator is for --precision int8; drop it for fp32/fp16 engines")
        if parse_version(trt_version) >= (10,):
            raise RingfoldError(
                f"--calibrator entropy is for TensorRT 8.6 (implicit INT8 calibration is deprecated in {trt_version}); "
                "build from the bundle's QDQ int8 model: drop --calibrator"
            )
