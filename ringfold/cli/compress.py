"""``ringfold compress``: a run's dense adapters decomposed into AdaRing tensor-ring cores (a new run)."""

from __future__ import annotations

import argparse

from .. import cli_types as T


def add_compress(sub) -> None:
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


def cmd_compress(args: argparse.Namespace) -> int:
    from ringfold.trainer.compress import compress_run, format_report, stderr_log  # torch: the [train] extra

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
