"""``build-engine --print-trtexec``: the same build plan as a trtexec command, pasteable into a shell.

:func:`trtexec_argv` writes a :class:`~.plan.BuildPlan` as trtexec arguments; the engine it
builds has no sidecar, so :func:`trtexec_recipe` also gives the ``build-engine --register`` line
that checks it on the device and takes it into the bundle (:func:`.build.register_engine`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ringfold.errors import RingfoldError
from ringfold.runtime.bundle.engines import EngineKey, engine_dir
from ringfold.runtime.bundle.loader import Bundle

from .plan import BuildOptions, BuildPlan, plan_build

#: what ``--print-trtexec`` assumes without TensorRT installed and without ``--trt-version``: JetPack 6.1/6.2
DEFAULT_TRT_VERSION = "10.3"
_SPEC_UNSAFE = (",", ":")  # trtexec splits shape and layer specs at these


def _no_calibration() -> RingfoldError:
    """trtexec has no image-folder calibrator: a plan that calibrates cannot be printed as a trtexec line."""
    return RingfoldError(
        "--print-trtexec: trtexec cannot calibrate from an image folder; build the calibrated engine with "
        "`ringfold build-engine --calibrator entropy`, or use the bundle's QDQ int8 model (drop --calibrator)"
    )


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
        raise _no_calibration()

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


def trtexec_recipe(
    bundle: Bundle, options: BuildOptions, trt_version: str, gpu: tuple[str, str] | None
) -> TrtexecRecipe:
    """The trtexec line for ``options`` on TensorRT ``trt_version``, writing into ``BUNDLE/engines/``.

    The engine file name comes from the same :class:`EngineKey` as ``build-engine``'s; with
    ``gpu`` unknown (no CUDA here, no ``--gpu/--sm``) the name leaves the GPU part out. Either
    way trtexec writes no sidecar, so ringfold would not trust the engine yet: ``register_argv``
    is the command that checks it on the device and records it (and renames it to its full
    key name). Paths are absolute, so both lines work from any directory.
    """
    if options.calibrator:
        raise _no_calibration()
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
