"""``ringfold classify`` and ``ringfold relabel``: a bundle's predictions, and its head for other classes (torch-free).

Open vocabulary (``classify --classes/--templates``, ``relabel``) is checked against the bundle before
any model loads; the work is :func:`ringfold.commands.open_vocabulary` and ``runtime/vocab/relabel.py``.
"""

from __future__ import annotations

import argparse
import json
import sys

from ringfold.runtime.backends.registry import open_model
from ringfold.runtime.bundle.loader import load_bundle
from ringfold.runtime.infer.classify import iter_predictions
from ringfold.runtime.vocab.class_list import check_against_bundle, parse_classes, parse_templates
from ringfold.runtime.vocab.relabel import ENGINE_NOTE, relabel_bundle

from .. import cli_types as T
from .. import commands
from ..errors import RingfoldError
from .common import add_bundle_backend_options

#: --classes help of classify and relabel: what a value may be and what is refused
CLASSES_HELP = (
    "'cat,dog,…' (at least two), or a file with one class per line (blank lines and lines starting with '#' "
    "are comments, skipped); a value that looks like a path must exist; names that tokenize the same, and "
    "control/invisible/line-separator characters (Unicode Cc Cf Cs Zl Zp), are refused"
)


# ------------------------------------------------------------------------------------------- classify
def add_classify(sub) -> None:
    p = sub.add_parser("classify", help="classify images with a bundle (torch-free)")
    add_bundle_backend_options(p)
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
    p.add_argument("--classes", help=f"classify into these classes instead: {CLASSES_HELP}")
    p.add_argument("--templates", help="with --classes: 'bundle' (default), 'a photo of a {}.' or a .txt/.json file")
    p.set_defaults(func=cmd_classify)


def cmd_classify(args: argparse.Namespace) -> int:
    bundle = load_bundle(args.bundle)
    vocabulary = _vocabulary(bundle, args.classes, args.templates)  # checked before the model loads
    model, preprocess = _open_model(bundle, args)
    if vocabulary is not None:  # open vocabulary: a head computed now with the bundle's text tower
        bundle, model = commands.open_vocabulary(
            bundle, model, *vocabulary, provider=args.provider, threads=args.threads
        )
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
        print(json.dumps(p.to_dict()) if args.json else commands.prediction_line(p), flush=True)
    return 2 if failed else 0


def _vocabulary(bundle, classes: str | None, templates: str | None) -> tuple[list[str], tuple[str, ...]] | None:
    """``--classes/--templates`` checked against the bundle before its model loads; None without them.

    ``--classes ''`` is given (and refused as empty), never taken for "not given"."""
    if classes is None and templates is None:
        return None
    if classes is None:
        raise RingfoldError("--templates needs --classes: pass the class names to build the head from")
    names = parse_classes(classes)
    info = bundle.manifest.text
    prompts = parse_templates(templates, info.templates if info else ())
    check_against_bundle(bundle, names, prompts, "--classes")
    return names, prompts


def _open_model(bundle, args: argparse.Namespace):
    """(model, preprocess): the normalised model on ``--backend``, or ``--input raw|raw-uint8``'s raw-pixel model
    and the client-side resize that feeds it (the model normalises; runtime/bundle/sections/raw_input.py)."""
    if args.input == "normalised":
        return open_model(bundle, args.precision, args.backend, args.provider, args.threads), None
    if args.backend != "onnxruntime" or args.precision != "fp32":
        raise RingfoldError("--input raw runs the fp32 raw-pixel model on ONNX Runtime; drop --backend/--precision")
    dtype = "uint8" if args.input == "raw-uint8" else "float32"
    return commands.open_raw_input(bundle, dtype, provider=args.provider, threads=args.threads)


# -------------------------------------------------------------------------------------------- relabel
def add_relabel(sub) -> None:
    p = sub.add_parser("relabel", help="new bundle with a head for other classes, from the bundle's text tower")
    p.add_argument("bundle", help="bundle directory from `ringfold export` (with text.onnx)")
    p.add_argument("--classes", required=True, help=CLASSES_HELP)
    p.add_argument("--templates", help="'bundle' (default: the bundle's), 'a photo of a {}.' or a .txt/.json file")
    p.add_argument("--out", required=True, help="bundle directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it is a bundle ringfold wrote")
    p.add_argument("--provider", default="cpu", choices=["cpu", "cuda"], help="where the text tower runs")
    p.add_argument("--threads", type=T.positive_int, help="ONNX Runtime intra-op threads")
    p.set_defaults(func=cmd_relabel)


def cmd_relabel(args: argparse.Namespace) -> int:
    classes = parse_classes(args.classes)
    # None (no --templates, or 'bundle'): relabel_bundle takes the bundle's own from the manifest it verifies
    templates = parse_templates(args.templates, ()) or None
    result = relabel_bundle(
        args.bundle,
        args.out,
        classes,
        templates,
        overwrite=args.overwrite,
        provider=commands.text_provider(args.provider),
        threads=args.threads,
    )
    print(result.summary())
    for name, why in result.dropped.items():
        print(f"ringfold relabel: note: variant {name} dropped: {why}", file=sys.stderr)
    print(f"ringfold relabel: note: {ENGINE_NOTE}", file=sys.stderr)
    return 0
