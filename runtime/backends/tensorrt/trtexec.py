"""``build-engine --print-trtexec``: the same build plan as a trtexec command that runs as printed.

:func:`trtexec_argv` writes a :class:`~.plan.BuildPlan` as trtexec arguments, for the TensorRT the
plan is for (no ``--fp16 --int8`` on 11, ``--stronglyTyped`` where 10.x needs it: :mod:`.versions`).
:meth:`TrtexecRecipe.shell_line` makes it one line a user pastes on the device: it creates
``BUNDLE/engines/`` (trtexec does not) and finds trtexec on PATH or in /usr/src/tensorrt/bin, where
JetPack installs it off PATH. With ``--fp32-layers`` the layer list (kilobytes on a ViT) goes into a
small build script beside the engine, ``engines/build_<engine>.sh`` — trtexec reads
``--layerPrecisions`` from its command line only — and the line runs that script. The engine has no
sidecar, so the recipe also gives the ``build-engine --register`` line that checks it on the device
and takes it into the bundle (:func:`.build.register_engine`).
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, replace
from pathlib import Path

from ringfold.atomic import sha256_file, write_text
from ringfold.errors import RingfoldError
from ringfold.ownership import read_record, record_files
from ringfold.runtime.bundle.engines import EngineKey, engine_dir
from ringfold.runtime.bundle.loader import Bundle

from .plan import BuildOptions, BuildPlan, plan_build
from .versions import has_strong_typing, has_weak_typing, needs_strongly_typed_flag

#: what ``--print-trtexec`` assumes without TensorRT installed and without ``--trt-version``: JetPack 6.1/6.2
DEFAULT_TRT_VERSION = "10.3"
#: where JetPack installs trtexec (not on PATH); tests point it elsewhere with RINGFOLD_TRTEXEC_DIR
TRTEXEC_DIR = "/usr/src/tensorrt/bin"
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
    was split into. TensorRT 11's trtexec has no precision flags and strong typing always on,
    so its line carries neither ``--fp16/--int8`` nor ``--stronglyTyped``.
    """
    if plan.calibration is not None:
        raise _no_calibration()
    if (plan.fp16 or plan.int8 or plan.fp32_layers) and not has_weak_typing(plan.trt_version):
        raise RingfoldError(f"--print-trtexec: TensorRT {plan.trt_version}'s trtexec has no --fp16/--int8 flags")

    def spec(name: str, shape: tuple[int, ...]) -> str:
        return f"{name}:{'x'.join(str(d) for d in shape)}"

    argv = ["trtexec", f"--onnx={plan.onnx}", f"--saveEngine={engine_path}"]
    for name, lo, opt, hi in plan.profile:
        if any(c in name for c in _SPEC_UNSAFE):
            raise RingfoldError(f"--print-trtexec: input name {name!r} holds ',' or ':', which trtexec cannot parse")
        argv += [f"--minShapes={spec(name, lo)}", f"--optShapes={spec(name, opt)}", f"--maxShapes={spec(name, hi)}"]
    if plan.workspace_bytes is not None:
        argv.append(f"--memPoolSize=workspace:{max(1, plan.workspace_bytes >> 20)}")
    if plan.strongly_typed and needs_strongly_typed_flag(plan.trt_version):
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
    notes: tuple[str, ...] = ()  # the plan's (an int8 engine that stays int8+fp32, a weakly typed fallback)

    @property
    def script(self) -> Path | None:
        """The build script beside the engine when the line would be too long to paste (``--layerPrecisions``)."""
        if not any(a.startswith("--layerPrecisions=") for a in self.argv):
            return None
        return self.engine.parent / f"build_{self.engine.stem}.sh"

    def shell_line(self) -> str:
        """The one line to run on the device; writes the build script first when there is one.

        Without a script: ``mkdir -p ENGINES && "$(command -v trtexec || echo DIR/trtexec)" ARGS``.
        With one: ``sh ENGINES/build_<engine>.sh`` (the script does the same).
        """
        script = self.script
        if script is None:
            return f"mkdir -p {shlex.quote(str(self.engine.parent))} && {_trtexec()} {shlex.join(self.argv[1:])}"
        write_build_script(script, self)
        return f"sh {shlex.quote(str(script))}"


def _trtexec() -> str:
    """trtexec from PATH, else from JetPack's folder (``RINGFOLD_TRTEXEC_DIR`` overrides it, for tests)."""
    fallback = os.path.join(os.environ.get("RINGFOLD_TRTEXEC_DIR") or TRTEXEC_DIR, "trtexec")
    return f'"$(command -v trtexec || echo {shlex.quote(fallback)})"'


def build_script(recipe: TrtexecRecipe) -> str:
    """The POSIX shell script that runs trtexec with every argument of ``recipe`` (one per line)."""
    args = " \\\n".join(f"    {shlex.quote(a)}" for a in recipe.argv[1:])
    register = shlex.join(recipe.register_argv)
    if any(c in register for c in "\r\n"):  # a line break in a path would end the comment: leave it out
        register = "the line build-engine --print-trtexec printed on stderr"
    return (
        "#!/bin/sh\n"
        f"# written by `ringfold build-engine --print-trtexec`: builds {recipe.engine.name} with trtexec.\n"
        "# trtexec reads --layerPrecisions from its command line only, so the fp32 layer list lives here.\n"
        f"# Then register the engine: {register}\n"
        "set -e\n"
        f"mkdir -p {shlex.quote(str(recipe.engine.parent))}\n"
        f"exec {_trtexec()} \\\n{args}\n"
    )


def write_build_script(path: Path, recipe: TrtexecRecipe) -> None:
    """Write the build script into ``engines/`` and record it there; never over a file ringfold did not write."""
    directory = path.parent
    if os.path.lexists(path):
        try:
            known = read_record(directory).get(path.name, set())
        except RingfoldError:
            known = set()
        if path.is_symlink() or not path.is_file() or sha256_file(path) not in known:
            raise RingfoldError(
                f"{path}: not written by ringfold build-engine (or changed since); ringfold never replaces it — "
                "move it out of engines/ and print again"
            )
    directory.mkdir(parents=True, exist_ok=True)
    write_text(path, build_script(recipe))
    record_files(directory, "ringfold build-engine", [path.name])


def trtexec_recipe(
    bundle: Bundle, options: BuildOptions, trt_version: str, gpu: tuple[str, str] | None
) -> TrtexecRecipe:
    """The trtexec line for ``options`` on TensorRT ``trt_version``, writing into ``BUNDLE/engines/``.

    The engine file name comes from the same :class:`EngineKey` as ``build-engine``'s; with
    ``gpu`` unknown (no CUDA here, no ``--gpu/--sm``) the name leaves the GPU part out. Either
    way trtexec writes no sidecar, so ringfold would not trust the engine yet: ``register_argv``
    is the command that checks it on the device and records it (and renames it to its full
    key name); on 10.x, where both typings exist, it names the one the engine was built with.
    Paths are absolute, so both lines work from any directory.
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
    if has_strong_typing(trt_version) and has_weak_typing(trt_version):
        register.append("--strongly-typed" if plan.strongly_typed else "--weakly-typed")
    register += ["--register", str(engine)]
    return TrtexecRecipe(trtexec_argv(plan, engine), register, engine, gpu is not None, plan.notes)
