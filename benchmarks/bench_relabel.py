"""Open-vocabulary benchmark (random weights): `relabel` to 100 classes and text-tower latency per class, on CPU.

For each model: a synthetic run (random frozen weights, random ARC adapters), exported
with its text tower (fp32 + fp16); then, in a child process that imports the runtime
only (it asserts torch, open_clip and onnx were never imported), times

- ``relabel_bundle`` to 100 new classes × the templates (default 1), best and median of
  --runs runs, each writing a fresh verified bundle (text tower, head rewrite of
  both variants, reference recompute, ONNX Runtime check, hashing);
- ``text.onnx`` latency per prompt (= per class with one template) at several batch sizes.

Prints JSON and a table; writes them and a PNG to --out.

    python benchmarks/bench_relabel.py [--models ringfold-tiny-vit ViT-B-32] [--classes 100] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import emit, machine, time_call  # noqa: E402

TEXT_BATCHES = (1, 16, 64)


def device_step(bundle: Path, n_classes: int, n_templates: int, runs: int, threads: int | None, out_json: Path) -> None:
    """The torch-free half: runs in a child process."""
    import numpy as np

    from ringfold.runtime.bundle.loader import load_bundle
    from ringfold.runtime.vocab.relabel import relabel_bundle
    from ringfold.runtime.vocab.text_model import open_text_tower

    classes = [f"object number {i}" for i in range(n_classes)]
    templates = tuple(["a photo of a {}.", "a blurry photo of the {}.", "a close-up photo of a {}."][:n_templates])
    relabel_s = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            t0 = time.perf_counter()
            result = relabel_bundle(bundle, Path(tmp) / f"new{i}", classes, templates, threads=threads)
            relabel_s.append(time.perf_counter() - t0)
    tower = open_text_tower(load_bundle(bundle), threads=threads)
    ids = tower.tokenizer(classes[:64])
    t0 = time.perf_counter()
    tower.tokenizer([templates[0].format(c) for c in classes])
    tokenize_ms = (time.perf_counter() - t0) * 1000 / n_classes
    per_prompt = {}
    for batch in TEXT_BATCHES:
        x = np.repeat(ids, -(-batch // len(ids)), axis=0)[:batch]
        timing = time_call(lambda x=x, batch=batch: tower.model.embed(x, batch), warmup=1, runs=max(3, 64 // batch))
        per_prompt[str(batch)] = float(timing["p50_ms"]) / batch
    heavy = sorted(m for m in ("torch", "open_clip", "onnx") if m in sys.modules)
    assert not heavy, f"the relabel step imported {heavy}"
    out_json.write_text(
        json.dumps(
            {
                "relabel_s_best": min(relabel_s),
                "relabel_s_median": float(np.median(relabel_s)),
                "relabel_runs": runs,
                "variants_rewritten": result.variants,
                "onnx_vs_reference_max_abs_logit": result.max_abs_logit,
                "text_ms_per_prompt_by_batch": per_prompt,
                "tokenize_ms_per_prompt": tokenize_ms,
                "torch_imported": False,
            }
        )
    )


def measure_model(model: str, args: argparse.Namespace) -> dict:
    """Export a synthetic run of ``model`` with its text tower, then relabel it in a runtime-only subprocess."""
    from ringfold.exporter.export import export_run
    from ringfold.exporter.precision import PrecisionRequest
    from ringfold.trainer.run import write_synthetic_run

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run = write_synthetic_run(
            tmp / model / "run", model, {"method": "arc", "rank": 8, "layers": "all"}, ["cat", "dog", "owl", "fox"]
        )
        t0 = time.perf_counter()
        request = PrecisionRequest(("fp32", "fp16"))  # a synthetic run has no images: numerics only
        export_run(run, tmp / model / "bundle", ref_count=8, synthetic_ref=True, progress=False, precision=request)
        export_s = time.perf_counter() - t0
        text_check = json.loads((tmp / model / "bundle" / "manifest.json").read_text())["text"]["check"]
        out_json = tmp / model / "device.json"
        command = [sys.executable, __file__, "--device-step", str(tmp / model / "bundle"), str(out_json)]
        command += ["--classes", str(args.classes), "--templates", str(args.templates), "--runs", str(args.runs)]
        command += ["--threads", str(args.threads)] if args.threads else []
        subprocess.run(command, check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
        return {
            "export_with_text_s": export_s,
            "text_onnx_vs_torch_max_abs": text_check["onnx_vs_torch_max_abs"],
            **json.loads(out_json.read_text()),
        }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["ringfold-tiny-vit", "ViT-B-32"])
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--templates", type=int, default=1, choices=[1, 2, 3])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: all cores)")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--device-step", nargs=2, metavar=("BUNDLE", "OUT_JSON"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.device_step:
        bundle, out_json = (Path(p) for p in args.device_step)
        device_step(bundle, args.classes, args.templates, args.runs, args.threads, out_json)
        return 0

    load_before = os.getloadavg()
    per_model = {model: measure_model(model, args) for model in args.models}

    info = machine()
    results = {
        "weights": "random weights",
        "classes": args.classes,
        "templates": args.templates,
        "machine": info,
        "onnxruntime_threads": args.threads or "default (all cores)",
        "load_average_1_5_15_min": {"before": load_before, "after": os.getloadavg()},
        "models": per_model,
    }
    table = relabel_table(args, info, load_before, results, per_model)
    emit(
        Path(args.out),
        "relabel_cpu",
        results,
        table,
        {m: r["relabel_s_best"] for m, r in per_model.items()},
        f"relabel to {args.classes} classes, random weights, CPU",
        "seconds (best of runs)",
    )
    return 0


def relabel_table(args: argparse.Namespace, info: dict, load_before, results: dict, per_model: dict) -> str:
    rows = []
    for model, r in per_model.items():
        text = r["text_ms_per_prompt_by_batch"]
        rows.append(
            f"| {model} | {r['relabel_s_best']:.2f} | {r['relabel_s_median']:.2f} | "
            + " | ".join(f"{text[str(b)]:.2f}" for b in TEXT_BATCHES)
            + f" | {r['tokenize_ms_per_prompt']:.3f} | {r['onnx_vs_reference_max_abs_logit']:.2g} |"
        )
    return "\n".join(
        [
            f"relabel to {args.classes} classes × {args.templates} template(s), runtime only (no torch/onnx imported), "
            f"random weights, CPU: {info.get('cpu', '?')} ({info.get('cpu_count')} cores), "
            f"onnxruntime {info.get('onnxruntime')} ({args.threads or 'all'} threads), variants fp32 + fp16 rewritten; "
            f"load average {load_before[0]:.1f} before, {results['load_average_1_5_15_min']['after'][0]:.1f} after "
            "(other jobs shared this VM)",
            "",
            "| model | relabel s (best) | relabel s (median) | "
            + " | ".join(f"text ms/class @ batch {b}" for b in TEXT_BATCHES)
            + " | tokenizer ms/class | relabelled vs reference max abs Δlogit |",
            "|---|---|---|" + "---|" * len(TEXT_BATCHES) + "---|---|",
            *rows,
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
