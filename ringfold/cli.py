"""The ``ringfold`` command. Subcommands import their heavy dependencies lazily, so the
runtime commands (classify, parity without --run) work on a torch-free device install.

Exit codes: 0 success, 1 parity gate failed, 2 bad input (one-line error, nothing written).
"""

from __future__ import annotations

import argparse
import difflib
import errno
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from .commands import installed_trt_version as _installed_trt_version  # tests stand in for TensorRT here
from .errors import FieldError, GateFailed, RingfoldError
from .ownership import check_apart, check_owned_json, check_target, owned_directory, write_owned_json


class _Parser(argparse.ArgumentParser):
    """argparse, but unknown options get a 'did you mean' and the usual exit code 2 in one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        hint = ""
        if "unrecognized arguments:" in message:
            known = self._all_options()
            bad = message.split(":", 1)[1].split()
            for arg in bad:
                match = difflib.get_close_matches(arg.split("=")[0], known, n=1)
                if match:
                    hint = f"; did you mean {match[0]}?"
                    break
        self.exit(2, f"{self.prog}: error: {message}{hint} (see {self.prog} --help)\n")

    def _all_options(self) -> list[str]:
        """Options of this parser and of every subcommand (unknown options surface at the top level)."""
        found = []
        for action in self._actions:
            found += action.option_strings
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    found += sub._all_options()
        return found


# --------------------------------------------------------------------------------------------- params
def cmd_params(args: argparse.Namespace) -> int:
    from ringfold.trainer.adapters import names
    from ringfold.trainer.params import format_tables, parameter_tables, tables_to_json

    from .options import adapter_overrides

    every = args.method == "all"
    tables = parameter_tables(args.model, names() if every else [args.method], {} if every else adapter_overrides(args))
    if args.json:
        dumps = tables_to_json(tables)
        print(json.dumps(dumps if every else dumps[args.method], indent=2))
    else:
        print(format_tables(args.model, tables))
    return 0


# ---------------------------------------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    from ringfold.trainer.train import resume, train

    from .options import train_config_from_args

    if args.nproc and args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return _launch_torchrun(args.nproc, args.argv)
    if args.resume:
        args.out = args.resume
        record = resume(args.resume)
    else:
        missing = [flag for flag, value in (("--data", args.data), ("--out", args.out)) if not value]
        if not (args.pretrained or args.random_init):
            missing.append("--pretrained TAG|FILE or --random-init")
        if missing:
            raise RingfoldError(f"train needs {', '.join(missing)} (or --resume RUN/ to continue a run)")
        record = train(train_config_from_args(args), args.out, overwrite=args.overwrite)
    if "RANK" in os.environ and os.environ["RANK"] != "0":
        return 0
    print(record.summary(args.out))
    return 0


def _launch_torchrun(nproc: int, argv: list[str]) -> int:
    """Re-run this very command (``argv``, without --nproc) under torchrun with N processes (gloo/NCCL)."""
    import subprocess

    from ringfold.trainer.distributed import torchrun_command

    train_args, skip = [], False
    for i, arg in enumerate(argv):
        if skip or (i == 0 and arg == "train") or arg.startswith("--nproc="):
            skip = False
            continue
        skip = arg == "--nproc"
        if not skip:
            train_args.append(arg)
    command = torchrun_command(nproc, train_args)
    print("launching: " + " ".join(command), file=sys.stderr)
    return subprocess.call(command)


# --------------------------------------------------------------------------------------------- export
def cmd_export(args: argparse.Namespace) -> int:
    from ringfold.exporter.export import export_run
    from ringfold.exporter.precision import PrecisionRequest, variant_messages

    if args.triton:  # refuse a repository folder that cannot be written before the export, not after
        from ringfold.runtime.triton_repo import preflight

        preflight(args.triton, args.out, args.overwrite)
    result = export_run(
        args.run,
        args.out,
        ref_images=args.ref_images,
        ref_count=args.ref_count,
        synthetic_ref=args.synthetic_ref,
        opset=args.opset,
        overwrite=args.overwrite,
        progress=not args.quiet,
        include_base=args.include_base,
        raw_input=() if args.raw_input is None else (args.raw_input or ["float32"]),  # bare --raw-input: float32
        text=not args.no_text,
        precision=PrecisionRequest(
            tuple(dict.fromkeys(["fp32", *args.precision])),
            args.calib,
            args.calib_method,
            args.calib_limit,
            args.calib_min,
        ),
    )
    print(result.summary())
    if args.triton:  # the same repository `ringfold triton BUNDLE --out DIR` writes
        from .triton_command import write_and_report

        write_and_report(result.bundle, args.triton, "export", overwrite=args.overwrite)
    errors, notes = variant_messages(result.manifest)
    if result.manifest["export"].get("text_skipped"):
        notes.append(f"no text tower in the bundle: {result.manifest['export']['text_skipped']}")
    for line in notes:
        print(f"ringfold export: note: {line}", file=sys.stderr)
    for line in errors:  # the bundle is valid but lacks a variant the user asked for: exit 2
        print(f"ringfold export: error: {line}", file=sys.stderr)
    return 2 if errors else 0


# ------------------------------------------------------------------------------------------- classify
def cmd_classify(args: argparse.Namespace) -> int:
    from ringfold.runtime.backends import open_model
    from ringfold.runtime.bundle import load_bundle
    from ringfold.runtime.classify import iter_predictions

    from .commands import prediction_line
    from .open_vocab_cli import open_vocabulary, open_vocabulary_plan

    bundle = load_bundle(args.bundle)
    vocabulary = open_vocabulary_plan(bundle, args)  # --classes/--templates checked before the model loads
    preprocess = None
    if args.input == "normalised":
        model = open_model(bundle, args.precision, args.backend, args.provider, args.threads)
    else:  # the raw-pixel model: the client resizes, the model normalises (runtime/raw_input.py)
        from .commands import open_raw_input

        model, preprocess = open_raw_input(bundle, args)
    if vocabulary is not None:  # open vocabulary: a head computed now with the bundle's text tower
        bundle, model = open_vocabulary(bundle, model, vocabulary, args)
    # Checks --top-k and lists the folders now; images are decoded as the loop asks for them.
    preds = iter_predictions(
        bundle, model, args.images, top_k=args.top_k, skip_bad=args.skip_bad, preprocess=preprocess
    )
    failed = False
    for n, p in enumerate(preds):
        if n == 0 and bundle.random_weights and not args.json:  # not before an error that stops the run
            print(f"note: {bundle.describe()} — random weights, predictions are not meaningful", file=sys.stderr)
        failed = failed or bool(p.error)
        # Each batch is printed as it completes, so an interrupted run keeps what it classified.
        print(json.dumps(p.to_dict()) if args.json else prediction_line(p), flush=True)
    return 2 if failed else 0


# --------------------------------------------------------------------------------------------- parity
def cmd_parity(args: argparse.Namespace) -> int:
    from .commands import parity

    if args.images and not (args.run or args.compare_preprocess):
        raise RingfoldError(
            "--images needs the PyTorch model to compare against (--run RUN/) or --compare-preprocess deepstream"
        )
    if args.compare_preprocess and not args.images:
        raise RingfoldError("--compare-preprocess needs --images DIR (an ImageFolder gives accuracies too)")
    out = Path(args.report) if args.report else _beside(Path(args.bundle), ".parity")
    check_apart(out, args.bundle, "bundle", "--report")
    if args.run:
        check_apart(out, args.run, "run", "--report")
    check_target(out, args.overwrite, "--report")  # before the comparison runs
    tolerance = {
        "max_abs_logit": args.max_abs_logit,
        "min_cosine": args.min_cosine,
        "min_top1": args.min_top1,
        "expected_logit_error": args.logit_error,
    }
    result = parity(
        args.bundle,
        args.precision,
        backend=args.backend,
        provider=args.provider,
        threads=args.threads,
        run=args.run,
        images=args.images if args.run else None,
        tolerance=tolerance,
    )
    comparison = None
    if args.compare_preprocess:
        from .commands import preprocess_comparison

        comparison = preprocess_comparison(result.bundle, args)

    def write(folder: Path) -> list[Path]:
        return result.report.write(folder) + (comparison.write_into(folder) if comparison else [])

    written = _write_report(write, out, "--report", "ringfold parity", args.overwrite)
    print(result.report.to_markdown())
    if comparison:
        print(comparison.to_markdown())
    print(f"report: {', '.join(str(w) for w in written)}")
    warning = result.report.sample_warning()
    if warning:
        print(warning, file=sys.stderr)
    passed = result.pass_line()
    if passed:
        print(passed)
    if not result.passed:
        raise GateFailed(f"{result.failure_line()}; see {out / 'parity.md'}")
    return 0


def _beside(bundle: Path, suffix: str) -> Path:
    """The default report folder: ``BUNDLE.parity`` / ``BUNDLE.bench`` next to the bundle."""
    bundle = bundle if bundle.name not in ("", ".", "..") else bundle.resolve()
    return bundle.parent / f"{bundle.name}{suffix}"


def _write_report(write, out: Path, flag: str, command: str, overwrite: bool) -> list[Path]:
    """Write a report folder whole, under the ownership rule (``ringfold.ownership``); where that fails
    (a bundle on a read-only partition) say which flag moves it."""
    try:
        with owned_directory(out, command, overwrite, flag) as tmp:
            names = [p.relative_to(tmp) for p in write(tmp)]
        return [out / name for name in names]
    except OSError as exc:
        raise RingfoldError(f"{os_error_line(exc)} — pass {flag} DIR to put the report elsewhere") from None


# ----------------------------------------------------------------------------------------- deepstream
def cmd_deepstream(args: argparse.Namespace) -> int:
    from ringfold.runtime.bundle import load_bundle
    from ringfold.runtime.deepstream import write_for_bundle
    from ringfold.runtime.text_rules import check_path

    check_path(args.bundle, "bundle")  # the configs name the bundle's model: a newline would add keys to them
    check_path(args.out, "--out")
    bundle = load_bundle(args.bundle)
    trt_version = args.trt_version or _installed_trt_version()  # the INT8 cache's header names the target's TensorRT
    written = write_for_bundle(
        bundle, Path(args.out), args.batch_size, args.gpu_id, overwrite=args.overwrite, trt_version=trt_version
    )
    print(f"DeepStream files for {bundle.path} written to {args.out}: {', '.join(p.name for p in written)}")
    if any(p.name == "calibration_int8.cache" for p in written) and not trt_version:
        print(
            "ringfold deepstream: note: no TensorRT here, so the INT8 cache keeps the header of TensorRT 8.6.1; "
            "pass --trt-version (e.g. 10.3) for the device's TensorRT",
            file=sys.stderr,
        )
    return 0


# ------------------------------------------------------------------------------------------- compress
def cmd_compress(args: argparse.Namespace) -> int:
    from ringfold.trainer.compress import compress_run, format_report, stderr_log

    report = compress_run(
        args.run,
        args.out,
        args.ranks,
        args.coarse_ranks,
        n_iter=args.iterations,
        images_limit=args.images_limit,
        max_error=args.max_error,
        log=None if args.quiet else stderr_log,
        images=args.images,
        allow_larger=args.allow_larger,
        overwrite=args.overwrite,
    )
    print(format_report(report))
    print(f"AdaRing run written to {args.out}; export it with `ringfold export {args.out} --out BUNDLE`")
    return 0


# --------------------------------------------------------------------------------------- build-engine
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
    import shlex

    from ringfold.runtime.bundle import load_bundle
    from ringfold.runtime.trt_build import build_engine, register_engine
    from ringfold.runtime.trt_plan import BuildOptions

    from .commands import trtexec_plan

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
        gpu = (args.gpu, args.sm) if args.gpu else None
        plan = trtexec_plan(
            bundle, options, trt_version=args.trt_version, installed_version=_installed_trt_version(), gpu=gpu
        )
        print(shlex.join(plan.argv))
        shown = f" ({'; '.join(plan.notes)})" if plan.notes else ""
        print(
            "ringfold build-engine: trtexec writes no sidecar, so ringfold trusts its engine only once registered "
            f"on the device{shown}: " + shlex.join(plan.register_argv),
            file=sys.stderr,
        )
        return 0
    if args.register:
        print(f"engine registered as {register_engine(bundle, Path(args.register), options)}")
        return 0
    print(f"engine written to {build_engine(bundle, options)}")
    return 0


# ---------------------------------------------------------------------------------------------- bench
def cmd_bench(args: argparse.Namespace) -> int:
    from ringfold.runtime.bench import write_bench

    from .commands import bench

    out = Path(args.out) if args.out else _beside(Path(args.bundle), ".bench")
    check_apart(out, args.bundle, "bundle")
    check_target(out, args.overwrite)  # before minutes of timing
    bundle, report = bench(
        args.bundle,
        args.precision,
        args.provider,
        args.batch_sizes,  # validated by the parser
        runs=args.runs,
        warmup=args.warmup,
        threads=args.threads,
        base=args.base,
    )
    written = _write_report(lambda d: write_bench(report, d), out, "--out", "ringfold bench", args.overwrite)
    print(report.to_markdown())
    print(f"report: {', '.join(str(w) for w in written)}")
    return 0


# ---------------------------------------------------------------------------------------------- check
def cmd_check(args: argparse.Namespace) -> int:
    from .commands import check

    result = check(args.bundle, args.target, args.precision, polygraphy=args.polygraphy)
    print(result.to_json() if args.json else result.to_text())
    if not result.passed:
        raise GateFailed(result.failure_line())
    return 0


# ------------------------------------------------------------------------------------------- evaluate
def cmd_evaluate(args: argparse.Namespace) -> int:
    from ringfold.trainer.evaluate import evaluate_run, format_result

    if args.out:
        check_owned_json(args.out, "ringfold evaluate", args.overwrite)  # before minutes of evaluation
    result = evaluate_run(
        args.run,
        args.data,
        image_root=args.image_root,
        split=args.split,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.quiet and not args.json,
    )
    if args.out:
        write_owned_json(args.out, result, "ringfold evaluate")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_result(result))
        if args.out:
            print(f"results: {args.out}")
    return 0


# ----------------------------------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(Path(args.out), epochs=args.epochs, overwrite=args.overwrite, quiet=args.quiet)


# --------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from . import cli_types as T
    from .options import add_adapter_options, add_config_options

    parser = _Parser(prog="ringfold", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"ringfold {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("params", help="trainable parameter table for a model config and adapter method")
    p.add_argument("--model", default="ViT-B-16")
    p.add_argument("--json", action="store_true")
    add_adapter_options(p, allow_all=True)
    p.set_defaults(func=cmd_params)

    p = sub.add_parser("train", help="fit adapters on a frozen open_clip model")
    add_config_options(p)  # one option per TrainConfig field (trainer/config.py)
    add_adapter_options(p)
    p.add_argument("--out", help="run directory to write")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing run folder that ringfold wrote, unchanged (--resume continues one)",
    )
    p.add_argument("--resume", metavar="RUN", help="continue a killed run from its checkpoint (other flags ignored)")
    p.add_argument(
        "--nproc", type=T.positive_int, help="data-parallel processes: relaunches under torchrun (gloo/NCCL)"
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export", help="fold adapters, bake the head, write an ONNX deploy bundle")
    p.add_argument("run", help="run directory from `ringfold train`")
    p.add_argument("--out", required=True, help="bundle directory to write")
    p.add_argument(
        "--ref-images",
        metavar="DIR",
        help="images for the bundle's reference set, one sub-folder per class for labels (default: the run's "
        "held-out test images, found through the data path it records; refused when that data is gone)",
    )
    p.add_argument(
        "--synthetic-ref",
        action="store_true",
        help="use generated smooth-noise images as the reference set when no real ones are at hand: "
        "synthetic: numerics only, no accuracy (the manifest and every report say so)",
    )
    p.add_argument("--ref-count", type=T.positive_int, default=16)
    p.add_argument("--opset", type=T.opset, default=17, help=f"ONNX opset, {T.MIN_OPSET}..{T.MAX_OPSET}")
    p.add_argument(
        "--precision",
        nargs="+",
        default=["fp32"],
        metavar="P",
        help="variants to write: fp32 (always) fp16 int8 int8-dynamic",
    )
    p.add_argument("--calib", help="calibration images for int8 (a folder; the runtime's preprocessing is used)")
    p.add_argument("--calib-method", default="minmax", choices=["minmax", "entropy", "percentile"])
    p.add_argument("--calib-limit", type=T.positive_int, help="use at most this many calibration images")
    p.add_argument(
        "--calib-min",
        type=T.positive_int,
        default=32,
        help="fewest decodable calibration images int8 accepts (default 32; --calib-min 1 for a smoke test)",
    )
    p.add_argument("--include-base", action="store_true", help="also write the adapter-free base model (for bench)")
    p.add_argument(
        "--raw-input",
        nargs="*",
        choices=["float32", "uint8"],
        help="also write models taking RGB 0..255 (mean/std folded into the first Conv; float32, and uint8 if "
        "named) and the deepstream/ folder",
    )
    p.add_argument("--triton", metavar="DIR", help="also write a Triton model repository there (see `ringfold triton`)")
    p.add_argument("--no-text", action="store_true", help="leave out text.onnx + tokenizer (no classify --classes)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_export)

    def add_backend(p: argparse.ArgumentParser) -> None:
        p.add_argument("bundle", help="bundle directory from `ringfold export`")
        p.add_argument(
            "--precision", default="fp32", help="which model of the bundle: fp32 fp16 int8 int8-dynamic (parity: all)"
        )
        p.add_argument("--provider", default="auto", help="auto | trt | cuda | cpu (ONNX Runtime provider)")
        p.add_argument(
            "--backend",
            default="onnxruntime",
            choices=["onnxruntime", "tensorrt"],
            help="tensorrt: the engine built by `ringfold build-engine` for this GPU",
        )
        p.add_argument("--threads", type=T.positive_int, help="ONNX Runtime intra-op threads")

    p = sub.add_parser("classify", help="classify images with a bundle (torch-free)")
    add_backend(p)
    p.add_argument("images", nargs="+", help="image files and/or folders")
    p.add_argument("--top-k", type=T.positive_int, default=None, help="labels per image (default: 5, or all if fewer)")
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    p.add_argument("--skip-bad", action="store_true", help="report unreadable images and go on")
    p.add_argument(
        "--input",
        default="normalised",
        choices=["normalised", "raw", "raw-uint8"],
        help="which model: the normalised one (default) or the raw-pixel variant (float32 / uint8 input)",
    )
    from .open_vocab_cli import CLASSES_HELP

    p.add_argument("--classes", help=f"classify into these classes instead: {CLASSES_HELP}")
    p.add_argument("--templates", help="with --classes: 'bundle' (default), 'a photo of a {}.' or a .txt/.json file")
    p.set_defaults(func=cmd_classify)

    from .open_vocab_cli import add_relabel_parser

    add_relabel_parser(sub)

    p = sub.add_parser("parity", help="check a bundle against the PyTorch reference; exit 1 when the gate fails")
    add_backend(p)
    p.add_argument("--images", nargs="+", help="more images to compare on (needs --run)")
    p.add_argument("--run", help="the run directory: rebuild the PyTorch model live (needs torch)")
    p.add_argument("--report", help="report directory (default: BUNDLE.parity next to the bundle)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing report folder that ringfold wrote, unchanged"
    )
    p.add_argument("--max-abs-logit", type=T.non_negative_float, help="override the precision's tolerance")
    p.add_argument("--min-cosine", type=T.cosine, help="override the precision's tolerance (-1..1)")
    p.add_argument("--min-top1", type=T.unit_interval, help="override the precision's tolerance (0..1)")
    p.add_argument(
        "--logit-error",
        type=T.non_negative_float,
        help="the logit error a reduced precision is expected to make (default fp16 0.01, int8 0.1): a top-1 flip "
        "whose reference margin is within twice it is a near-tie, listed but not failed; --max-abs-logit, "
        "where given, takes its place",
    )
    p.add_argument(
        "--compare-preprocess",
        choices=["deepstream", "deepstream-letterbox"],
        help="also run fp32 on --images with nvinfer's resize (stretch / letterbox) vs open_clip's: top-1 "
        "agreement and accuracy of each (a measurement, not a gate)",
    )
    p.set_defaults(func=cmd_parity)

    from ringfold.runtime.trt_engine import compute_capability_arg, gpu_name_arg, trt_version_arg

    p = sub.add_parser("deepstream", help="write DeepStream nvinfer + deepstream-app configs for a bundle (torch-free)")
    p.add_argument("bundle", help="a bundle exported with --raw-input")
    p.add_argument("--out", required=True, help="folder to write (onnx-file points at the bundle's raw model)")
    p.add_argument("--batch-size", type=T.positive_int, default=1, help="nvinfer and streammux batch size")
    p.add_argument("--gpu-id", type=T.non_negative_int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace a folder an earlier `ringfold deepstream` wrote")
    p.add_argument(
        "--trt-version",
        type=trt_version_arg,
        help="the device's TensorRT, for the INT8 cache header (default: the installed one, else 8.6.1 as exported)",
    )
    p.set_defaults(func=cmd_deepstream)

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
        help="pin the fp16 export's fp32 set (LayerNorm, Softmax, reductions, Pow/Sqrt, final norm + head) to fp32",
    )
    p.add_argument(
        "--strongly-typed",
        action="store_true",
        help="TensorRT 10: precisions from the ONNX types (fp16: the fp16 model)",
    )
    p.add_argument("--calibrator", choices=["entropy"], help="implicit INT8 calibration (TensorRT 8.6 only)")
    p.add_argument("--calib", help="calibration images for --calibrator")
    p.add_argument("--calib-min", type=T.positive_int, default=32, help="fewest --calib images accepted (default 32)")
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
        type=trt_version_arg,
        help="TensorRT version for --print-trtexec (default: installed, else 10.3)",
    )
    p.add_argument("--gpu", type=gpu_name_arg, help="--print-trtexec for another device: its CUDA name (Orin)")
    p.add_argument(
        "--sm", type=compute_capability_arg, help="--print-trtexec for another device: compute capability (8.7)"
    )
    p.set_defaults(func=cmd_build_engine)

    from .triton_command import add_triton_parser

    add_triton_parser(sub)

    p = sub.add_parser("bench", help="latency (p50/p90/p99) and throughput per backend, precision and batch")
    p.add_argument("bundle")
    p.add_argument("--precision", default="all", help="all, or a comma list of the bundle's variants")
    p.add_argument("--provider", default="cpu", help="comma list of cpu,cuda,trt, or all available")
    p.add_argument("--batch-sizes", type=T.positive_int_list, default="1,2,4,8", help="comma list of batch sizes")
    p.add_argument("--runs", type=T.positive_int, default=50)
    p.add_argument("--warmup", type=T.non_negative_int, default=10)
    p.add_argument("--threads", type=T.positive_int, help="ONNX Runtime intra-op threads (default: library default)")
    p.add_argument("--base", help="base model ONNX to compare against (default: the bundle's, if exported)")
    p.add_argument("--out", help="report directory (default BUNDLE.bench next to the bundle)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing report folder that ringfold wrote, unchanged"
    )
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("compress", help="decompose a run's dense adapters into AdaRing tensor-ring cores")
    p.add_argument("run", help="a foldable run (ARC or static AdaRing)")
    p.add_argument(
        "--ranks",
        required=True,
        help="fine ring ranks R0,R1,R2, or auto: fit the candidate ranks smaller than the source, write "
        "rank_sweep.{json,png} into --out and keep the smallest within --max-error (refused if none is)",
    )
    p.add_argument("--coarse-ranks", default="1,1,1", help="coarse ring ranks for the residual (default 1,1,1)")
    p.add_argument(
        "--max-error",
        type=T.unit_interval,
        default=0.2,
        help="--ranks auto keeps the smallest ranks whose worst site relative error is at most this (default 0.2)",
    )
    p.add_argument("--iterations", type=T.positive_int, default=100, help="most ALS sweeps per ring fit")
    p.add_argument(
        "--allow-larger",
        action="store_true",
        help="accept explicit --ranks whose AdaRing run has more parameters than the source (warned about)",
    )
    p.add_argument(
        "--images",
        metavar="DIR",
        help="held-out images to measure agreement and top-1 accuracy on, one sub-folder per class (class name, "
        "'_' for ' '; other folders count for agreement only); default: the run's own test split (val if none)",
    )
    p.add_argument(
        "--images-limit",
        type=T.positive_int,
        default=64,
        help="measure on at most this many images, round-robin over classes (default 64, at most 1024)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--out", required=True, help="AdaRing run directory to write")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing run folder that ringfold wrote, unchanged"
    )
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("check", help="TensorRT-compatibility lint of a bundle's ONNX graphs (no GPU needed)")
    p.add_argument("bundle", help="bundle directory from `ringfold export`")
    p.add_argument(
        "--target",
        default="trt-10",
        choices=["trt-8.6", "trt-10"],
        help="TensorRT ONNX parser to check against: trt-8.6 (JetPack 6.0) or trt-10 (10.0-10.3, JetPack 6.1/6.2)",
    )
    p.add_argument(
        "--precision",
        nargs="+",
        default=["all"],
        choices=["all", "fp32", "fp16", "int8", "int8-dynamic"],
        help="variants to check (default: all the bundle has)",
    )
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.add_argument(
        "--polygraphy",
        action="store_true",
        help="also build each passing variant with TensorRT and compare it to ONNX Runtime (needs TensorRT + CUDA)",
    )
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("evaluate", help="base/novel accuracy and their harmonic mean (CoOp base-to-novel)")
    p.add_argument("run", help="run directory from `ringfold train` (--classes base for base-to-novel)")
    p.add_argument("--data", help="the full dataset (base + new classes; default: the run's recorded data)")
    p.add_argument("--image-root", help="folder the CoOp split paths are relative to")
    p.add_argument("--split", choices=["train", "val", "test"], default="test")
    p.add_argument("--batch-size", type=T.positive_int, default=64)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--out", help="also write the results to this JSON file (atomically)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an --out file an earlier evaluate wrote, unchanged"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("demo", help="offline end to end: generate data, train ARC, export, classify, parity")
    p.add_argument("--out", default="ringfold-demo", help="working directory (default ./ringfold-demo)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an earlier demo folder (only what ringfold wrote, unchanged)"
    )
    p.add_argument("--epochs", type=T.positive_int, default=30)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every cleanup path (temporary folders, locks) runs for it too."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated


def _install_sigterm() -> None:
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_terminated)


_OS_ERROR_FIXES = {
    errno.EROFS: "read-only file system; write somewhere else (--out / --report)",
    errno.ENOSPC: "no space left on the device; free some space or write somewhere else",
    errno.EDQUOT: "disk quota exceeded; free some space or write somewhere else",
    errno.EACCES: "permission denied; fix its permissions or write somewhere else",
    errno.EPERM: "operation not permitted; fix its permissions or write somewhere else",
}


def os_error_line(exc: OSError) -> str:
    """One line for an I/O failure: the path, what happened, what to do."""
    where = exc.filename if exc.filename is not None else "(unnamed file)"
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    reason = _OS_ERROR_FIXES.get(exc.errno or -1) or f"{exc.strerror or type(exc).__name__}; check the path"
    return " ".join(f"{where}: {reason}".split())


def _flag_of(parser: argparse.ArgumentParser, command: str, field: str) -> str | None:
    """The option of ``command`` that sets config field ``field`` (options are named by their dest)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            sub = action.choices[command]
            for option in sub._actions:
                if option.dest == field and option.option_strings:
                    return option.option_strings[0]
            if any(option.dest == "adapter_opt" for option in sub._actions):
                return f"--adapter-opt {field}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    from .extras import install_hint, needed_extra, optional_module, require

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    _install_sigterm()
    try:
        extra = needed_extra(args.command, live_parity=bool(getattr(args, "run", None)))
        if extra:
            require(args.command, extra)  # one line naming the extra, before any work
        return int(args.func(args) or 0)
    except ModuleNotFoundError as exc:
        module = optional_module(exc)
        if module is None:
            raise  # not an optional dependency: a real bug, keep the traceback
        print(f"ringfold {args.command}: error: {install_hint(args.command, module)}", file=sys.stderr)
        return 2
    except FieldError as exc:  # the library names the field; the user typed a flag
        flag = _flag_of(parser, args.command, exc.field)
        print(f"ringfold {args.command}: error: {f'{flag}: {exc.problem}' if flag else exc}", file=sys.stderr)
        return exc.exit_code
    except RingfoldError as exc:
        print(f"ringfold {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except GateFailed as exc:
        print(f"ringfold {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"ringfold {args.command}: error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    except Terminated:
        print(f"ringfold {args.command}: terminated; nothing partial was left behind", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"ringfold {args.command}: interrupted; nothing partial was left behind", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
