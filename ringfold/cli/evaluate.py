"""``ringfold evaluate``: a bundle's accuracy on labelled images (torch-free), or a run's CoOp base-to-novel figures.

One command, two inputs, told apart by what the folder is: a bundle (it has manifest.json) is evaluated
on ``--images DIR`` with the runtime only — the device's way to see how right the model is on the user's
own photos — and a run folder gets the CoOp base/novel/H protocol with torch (the [train] extra). Flags
of the other mode are refused in one line, and everything is checked before a model opens.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ringfold.runtime.bundle.loader import load_bundle
from ringfold.runtime.bundle.spec import MANIFEST_FILE
from ringfold.runtime.infer.evaluate import evaluate_images, labelled_images, open_runs, run_names
from ringfold.runtime.infer.evaluate_report import to_markdown, write_evaluate
from ringfold.runtime.parity.metrics import tolerance_for

from .. import cli_types as T
from ..errors import RingfoldError
from ..extras import require
from ..ownership import check_apart, check_owned_json, check_target, write_owned_json
from .common import beside, write_report

#: flags of each mode, as (dest, flag): given with the other mode's folder, they are refused
_BUNDLE_ONLY = (("images", "--images"), ("report", "--report"), ("precision", "--precision"),
                ("backend", "--backend"), ("provider", "--provider"), ("threads", "--threads"),
                ("skip_bad", "--skip-bad"))  # fmt: skip
_RUN_ONLY = (("data", "--data"), ("image_root", "--image-root"), ("split", "--split"),
             ("batch_size", "--batch-size"), ("device", "--device"), ("out", "--out"))  # fmt: skip


def add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="a bundle's accuracy on your labelled images (torch-free), or a run's CoOp base/novel"
    )
    p.add_argument(
        "run",
        metavar="BUNDLE_OR_RUN",
        help="a bundle folder (has manifest.json): accuracy on --images, torch-free; "
        "a run folder from `ringfold train`: CoOp base-to-novel (needs torch)",
    )
    b = p.add_argument_group("a bundle (torch-free)")
    b.add_argument("--images", help="ImageFolder of labelled images: DIR/<class name>/*.jpg ('_' for ' ' accepted)")
    b.add_argument("--report", help="report folder (default: BUNDLE.evaluate next to the bundle)")
    b.add_argument("--precision", help="all (default), or a comma list of the bundle's variants")
    b.add_argument("--backend", help="comma list of onnxruntime (default), tensorrt (build-engine's engine), openvino")
    b.add_argument("--provider", help="ONNX Runtime provider: auto (default) | trt | cuda | cpu")
    b.add_argument("--threads", type=T.positive_int, help="ONNX Runtime intra-op threads")
    b.add_argument("--skip-bad", action="store_true", help="report unreadable images and go on (exit 2 at the end)")
    r = p.add_argument_group("a run (CoOp base-to-novel, needs torch)")
    r.add_argument("--data", help="the full dataset (base + new classes; default: the run's recorded data)")
    r.add_argument("--image-root", help="folder the CoOp split paths are relative to")
    r.add_argument("--split", choices=["train", "val", "test"], help="split to evaluate (default: test)")
    r.add_argument("--batch-size", type=T.positive_int, help="images per batch (default: 64)")
    r.add_argument("--device", help="auto (default) | cpu | cuda | cuda:N")
    r.add_argument("--out", help="also write the results to this JSON file (atomically)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument(
        "--overwrite", action="store_true", help="replace a --report folder / --out file an earlier evaluate wrote"
    )
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=cmd_evaluate)


def _refuse(args: argparse.Namespace, flags: tuple[tuple[str, str], ...], why: str) -> None:
    given = [flag for dest, flag in flags if getattr(args, dest) not in (None, False)]
    if given:
        raise RingfoldError(f"{' '.join(given)}: {why}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    if (Path(args.run) / MANIFEST_FILE).is_file():
        _refuse(args, _RUN_ONLY, f"{args.run} is a bundle; these flags evaluate a run folder — drop them")
        return _evaluate_bundle(args)
    _refuse(args, _BUNDLE_ONLY, f"{args.run} has no {MANIFEST_FILE}, so it is no bundle; pass a bundle folder")
    return _evaluate_run(args)


def _evaluate_bundle(args: argparse.Namespace) -> int:
    if not args.images:
        raise RingfoldError(f"evaluate {args.run}: pass --images DIR, an ImageFolder whose folders are its classes")
    bundle = load_bundle(args.run)
    images = labelled_images(args.images, bundle.labels)  # unknown folders refused before any model opens
    out = Path(args.report) if args.report else beside(Path(args.run), ".evaluate")
    check_apart(out, args.run, "bundle", "--report")
    check_target(out, args.overwrite, "--report")
    backends = (args.backend or "onnxruntime").split(",")
    runs = run_names(bundle, (args.precision or "all").split(","), backends)
    models, not_opened = open_runs(bundle, runs, args.provider or "auto", args.threads)
    for run, why in not_opened.items():
        print(f"ringfold evaluate: note: {run} not evaluated: {why}", file=sys.stderr)
    margins = {precision: tolerance_for(precision).tie_margin for _, precision, _ in runs}
    report = evaluate_images(
        bundle, images, models, margins, not_opened=not_opened, skip_bad=args.skip_bad, progress=not args.quiet
    )
    written = write_report(lambda d: write_evaluate(report, d), out, "--report", "ringfold evaluate", args.overwrite)
    if bundle.random_weights and not args.json:
        print(f"note: {bundle.describe()} — random weights, these accuracies are not meaningful", file=sys.stderr)
    print(json.dumps(report.to_dict(), indent=2) if args.json else to_markdown(report))
    if not args.json:
        print(f"report: {', '.join(str(w) for w in written)}")
    if report.skipped:
        print(f"ringfold evaluate: {len(report.skipped)} unreadable image(s) skipped", file=sys.stderr)
        return 2
    return 0


def _evaluate_run(args: argparse.Namespace) -> int:
    require("evaluate", "train")  # a run is evaluated with torch: one line naming the extra, before any work
    from ringfold.trainer.evaluate import evaluate_run, format_result  # torch: the [train] extra

    if args.out:
        check_owned_json(args.out, "ringfold evaluate", args.overwrite)  # before minutes of evaluation
    result = evaluate_run(
        args.run,
        args.data,
        image_root=args.image_root,
        split=args.split or "test",
        batch_size=args.batch_size or 64,
        device=args.device or "auto",
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
