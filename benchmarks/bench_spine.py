"""Zero-overhead benchmark: is the folded bundle as fast as the base model?

ViT-B/16 with RANDOM weights (no download possible), ARC adapters with random
non-zero weights, batch 1 on CPU. Measures the latency of PyTorch eager with
unfolded adapters, PyTorch folded, ONNX Runtime on the base model, ONNX
Runtime on the bundle, and the export wall time. Prints JSON and a table;
writes them (and a PNG) to --out.

    python benchmarks/bench_spine.py [--model ViT-B-16] [--runs 30] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import emit, machine, time_call  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="ViT-B-16")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch and ORT intra-op threads (0 = library default)")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    results = measure(args)
    p50 = {k: v["p50_ms"] for k, v in results["latency"].items()}
    emit(
        Path(args.out),
        "spine_cpu",
        results,
        table(args.model, results),
        p50,
        f"{args.model} random weights, batch 1, CPU",
        "p50 latency (ms)",
    )
    return 0


def measure(args: argparse.Namespace) -> dict:
    """Export a synthetic ARC run, then time the unfolded and folded PyTorch models and the ONNX bundle vs base."""
    import onnxruntime as ort
    import torch

    from ringfold.exporter.export import export_run
    from ringfold.exporter.onnx_export import export_onnx, op_histogram
    from ringfold.trainer.head import build_classifier
    from ringfold.trainer.models import load_clip
    from ringfold.trainer.run import write_synthetic_run

    if args.threads:
        torch.set_num_threads(args.threads)
    classes = [f"class {i}" for i in range(10)]
    adapter = {"method": "arc", "rank": 50, "layers": "last:8", "sites": "both"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run = write_synthetic_run(tmp / "run", args.model, adapter, classes)
        t0 = time.perf_counter()
        result = export_run(run, tmp / "bundle", ref_count=4, synthetic_ref=True, progress=False)  # no data: numerics
        export_s = time.perf_counter() - t0
        unfolded, folded, emb, size = _torch_classifiers(run)
        base = load_clip(args.model, random_init=True)
        base_onnx = tmp / "base.onnx"
        export_onnx(build_classifier(base.model, emb), size, base_onnx)
        results = {
            "model": args.model,
            "weights": "random weights",
            "adapter": adapter,
            "batch": 1,
            "torch_threads": torch.get_num_threads(),
            "ort_threads": args.threads or "default",
            "ort_version": ort.__version__,
            "torch_version": torch.__version__,
            "machine": machine(),
            "export_wall_s": round(export_s, 2),
            "ops_equal_base": op_histogram(result.bundle / "model.onnx") == op_histogram(base_onnx),
        }
        lat = _latencies(args, unfolded, folded, size, base_onnx, result.bundle / "model.onnx")
    results["latency"] = lat
    p50 = {k: v["p50_ms"] for k, v in lat.items()}
    results["ratios"] = {
        "bundle_over_base_ort": p50["onnxruntime cpu, bundle (folded)"] / p50["onnxruntime cpu, base model"],
        "folded_over_unfolded_torch": p50["pytorch eager, folded"] / p50["pytorch eager, adapters unfolded"],
        "ort_bundle_speedup_over_torch_unfolded": p50["pytorch eager, adapters unfolded"]
        / p50["onnxruntime cpu, bundle (folded)"],
    }
    return results


def _torch_classifiers(run: Path):
    """(unfolded classifier, folded classifier, class embeddings, image size) of the run's adapted model."""
    import torch

    from ringfold.exporter.fold import fold_adapters
    from ringfold.trainer.head import build_classifier
    from ringfold.trainer.run import load_adapted_model
    from ringfold.trainer.text import class_embeddings

    record, loaded, _ = load_adapted_model(run)
    with torch.no_grad():
        emb = class_embeddings(loaded.model, loaded.tokenizer, record.classnames, record.templates)
    unfolded = build_classifier(loaded.model, emb)
    folded_model = copy.deepcopy(loaded.model)
    fold_adapters(folded_model)
    return unfolded, build_classifier(folded_model, emb), emb, record.preprocess.size


def _latencies(args: argparse.Namespace, unfolded, folded, size, base_onnx: Path, bundle_onnx: Path) -> dict:
    """Batch-1 latency of each backend (PyTorch eager unfolded and folded, ONNX Runtime base and bundle)."""
    import numpy as np
    import torch

    from ringfold.runtime.backends.onnxruntime.model import OnnxModel

    x = torch.randn(1, 3, *size)
    lat = {}
    with torch.no_grad():
        lat["pytorch eager, adapters unfolded"] = time_call(lambda: unfolded(x), args.warmup, args.runs)
        lat["pytorch eager, folded"] = time_call(lambda: folded(x), args.warmup, args.runs)
    xn = x.numpy().astype(np.float32)
    threads = args.threads or None
    base_model = OnnxModel(base_onnx, provider="cpu", threads=threads)
    bundle_model = OnnxModel(bundle_onnx, provider="cpu", threads=threads)
    lat["onnxruntime cpu, base model"] = time_call(lambda: base_model.run(xn), args.warmup, args.runs)
    lat["onnxruntime cpu, bundle (folded)"] = time_call(lambda: bundle_model.run(xn), args.warmup, args.runs)
    return lat


def table(model: str, results: dict) -> str:
    rows = [f"| {k} | {v['p50_ms']:.1f} | {v['p90_ms']:.1f} |" for k, v in results["latency"].items()]
    r = results["ratios"]
    return "\n".join(
        [
            f"{model} (random weights), ARC rank 50 last 8 blocks, batch 1, CPU: {results['machine'].get('cpu', '?')}",
            "",
            "| backend | p50 ms | p90 ms |",
            "|---|---|---|",
            *rows,
            "",
            f"bundle / base (ORT): {r['bundle_over_base_ort']:.3f} · folded / unfolded (torch): "
            f"{r['folded_over_unfolded_torch']:.3f} · export wall time {results['export_wall_s']} s · "
            f"ONNX ops equal to base: {results['ops_equal_base']}",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
