"""Does ``--aux-every K`` cost accuracy? AdaRing trained on the demo image set with K = 1, 2, 3, a few seeds.

The tiny random-weights model on ringfold's generated 4-class set (the demo's data and schedule: 16
shots per class, 30 epochs, batch 16, no augmentation), so it compares the exact objective with its
every-K-th-step approximation on a toy task, not on a real dataset: a check that the approximation
trains as well here, not a claim about CLIP on ImageNet.

    python benchmarks/bench_aux_every.py [--ks 1 2 3] [--seeds 0 1 2] [--epochs 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import machine, write_results  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ks", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()

    import torch

    from ringfold.demo import DEMO_MODEL
    from ringfold.demo_data import make_demo_dataset
    from ringfold.trainer.train import TrainConfig, train

    results = {
        "weights": "random weights",
        "model": DEMO_MODEL,
        "data": "ringfold demo set (4 classes, 16 shots, 12 test images per class)",
        "epochs": args.epochs,
        "machine": machine(),
        "torch_threads": torch.get_num_threads(),
        "runs": {},
    }
    lines = [
        f"AdaRing on the demo set, {DEMO_MODEL} (random weights), {args.epochs} epochs, seeds {args.seeds}",
        "",
        "| --aux-every | final eval acc (mean ± sd) | per seed | train s (mean) |",
        "|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        make_demo_dataset(data, per_class=24, size=96, seed=0)
        for k in args.ks:
            accs, seconds = [], []
            for seed in args.seeds:
                config = TrainConfig(
                    model=DEMO_MODEL,
                    random_init=True,
                    method="adaring",
                    adapter={"layers": "all", "aux_every": k},
                    data=str(data),
                    shots=16,
                    epochs=args.epochs,
                    batch_size=16,
                    lr=1e-2,
                    warmup_epochs=1.0,
                    augment=False,
                    device="cpu",
                    seed=seed,
                    progress=False,
                )
                t0 = time.perf_counter()
                record = train(config, Path(tmp) / f"k{k}-seed{seed}")
                seconds.append(time.perf_counter() - t0)
                accs.append(record.metrics["final_eval_acc"])
                print(f"aux_every {k} seed {seed}: eval acc {accs[-1]:.3f} in {seconds[-1]:.1f} s", flush=True)
            mean, sd = statistics.fmean(accs), statistics.pstdev(accs)
            results["runs"][str(k)] = {"final_eval_acc": accs, "train_s": seconds, "mean_acc": mean, "sd_acc": sd}
            per_seed = ", ".join(f"{a:.3f}" for a in accs)
            lines.append(f"| {k} | {mean:.3f} ± {sd:.3f} | {per_seed} | {statistics.fmean(seconds):.1f} |")
    out = Path(args.out)
    write_results(out, "aux_every_cpu", results, "\n".join(lines))
    plot(out / "aux_every_cpu.png", results, test_images=48)
    print("\n".join(lines))
    return 0


def plot(path: Path, results: dict, test_images: int) -> None:
    """Every seed's final accuracy per K (dots) with the mean (bar), on an axis from chance to 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for i, run in enumerate(runs.values()):
        accs = run["final_eval_acc"]
        ax.scatter([i] * len(accs), accs, color="tab:blue", zorder=3, label="a seed" if i == 0 else None)
        ax.hlines(run["mean_acc"], i - 0.25, i + 0.25, color="black", label="mean" if i == 0 else None)
    ax.axhline(0.25, color="grey", linestyle=":", label="chance (4 classes)")
    ax.set_xticks(range(len(runs)), [f"--aux-every {k}" for k in runs])
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"final eval accuracy ({test_images} test images)")
    ax.set_title(f"AdaRing on the demo set, {results['model']} (random weights)", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
