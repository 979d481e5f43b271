"""What fused attention buys on ONNX Runtime CPU: packed q/k/v vs split q/k/v vs ORT's fused Attention.

ViT-B/16 with RANDOM weights (timing only), fp32, batch 1 and 8, ONNX Runtime CPU at ORT_ENABLE_ALL.
Three graphs of the same classifier, timed interleaved (round-robin rounds, best median per graph,
so a shared machine's load hits all three alike):

- packed: the export before the split (one (3·C)×C MatMul, then Split), as open_clip holds it
- split: the bundle's model.onnx (q, k, v as three MatMul+Add; what the exporter writes)
- fused: the split graph after ``onnxruntime.transformers.optimizer`` (model_type="clip"), one
  com.microsoft Attention node per layer

    python benchmarks/bench_attention.py [--model ViT-B-16] [--runs 10] [--rounds 3] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import machine, time_call, write_results  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="ViT-B-16")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        graphs = export_graphs(args.model, Path(tmp))
        results = {"model": args.model, "weights": "random weights", "machine": machine(), **graphs["info"]}
        results["latency_p50_ms"] = time_graphs(
            graphs["paths"], [int(b) for b in args.batches.split(",")], graphs["info"]["image_size"], args
        )
    write_results(Path(args.out), "attention_cpu", results, table(results))
    print(table(results))
    return 0


def export_graphs(model_name: str, tmp: Path) -> dict:
    """The packed, split and fused graphs of the random-init classifier, with their op counts."""
    import torch
    from onnxruntime.transformers.optimizer import optimize_model

    from ringfold.exporter import onnx_export
    from ringfold.exporter.onnx_export import export_onnx, op_histogram
    from ringfold.trainer.head import build_classifier
    from ringfold.trainer.models import load_clip
    from ringfold.trainer.text import class_embeddings

    base = load_clip(model_name, random_init=True)
    with torch.no_grad():
        emb = class_embeddings(base.model, base.tokenizer, [f"class {i}" for i in range(10)], ["a photo of a {}."])
    classifier, size = build_classifier(base.model, emb), base.preprocess.size
    paths = {name: tmp / f"{name}.onnx" for name in ("packed", "split", "fused")}
    real = onnx_export.split_attention
    onnx_export.split_attention = lambda module: contextlib.nullcontext(0)  # the export as it was
    try:
        export_onnx(classifier, size, paths["packed"])
    finally:
        onnx_export.split_attention = real
    export_onnx(classifier, size, paths["split"])
    fused = optimize_model(str(paths["split"]), model_type="clip", num_heads=0, hidden_size=0, opt_level=0)
    fused.save_model_to_file(str(paths["fused"]))
    counts = {name: collections.Counter(op_histogram(p)) for name, p in paths.items()}
    info = {
        "image_size": list(size),
        "layers": len(base.model.visual.transformer.resblocks),
        "fused_attention_nodes": counts["fused"]["Attention"],
        "matmuls": {name: c["MatMul"] for name, c in counts.items()},
    }
    return {"paths": paths, "info": info}


def time_graphs(
    paths: dict[str, Path], batches: list[int], size: list[int], args: argparse.Namespace
) -> dict[str, dict[str, float]]:
    """Best-of-rounds p50 per (graph, batch), the graphs interleaved within each round."""
    import numpy as np

    from ringfold.runtime.backends.onnxruntime.session import create_session

    sessions = {name: create_session(p, provider="cpu", optimization="all") for name, p in paths.items()}
    best: dict[str, dict[str, float]] = {name: {} for name in paths}
    for _ in range(args.rounds):
        for batch in batches:
            x = np.random.default_rng(0).random((batch, 3, *size), dtype=np.float32)
            for name, session in sessions.items():
                ms = time_call(lambda s=session, x=x: s.run(["logits"], {"image": x}), args.warmup, args.runs)["p50_ms"]
                best[name][f"batch {batch}"] = min(best[name].get(f"batch {batch}", float("inf")), ms)
    return best


def table(results: dict) -> str:
    lat = results["latency_p50_ms"]
    rows = []
    for batch in lat["split"]:
        packed, split, fused = (lat[g][batch] for g in ("packed", "split", "fused"))
        rows.append(f"| {batch} | {packed:.1f} | {split:.1f} | {fused:.1f} | {packed / fused:.2f}× |")
    return "\n".join(
        [
            f"{results['model']} ({results['weights']}), fp32, ONNX Runtime CPU at ORT_ENABLE_ALL, p50 ms "
            f"(best of interleaved rounds); fused Attention nodes {results['fused_attention_nodes']} "
            f"of {results['layers']} layers",
            "",
            "| batch | packed q/k/v | split q/k/v | fused Attention | packed / fused |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
