"""``ringfold export``: fold a run's adapters and write the ONNX bundle (and, with --triton, a Triton repository)."""

from __future__ import annotations

import argparse
import sys

from ringfold.runtime.deploy.triton_repo import preflight

from .. import cli_types as T
from .deploy import write_triton_and_report


def add_export(sub) -> None:
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
    _add_precision_options(p)
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


def _add_precision_options(p: argparse.ArgumentParser) -> None:
    """The variants to write and the int8 calibration behind them."""
    p.add_argument(
        "--precision",
        nargs="+",
        default=["fp32"],
        metavar="P",
        help="variants to write: fp32 (always) fp16 int8 int8-fp16 (TensorRT's int8 graph) int8-dynamic",
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


def cmd_export(args: argparse.Namespace) -> int:
    from ringfold.exporter.export import export_run  # torch and onnx: the [export] extra, loaded when it runs
    from ringfold.exporter.precision import PrecisionRequest, variant_messages  # the [export] extra

    if args.triton:  # refuse a repository folder that cannot be written before the export, not after
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
        write_triton_and_report(result.bundle, args.triton, "export", overwrite=args.overwrite)
    errors, notes = variant_messages(result.manifest)
    if result.manifest["export"].get("text_skipped"):
        notes.append(f"no text tower in the bundle: {result.manifest['export']['text_skipped']}")
    for line in notes:
        print(f"ringfold export: note: {line}", file=sys.stderr)
    for line in errors:  # the bundle is valid but lacks a variant the user asked for: exit 2
        print(f"ringfold export: error: {line}", file=sys.stderr)
    return 2 if errors else 0
