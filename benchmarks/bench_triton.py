"""Triton repository benchmark, ViT-B/16 (random weights): seconds for ``ringfold triton`` on one bundle.

Exports a bundle with the fp32, fp16 and int8-dynamic variants, then writes the Triton model
repository from it ``--runs`` times into fresh folders — what a device pays once per bundle:
verifying every sha256, opening each ONNX graph with ONNX Runtime to check its inputs/outputs,
copying each model and hashing the copy. Prints JSON and a table; writes them and a PNG to --out.

    python benchmarks/bench_triton.py [--model ViT-B-16] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import emit, machine  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="ViT-B-16")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()

    from ringfold.demo_data import make_demo_dataset
    from ringfold.exporter.export import export_run
    from ringfold.exporter.precision import PrecisionRequest
    from ringfold.runtime.deploy.triton_repo import write_triton_repository
    from ringfold.trainer.run import write_synthetic_run

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        classes = make_demo_dataset(tmp / "data", per_class=2, size=256, seed=1)
        run = write_synthetic_run(tmp / "run", args.model, {"method": "arc", "rank": 50, "layers": "last:8"}, classes)
        request = PrecisionRequest(("fp32", "fp16", "int8-dynamic"))
        result = export_run(run, tmp / "bundle", ref_images=str(tmp / "data" / "test"), ref_count=4, precision=request)
        sizes = {p.name: p.stat().st_size for p in result.bundle.glob("model*.onnx")}
        seconds = []
        for i in range(args.runs):
            t0 = time.perf_counter()
            repo = write_triton_repository(result.bundle, tmp / f"repo{i}", name="vit_b16")
            seconds.append(time.perf_counter() - t0)
        models = [m.name for m in repo.models]

    results = {
        "model": args.model,
        "weights": "random weights",
        "machine": machine(),
        "variants": ["fp32", "fp16", "int8-dynamic"],
        "model_bytes": sizes,
        "triton_models": models,
        "write_seconds": {"median": statistics.median(seconds), "min": min(seconds), "runs": seconds},
    }
    total_mb = sum(sizes.values()) / 1e6
    table = "\n".join(
        [
            f"{args.model} (random weights), CPU: {results['machine'].get('cpu', '?')}, {args.runs} runs",
            "",
            "| what | models | ONNX bytes copied | seconds (median) | seconds (min) |",
            "|---|---|---|---|---|",
            f"| `ringfold triton` (verify bundle, check I/O, copy + hash) | {', '.join(models)} | "
            f"{total_mb:.0f} MB | {statistics.median(seconds):.2f} | {min(seconds):.2f} |",
        ]
    )
    emit(
        Path(args.out),
        "triton_cpu",
        results,
        table,
        {"write repository (median)": statistics.median(seconds)},
        f"{args.model} random weights: ringfold triton",
        "seconds",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
