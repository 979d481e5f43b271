"""``ringfold evaluate``: a run's base/novel accuracy and their harmonic mean (CoOp base-to-novel)."""

from __future__ import annotations

import argparse
import json

from .. import cli_types as T
from ..ownership import check_owned_json, write_owned_json


def add_evaluate(sub) -> None:
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


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ringfold.trainer.evaluate import evaluate_run, format_result  # torch: the [train] extra

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
