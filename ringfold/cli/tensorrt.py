"""``ringfold build-engine`` and ``ringfold check``: a bundle's TensorRT engine, and the lint that says it builds."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ringfold.runtime.backends.tensorrt.build import build_engine, register_engine
from ringfold.runtime.backends.tensorrt.lint import TARGETS as LINT_TARGETS
from ringfold.runtime.backends.tensorrt.plan import BuildOptions
from ringfold.runtime.bundle.loader import load_bundle

from .. import cli_types as T
from .. import commands
from ..errors import GateFailed, RingfoldError


# --------------------------------------------------------------------------------------- build-engine
def add_build_engine(sub) -> None:
    p = sub.add_parser("build-engine", help="build a TensorRT engine from a bundle on this GPU (Jetson or desktop)")
    p.add_argument("bundle")
    p.add_argument("--precision", default="fp16", choices=["fp32", "fp16", "int8"])
    p.add_argument(
        "--batch", type=T.batch_profile, default="1,8,16", help="optimisation profile for the batch axis: min,opt,max"
    )
    p.add_argument("--workspace", type=T.positive_int, default=1024, help="builder workspace pool in MiB")
    p.add_argument("--timing-cache", help="timing cache file, read and updated (speeds up rebuilds)")
    p.add_argument(
        "--fp32-layers",
        action="store_true",
        help="pin the fp16 export's fp32 set (LayerNorm, Softmax, reductions, Pow/Sqrt, final norm + head) to fp32 "
        "in a weakly typed build (TensorRT 8.6 and 10.x; 11 has none: the fp16 model keeps them fp32)",
    )
    typing = p.add_mutually_exclusive_group()
    typing.add_argument(
        "--strongly-typed",
        action="store_const",
        const=True,
        dest="strongly_typed",
        help="precisions from the ONNX types (fp16: the fp16 model; int8: the Q/DQ model); "
        "default on TensorRT 10 and 11, not in 8.6",
    )
    typing.add_argument(
        "--weakly-typed",
        action="store_const",
        const=False,
        dest="strongly_typed",
        help="FP16/INT8 builder flags on the fp32 / Q/DQ model; default on 8.6, TensorRT 10.x only besides, not in 11",
    )
    p.add_argument("--calibrator", choices=["entropy"], help="implicit INT8 calibration (TensorRT 8.6 only)")
    p.add_argument("--calib", help="calibration images for --calibrator")
    p.add_argument("--calib-min", type=T.positive_int, default=32, help="fewest --calib images accepted (default 32)")
    _add_trtexec_options(p)
    p.set_defaults(func=cmd_build_engine)


def _add_trtexec_options(p: argparse.ArgumentParser) -> None:
    """``--print-trtexec`` or ``--register``, and the target device --print-trtexec writes the line for."""
    how = p.add_mutually_exclusive_group()
    how.add_argument(
        "--print-trtexec", action="store_true", help="print the equivalent trtexec command (shell-quoted) and exit"
    )
    how.add_argument(
        "--register",
        metavar="ENGINE",
        help="take an engine trtexec built (--print-trtexec) into the bundle: checked here, renamed, recorded",
    )
    p.add_argument(
        "--trt-version",
        type=T.trt_version_arg,
        help="TensorRT version for --print-trtexec (default: installed, else 10.3)",
    )
    p.add_argument("--gpu", type=T.gpu_name_arg, help="--print-trtexec for another device: its CUDA name (Orin)")
    p.add_argument(
        "--sm", type=T.compute_capability_arg, help="--print-trtexec for another device: compute capability (8.7)"
    )


def cmd_build_engine(args: argparse.Namespace) -> int:
    """Build an engine with Polygraphy, print the trtexec line that builds the same, or register trtexec's engine.

    ``--print-trtexec`` is for users who build with trtexec (the Jetson habit). It prints one
    line on stdout that pastes into a shell (every argument shell-quoted), for the installed
    TensorRT or ``--trt-version``, writing into ``BUNDLE/engines/`` under the engine key's name
    for this GPU — asked from CUDA or ``nvidia-smi`` here, or given with ``--gpu NAME --sm X.Y``
    when printing for another device; with no GPU known the name leaves the GPU part out. trtexec
    writes no sidecar, so ringfold does not trust its engine yet: stderr gets one line, the
    ``build-engine --register ENGINE`` command to run on the device after trtexec. Registering
    deserializes the engine with the device's TensorRT, checks its I/O against the manifest, reads
    its batch profile, renames it to its full key name and records it like an engine ringfold built.
    """
    if (args.gpu is None) != (args.sm is None):
        raise RingfoldError("--gpu and --sm go together: the CUDA device name and its compute capability (Orin: 8.7)")
    if not args.print_trtexec and (args.gpu or args.trt_version):
        raise RingfoldError(
            "--gpu, --sm and --trt-version describe the target of --print-trtexec; a build uses this machine's "
            "TensorRT and GPU (drop them, or add --print-trtexec)"
        )
    bundle = load_bundle(args.bundle)
    options = BuildOptions(
        precision=args.precision,
        batch=args.batch,  # (min, opt, max), validated by the parser
        workspace_mib=args.workspace,
        timing_cache=Path(args.timing_cache) if args.timing_cache else None,
        fp32_layers=args.fp32_layers,
        strongly_typed=args.strongly_typed,
        calibrator=args.calibrator,
        calib=args.calib,
        calib_min=args.calib_min,
    )
    if args.print_trtexec:
        _print_trtexec(bundle, options, args)
    elif args.register:
        print(f"engine registered as {register_engine(bundle, Path(args.register), options)}")
    else:
        print(f"engine written to {build_engine(bundle, options)}")
    return 0


def _print_trtexec(bundle, options, args: argparse.Namespace) -> None:
    """The trtexec line on stdout; on stderr, why its engine is not trusted yet and the command that registers it."""
    gpu = (args.gpu, args.sm) if args.gpu else None
    plan = commands.trtexec_plan(
        bundle, options, trt_version=args.trt_version, installed_version=commands.installed_trt_version(), gpu=gpu
    )
    print(plan.line)
    shown = f" ({'; '.join(plan.notes)})" if plan.notes else ""
    print(
        "ringfold build-engine: trtexec writes no sidecar, so ringfold trusts its engine only once registered "
        f"on the device{shown}: " + shlex.join(plan.register_argv),
        file=sys.stderr,
    )


# ---------------------------------------------------------------------------------------------- check
def add_check(sub) -> None:
    p = sub.add_parser("check", help="TensorRT-compatibility lint of every graph TensorRT gets (no GPU needed)")
    p.add_argument("bundle", help="bundle directory from `ringfold export`")
    p.add_argument(
        "--target",
        default="trt-10",
        choices=list(LINT_TARGETS),
        help="TensorRT ONNX parser to check against: trt-8.6 (JetPack 6.0), trt-10 (10.0-10.3, JetPack 6.1/6.2) "
        "or trt-11 (strongly typed; JetPack >= 7.2.2, desktop) (default: %(default)s)",
    )
    p.add_argument(
        "--precision",
        nargs="+",
        default=["all"],
        metavar="GRAPH",
        help="graphs to check: all, or precisions (fp32 fp16 int8 ...), raw-float32 raw-uint8 (the raw-pixel "
        "models), text (the text tower) (default: all the bundle has; int8-dynamic is ONNX Runtime CPU only, "
        "listed, never failed)",
    )
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.add_argument(
        "--polygraphy",
        action="store_true",
        help="also build each passing variant with TensorRT and compare it to ONNX Runtime (needs TensorRT + CUDA)",
    )
    p.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    result = commands.check(args.bundle, args.target, args.precision, polygraphy=args.polygraphy)
    print(result.to_json() if args.json else result.to_text())
    if not result.passed:
        raise GateFailed(result.failure_line())
    return 0
