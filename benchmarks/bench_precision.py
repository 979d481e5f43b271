"""Precision benchmark, ViT-B/16 (random weights): PyTorch eager vs ONNX Runtime fp32, fp16, int8 static, int8 dynamic.

One run on this CPU: exports a bundle with every variant (int8 calibrated on
generated images through the runtime's preprocessing), measures batch-1
latency of each and of PyTorch eager, and the parity of each against the
PyTorch reference on the bundle's reference set. Prints JSON and a table;
writes them and a PNG to --out.

    python benchmarks/bench_precision.py [--model ViT-B-16] [--runs 20] [--calib-images 64]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import emit, machine, time_call  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="ViT-B-16")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--calib-images", type=int, default=64)
    ap.add_argument("--calib-method", default="minmax")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()

    result, bench, torch_ms = measure(args)
    parity = result.manifest["export"]["variants_vs_torch"]
    latency = {"pytorch eager (adapters unfolded)": torch_ms}
    latency.update({f"onnxruntime {p.precision}": p.p50_ms for p in bench.points})
    results = summary(args, latency, parity)
    table = "\n".join(
        [
            f"{args.model} (random weights), ARC rank 50 last 8 blocks folded, batch 1, "
            f"CPU: {results['machine'].get('cpu', '?')}, 32 reference images",
            "",
            "| backend | p50 ms | speed vs ORT fp32 | max abs Δlogit | min cosine | top-1 agreement |",
            "|---|---|---|---|---|---|",
            *table_rows(latency, parity),
        ]
    )
    emit(
        Path(args.out),
        "precision_cpu",
        results,
        table,
        latency,
        f"{args.model} random weights, batch 1, CPU",
        "p50 latency (ms)",
    )
    return 0


def measure(args: argparse.Namespace):
    """Export every precision of a synthetic run (calibrated on demo images), bench each on ONNX Runtime CPU,
    and time the unfolded PyTorch model: (export result, bench result, PyTorch p50 ms)."""
    import torch

    from ringfold.demo_data import make_demo_dataset
    from ringfold.exporter.export import export_run
    from ringfold.exporter.precision import PrecisionRequest
    from ringfold.runtime.bundle.loader import load_bundle
    from ringfold.runtime.infer.bench import run_bench
    from ringfold.trainer.head import build_classifier
    from ringfold.trainer.run import load_adapted_model, write_synthetic_run
    from ringfold.trainer.text import class_embeddings

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        classes = make_demo_dataset(tmp / "data", per_class=max(2, args.calib_images // 4), size=256, seed=1)
        run = write_synthetic_run(tmp / "run", args.model, {"method": "arc", "rank": 50, "layers": "last:8"}, classes)
        request = PrecisionRequest(
            ("fp32", "fp16", "int8", "int8-dynamic"), str(tmp / "data" / "train"), args.calib_method
        )
        result = export_run(
            run, tmp / "bundle", ref_images=str(tmp / "data" / "test"), ref_count=32, precision=request, progress=True
        )
        bundle = load_bundle(result.bundle)
        bench = run_bench(bundle, list(bundle.variants), ["cpu"], [1], args.runs, args.warmup)

        record, loaded, _ = load_adapted_model(run)
        with torch.no_grad():
            emb = class_embeddings(loaded.model, loaded.tokenizer, record.classnames, record.templates)
            eager = build_classifier(loaded.model, emb)
            x = torch.randn(1, 3, *record.preprocess.size)
            torch_ms = time_call(lambda: eager(x), args.warmup, args.runs)["p50_ms"]
    return result, bench, torch_ms


def summary(args: argparse.Namespace, latency: dict, parity: dict) -> dict:
    import torch

    fp32 = latency["onnxruntime fp32"]
    return {
        "model": args.model,
        "weights": "random weights",
        "batch": 1,
        "machine": machine(),
        "torch_threads": torch.get_num_threads(),
        "calibration": {"images": args.calib_images, "method": args.calib_method},
        "latency_p50_ms": latency,
        "parity_vs_pytorch_on_reference_set": parity,
        "speedups": {
            "ort_fp32_over_torch_eager": latency["pytorch eager (adapters unfolded)"] / fp32,
            **{
                f"ort_{k.split()[-1]}_over_ort_fp32": fp32 / v
                for k, v in latency.items()
                if k.startswith("onnxruntime")
            },
        },
    }


def table_rows(latency: dict, parity: dict) -> list[str]:
    fp32 = latency["onnxruntime fp32"]
    rows = []
    for name, ms in latency.items():
        precision = name.split()[-1] if name.startswith("onnxruntime") else None
        par = parity.get(precision, {}) if precision else {}
        parity_text = (
            f"{par['max_abs_logit']:.3g} | {par['cosine_min']:.5f} | {par['top1_agreement']:.1%}"
            if par
            else "reference | — | —"
        )
        rows.append(f"| {name} | {ms:.1f} | {fp32 / ms:.2f}× | {parity_text} |")
    return rows


if __name__ == "__main__":
    sys.exit(main())
