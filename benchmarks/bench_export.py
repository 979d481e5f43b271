"""Export time (issue 26): where ``ringfold export`` spends its time on a ViT-B/16 run, every precision.

ViT-B/16 with RANDOM weights (no download): a synthetic ARC run (rank 8, every block) written by
``write_synthetic_run``, exported by ``ringfold export`` in a child process with fp32, fp16, int8
(calibrated on the demo dataset's generated training images: what calibration reads, not what it
measures, sets the time) and int8-dynamic. The wall time is the child's; the per-step split comes from
the manifest's ``export.steps_s`` and ``variants.*.seconds``; peak RSS from ``getrusage`` of the child.

Writes benchmarks/results/export_cpu.{json,md,png}. The target is 30 s on 2 idle cores.

    python benchmarks/bench_export.py [--calib-images 96] [--ref-count 16] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, machine  # noqa: E402

PRECISIONS = ("fp32", "fp16", "int8", "int8-dynamic")
TARGET_S = 30.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calib-images", type=int, default=96, help="calibration images (4 classes, generated)")
    ap.add_argument("--ref-count", type=int, default=16, help="reference images the export checks on")
    ap.add_argument("--repeats", type=int, default=1, help="exports timed one after another")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run, calib, ref = make_run(Path(tmp), args.calib_images)
        runs = [export_once(run, calib, ref, Path(tmp) / f"bundle{i}", args.ref_count) for i in range(args.repeats)]
    results = {"model": "ViT-B-16, random weights, ARC rank 8 on every block", "precisions": list(PRECISIONS),
               "calibration_images": args.calib_images, "reference_images": args.ref_count,
               "machine": machine(), "target_s": TARGET_S, "runs": runs}  # fmt: skip
    best = min(runs, key=lambda r: r["wall_s"])
    title = f"ringfold export {best['wall_s']:.1f} s (ViT-B/16, random weights, {args.calib_images} calib images)"
    emit(Path(args.out), "export_cpu", results, table(results), bars(best), title, "seconds")
    return 0


def bars(run: dict) -> dict[str, float]:
    """The run's seconds by step, the variant conversion split per variant, and what lies outside the steps."""
    steps = {k: v for k, v in run["steps"].items() if v >= 0.05}
    convert = steps.pop("variants_convert", 0.0)
    variants = {f"convert {name}": s for name, s in run["variant_s"].items()}
    outside = run["wall_s"] - sum(steps.values()) - convert
    return {**steps, **variants, "start-up, imports, hashing": round(outside, 2)}


def make_run(tmp: Path, calib_images: int) -> tuple[Path, Path, Path]:
    from ringfold.demo_data import make_demo_dataset
    from ringfold.trainer.run import write_synthetic_run

    per_class = -(-calib_images // 4)
    classes = make_demo_dataset(tmp / "data", per_class=per_class, size=256, seed=1)
    run = write_synthetic_run(tmp / "run", "ViT-B-16", {"method": "arc", "rank": 8}, classes)
    return run, tmp / "data" / "train", tmp / "data" / "test"


def export_once(run: Path, calib: Path, ref: Path, out: Path, ref_count: int) -> dict:
    cmd = [sys.executable, "-m", "ringfold", "export", str(run), "--out", str(out), "--quiet",
           "--precision", *PRECISIONS, "--calib", str(calib), "--calib-min", "1",
           "--ref-images", str(ref), "--ref-count", str(ref_count)]  # fmt: skip
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    manifest = json.loads((out / "manifest.json").read_text())
    steps = dict(manifest["export"]["steps_s"])
    variants = {name: v.get("seconds") for name, v in manifest["variants"].items() if v.get("seconds")}
    rss_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6
    print(f"export: {wall:.1f} s wall (load {load:.1f})", flush=True)
    return {"wall_s": round(wall, 2), "load_before": load, "steps": steps, "variant_s": variants,
            "peak_rss_gb_children": round(rss_gb, 2)}  # fmt: skip


def table(results: dict) -> str:
    m = results["machine"]
    lines = [
        f"{results['model']}; {results['calibration_images']} calibration images (generated), "
        f"{results['reference_images']} reference images; CPU: {m.get('cpu')}, {m.get('cpu_count')} cores",
        "",
        "| run | load before | wall s | peak RSS GB | steps (s) | variants (s) |",
        "|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(results["runs"], 1):
        steps = ", ".join(f"{k} {v:.1f}" for k, v in sorted(r["steps"].items(), key=lambda kv: -kv[1]))
        variants = ", ".join(f"{k} {v:.1f}" for k, v in r["variant_s"].items())
        lines.append(f"| {i} | {r['load_before']:.1f} | {r['wall_s']:.1f} | {r['peak_rss_gb_children']} | "
                     f"{steps} | {variants} |")  # fmt: skip
    lines.append(f"\nTarget: {results['target_s']:.0f} s wall on 2 idle cores.")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
