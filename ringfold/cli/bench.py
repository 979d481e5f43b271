"""``ringfold bench``: latency (p50/p90/p99) and throughput of a bundle's variants, written as a report folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from ringfold.runtime.infer.bench import write_bench

from .. import cli_types as T
from .. import commands
from ..ownership import check_apart, check_target
from .common import beside, write_report


def add_bench(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="latency (p50/p90/p99) and throughput per backend, precision and batch; ends with what to deploy "
        "(per batch, the fastest configuration whose parity gate passed here)",
    )
    p.add_argument("bundle")
    p.add_argument("--precision", default="all", help="all, or a comma list of the bundle's variants")
    p.add_argument("--provider", default="cpu", help="comma list of cpu,cuda,trt, or all available")
    p.add_argument(
        "--backend",
        default="all",
        help="comma list of onnxruntime,openvino,tensorrt, or all (ONNX Runtime, and OpenVINO when installed)",
    )
    p.add_argument(
        "--parity",
        nargs="+",
        metavar="PARITY_JSON",
        help="parity.json files of `ringfold parity` on this bundle and machine whose verdicts mark each "
        "configuration (default: bench runs each one's gate on the bundle's reference set)",
    )
    p.add_argument("--batch-sizes", type=T.positive_int_list, default="1,2,4,8", help="comma list of batch sizes")
    p.add_argument("--runs", type=T.positive_int, default=50)
    p.add_argument("--warmup", type=T.non_negative_int, default=10)
    p.add_argument("--threads", type=T.positive_int, help="ONNX Runtime intra-op threads (default: library default)")
    p.add_argument("--base", help="base model ONNX to compare against (default: the bundle's, if exported)")
    p.add_argument("--out", help="report directory (default BUNDLE.bench next to the bundle)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing report folder that ringfold wrote, unchanged"
    )
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else beside(Path(args.bundle), ".bench")
    check_apart(out, args.bundle, "bundle")
    check_target(out, args.overwrite)  # before minutes of timing
    bundle, report = commands.bench(
        args.bundle,
        args.precision,
        args.provider,
        args.batch_sizes,  # validated by the parser
        runs=args.runs,
        warmup=args.warmup,
        threads=args.threads,
        base=args.base,
        backend=args.backend,
        parity=args.parity,
    )
    written = write_report(lambda d: write_bench(report, d), out, "--out", "ringfold bench", args.overwrite)
    print(report.to_markdown())
    print(f"report: {', '.join(str(w) for w in written)}")
    return 0
