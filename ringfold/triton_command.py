"""``ringfold triton BUNDLE --out DIR`` and ``export --triton DIR``: the command-line side of the Triton repository.

Kept apart from ``cli.py`` so the parser and the printing live next to each other; the work is
:func:`ringfold.runtime.triton_repo.write_triton_repository`, which needs neither torch nor onnx.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import cli_types as T


def add_triton_parser(sub) -> None:
    """The ``triton`` subcommand."""
    from ringfold.runtime.triton_repo import DEFAULT_MAX_BATCH, DEFAULT_QUEUE_DELAY_US, model_name_arg

    p = sub.add_parser("triton", help="write a Triton Inference Server model repository from a bundle (torch-free)")
    p.add_argument("bundle", help="bundle directory from `ringfold export`")
    p.add_argument("--out", required=True, help="model repository folder (other models in it are left alone)")
    p.add_argument("--name", type=model_name_arg, help="model name (default: the bundle folder's name)")
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


def write_and_report(bundle: str | Path, out: str | Path, command: str, **options) -> None:
    """Write the repository; one line per model on stdout, notes on stderr."""
    from ringfold.runtime.triton_repo import write_triton_repository

    repo = write_triton_repository(bundle, out, **options)
    for line in repo.summary_lines():
        print(line)
    for note in repo.notes:
        print(f"ringfold {command}: note: {note}", file=sys.stderr)


def cmd_triton(args: argparse.Namespace) -> int:
    write_and_report(
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
