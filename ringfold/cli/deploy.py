"""``ringfold deepstream`` and ``ringfold triton``: serving configs written from a bundle (torch-free).

The work is ``runtime/deploy/deepstream.py`` and ``runtime/deploy/triton_repo.py``
(``write_triton_repository``), which need neither torch nor onnx; ``export --triton DIR`` prints its repository with
:func:`write_triton_and_report` as ``ringfold triton`` does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ringfold.runtime.base.text_rules import check_path
from ringfold.runtime.bundle.loader import load_bundle
from ringfold.runtime.deploy.deepstream import int8_note, write_for_bundle
from ringfold.runtime.deploy.triton_repo import DEFAULT_MAX_BATCH, DEFAULT_QUEUE_DELAY_US, write_triton_repository

from .. import cli_types as T
from .. import commands


# ----------------------------------------------------------------------------------------- deepstream
def add_deepstream(sub) -> None:
    p = sub.add_parser("deepstream", help="write DeepStream nvinfer + deepstream-app configs for a bundle (torch-free)")
    p.add_argument("bundle", help="a bundle exported with --raw-input")
    p.add_argument("--out", required=True, help="folder to write (onnx-file points at the bundle's raw model)")
    p.add_argument("--batch-size", type=T.positive_int, default=1, help="nvinfer and streammux batch size")
    p.add_argument("--gpu-id", type=T.non_negative_int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace a folder an earlier `ringfold deepstream` wrote")
    p.add_argument(
        "--trt-version",
        type=T.trt_version_arg,
        help="the device's TensorRT, for the INT8 cache header (default: the installed one, else 8.6.1 as exported)",
    )
    p.set_defaults(func=cmd_deepstream)


def cmd_deepstream(args: argparse.Namespace) -> int:
    check_path(args.bundle, "bundle")  # the configs name the bundle's model: a newline would add keys to them
    check_path(args.out, "--out")
    bundle = load_bundle(args.bundle)
    # the INT8 cache's header names the target's TensorRT
    trt_version = args.trt_version or commands.installed_trt_version()
    written = write_for_bundle(
        bundle, Path(args.out), args.batch_size, args.gpu_id, overwrite=args.overwrite, trt_version=trt_version
    )
    print(f"DeepStream files for {bundle.path} written to {args.out}: {', '.join(p.name for p in written)}")
    note = int8_note(bundle, trt_version)
    if note:
        print(f"ringfold deepstream: note: {note}", file=sys.stderr)
    if any(p.name == "calibration_int8.cache" for p in written) and not trt_version:
        print(
            "ringfold deepstream: note: no TensorRT here, so the INT8 cache keeps the header of TensorRT 8.6.1; "
            "pass --trt-version (e.g. 10.3) for the device's TensorRT",
            file=sys.stderr,
        )
    return 0


# --------------------------------------------------------------------------------------------- triton
def add_triton(sub) -> None:
    p = sub.add_parser("triton", help="write a Triton Inference Server model repository from a bundle (torch-free)")
    p.add_argument("bundle", help="bundle directory from `ringfold export`")
    p.add_argument("--out", required=True, help="model repository folder (other models in it are left alone)")
    p.add_argument("--name", type=T.model_name_arg, help="model name (default: the bundle folder's name)")
    p.add_argument(
        "--precision",
        nargs="+",
        metavar="P",
        help="variants to serve: fp32 fp16 int8 int8-dynamic (default: every variant and engine of the bundle)",
    )
    p.add_argument(
        "--max-batch",
        type=T.positive_int,
        default=DEFAULT_MAX_BATCH,
        help="max_batch_size (plans: at most the profile's)",
    )
    p.add_argument(
        "--queue-delay-us",
        type=T.non_negative_int,
        default=DEFAULT_QUEUE_DELAY_US,
        help="dynamic batching max_queue_delay_microseconds",
    )
    p.add_argument("--overwrite", action="store_true", help="replace model folders ringfold wrote before")
    p.set_defaults(func=cmd_triton)


def cmd_triton(args: argparse.Namespace) -> int:
    write_triton_and_report(
        args.bundle,
        args.out,
        "triton",
        name=args.name,
        precisions=args.precision,
        max_batch=args.max_batch,
        queue_delay_us=args.queue_delay_us,
        overwrite=args.overwrite,
    )
    return 0


def write_triton_and_report(bundle: str | Path, out: str | Path, command: str, **options) -> None:
    """Write the repository; one line per model on stdout, notes on stderr as ``ringfold COMMAND: note: ...``."""
    repo = write_triton_repository(bundle, out, **options)
    for line in repo.summary_lines():
        print(line)
    for note in repo.notes:
        print(f"ringfold {command}: note: {note}", file=sys.stderr)
