"""``ringfold parity``: a bundle against its PyTorch reference, a report folder, exit 1 when the gate fails.

The comparison is :func:`ringfold.commands.parity` (the demo runs the same); this module checks the flags,
claims the report folder before any work and prints the result.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import cli_types as T
from .. import commands
from ..errors import GateFailed, RingfoldError
from ..ownership import check_apart, check_target
from .common import add_bundle_backend_options, beside, write_report


def add_parity(sub) -> None:
    p = sub.add_parser("parity", help="check a bundle against the PyTorch reference; exit 1 when the gate fails")
    add_bundle_backend_options(p)
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


def cmd_parity(args: argparse.Namespace) -> int:
    out = _check_flags(args)
    tolerance = {
        "max_abs_logit": args.max_abs_logit,
        "min_cosine": args.min_cosine,
        "min_top1": args.min_top1,
        "expected_logit_error": args.logit_error,
    }
    result = commands.parity(
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
        comparison = commands.preprocess_comparison(
            result.bundle,
            args.images,
            args.compare_preprocess,
            backend=args.backend,
            provider=args.provider,
            threads=args.threads,
        )

    def write(folder: Path) -> list[Path]:
        return result.report.write(folder) + (comparison.write_into(folder) if comparison else [])

    written = write_report(write, out, "--report", "ringfold parity", args.overwrite)
    _print_result(result, comparison, written)
    if not result.passed:
        raise GateFailed(f"{result.failure_line()}; see {out / 'parity.md'}")
    return 0


def _check_flags(args: argparse.Namespace) -> Path:
    """The report folder, once the flags make sense together and it may be written (before the comparison runs)."""
    if args.images and not (args.run or args.compare_preprocess):
        raise RingfoldError(
            "--images needs the PyTorch model to compare against (--run RUN/) or --compare-preprocess deepstream"
        )
    if args.compare_preprocess and not args.images:
        raise RingfoldError("--compare-preprocess needs --images DIR (an ImageFolder gives accuracies too)")
    out = Path(args.report) if args.report else beside(Path(args.bundle), ".parity")
    check_apart(out, args.bundle, "bundle", "--report")
    if args.run:
        check_apart(out, args.run, "run", "--report")
    check_target(out, args.overwrite, "--report")
    return out


def _print_result(result: commands.ParityResult, comparison, written: list[Path]) -> None:
    """The report in Markdown, where it was written, the sample-size warning and the pass line."""
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
