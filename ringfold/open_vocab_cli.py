"""The CLI side of open vocabulary: ``classify --classes/--templates`` and ``ringfold relabel`` (runtime only)."""

from __future__ import annotations

import argparse
import sys

from . import cli_types as T
from .errors import RingfoldError

#: --classes help of classify and relabel: what a value may be and what is refused
CLASSES_HELP = (
    "'cat,dog,…' (at least two), or a file with one class per line (blank lines and lines starting with '#' "
    "are comments, skipped); a value that looks like a path must exist; names that tokenize the same, and "
    "control/invisible/line-separator characters (Unicode Cc Cf Cs Zl Zp), are refused"
)


def _text_provider(provider: str | None) -> str:
    """The text tower runs once per class list: CUDA when asked for, else the CPU (never a TensorRT build)."""
    return "cuda" if provider == "cuda" else "cpu"


def open_vocabulary_plan(bundle, args: argparse.Namespace) -> tuple[list[str], tuple[str, ...]] | None:
    """``classify --classes/--templates`` checked against the bundle before its model loads; None without them.

    ``--classes ''`` is given (and refused as empty), never taken for "not given"."""
    from ringfold.runtime.class_list import check_against_bundle, parse_classes, parse_templates

    if args.classes is None and args.templates is None:
        return None
    if args.classes is None:
        raise RingfoldError("--templates needs --classes: pass the class names to build the head from")
    classes = parse_classes(args.classes)
    info = bundle.manifest.text
    templates = parse_templates(args.templates, info.templates if info else ())
    check_against_bundle(bundle, classes, templates, "--classes")
    return classes, templates


def open_vocabulary(bundle, model, plan: tuple[list[str], tuple[str, ...]], args: argparse.Namespace):
    """(bundle with the new labels, model scoring them) for ``classify --classes``."""
    from ringfold.runtime.open_vocab import with_classes

    classes, templates = plan
    return with_classes(bundle, model, classes, templates, _text_provider(args.provider), args.threads)


def cmd_relabel(args: argparse.Namespace) -> int:
    from ringfold.runtime.class_list import parse_classes, parse_templates
    from ringfold.runtime.relabel import ENGINE_NOTE, relabel_bundle

    classes = parse_classes(args.classes)
    # None (no --templates, or 'bundle'): relabel_bundle takes the bundle's own from the manifest it verifies
    templates = parse_templates(args.templates, ()) or None
    result = relabel_bundle(
        args.bundle,
        args.out,
        classes,
        templates,
        overwrite=args.overwrite,
        provider=_text_provider(args.provider),
        threads=args.threads,
    )
    print(result.summary())
    for name, why in result.dropped.items():
        print(f"ringfold relabel: note: variant {name} dropped: {why}", file=sys.stderr)
    print(f"ringfold relabel: note: {ENGINE_NOTE}", file=sys.stderr)
    return 0


def add_relabel_parser(sub) -> None:
    p = sub.add_parser("relabel", help="new bundle with a head for other classes, from the bundle's text tower")
    p.add_argument("bundle", help="bundle directory from `ringfold export` (with text.onnx)")
    p.add_argument("--classes", required=True, help=CLASSES_HELP)
    p.add_argument("--templates", help="'bundle' (default: the bundle's), 'a photo of a {}.' or a .txt/.json file")
    p.add_argument("--out", required=True, help="bundle directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it is a bundle ringfold wrote")
    p.add_argument("--provider", default="cpu", choices=["cpu", "cuda"], help="where the text tower runs")
    p.add_argument("--threads", type=T.positive_int, help="ONNX Runtime intra-op threads")
    p.set_defaults(func=cmd_relabel)
