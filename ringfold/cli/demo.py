"""``ringfold demo``: offline end to end on generated data (train ARC, export, classify, parity): ringfold/demo.py."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import cli_types as T
from ..demo import run_demo


def add_demo(sub) -> None:
    p = sub.add_parser("demo", help="offline end to end: generate data, train ARC, export, classify, parity")
    p.add_argument("--out", default="ringfold-demo", help="working directory (default ./ringfold-demo)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an earlier demo folder (only what ringfold wrote, unchanged)"
    )
    p.add_argument("--epochs", type=T.positive_int, default=30)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(Path(args.out), epochs=args.epochs, overwrite=args.overwrite, quiet=args.quiet)
