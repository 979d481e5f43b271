"""Compression benchmark, ViT-B/32-sized synthetic ARC adapters: seconds and relative error of the compress fit.

Builds the stacked adapter tensors a ViT-B/32 ARC run has (both towers, both
sites, all 12 blocks: 2 × 768×12×768 visual, 2 × 512×12×512 text;
``A_l = D diag(λ_l) Dᵀ`` with rank --arc-rank and Gaussian D, λ), fits them
at the given fine ranks plus the coarse ring on the residual (the library's
``fit_site``, what ``ringfold compress`` runs per site), and reports seconds
and relative errors. ``--old-iters N`` also times N iterations of the former
solver (tensorly ``tensor_ring_als``, float64, random start) on the largest
site and extrapolates to its settings (100 iterations × 3 restarts, fine +
coarse, every site). ``--sweep`` adds the ``--ranks auto`` sweep (and its
plot, compress_sweep_cpu.png). Prints JSON
and a table; writes them and a PNG to --out.

    python benchmarks/bench_compress.py [--ranks 2,4,2] [--coarse-ranks 1,1,1] [--old-iters 3] [--sweep]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import emit, machine  # noqa: E402


def adapter_stacks(arc_rank: int, layers: int = 12, seed: int = 0) -> dict:
    import numpy as np

    rng = np.random.default_rng(seed)
    stacks = {}
    for tower, dim in (("visual", 768), ("text", 512)):
        for site in ("attn", "mlp"):
            down = rng.normal(size=(dim, arc_rank)) / np.sqrt(dim)
            stacks[f"{tower}.{site}"] = np.stack(
                [(down * rng.normal(size=arc_rank)) @ down.T for _ in range(layers)], axis=1
            )
    return stacks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ranks", default="2,4,2")
    ap.add_argument("--coarse-ranks", default="1,1,1")
    ap.add_argument("--arc-rank", type=int, default=50)
    ap.add_argument("--old-iters", type=int, default=0, help="time this many tensorly ALS iterations (0: skip)")
    ap.add_argument("--sweep", action="store_true", help="also run the --ranks auto sweep")
    ap.add_argument("--verbose", action="store_true", help="print the per-sweep progress lines")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()

    import torch

    from ringfold.trainer.compress_fit import fit_site, rank_sweep, stderr_log
    from ringfold.trainer.compress_report import plot_sweep
    from ringfold.trainer.config import ring_ranks

    fine, coarse = ring_ranks(args.ranks), ring_ranks(args.coarse_ranks)
    log = stderr_log if args.verbose else None
    stacks = adapter_stacks(args.arc_rank)
    sites, t_all = {}, time.perf_counter()
    for key, tensor in stacks.items():
        t0 = time.perf_counter()
        fit = fit_site(tensor, fine, coarse, log=log, label=f"{key} ")
        sites[key] = {
            "shape": list(tensor.shape),
            "seconds": time.perf_counter() - t0,
            "fine_error": fit.fine_error,
            "final_error": fit.final_error,
        }
    total = time.perf_counter() - t_all
    results = {
        "case": f"ViT-B/32-sized synthetic ARC rank {args.arc_rank} adapters, both towers, both sites, 12 layers",
        "fine_ranks": list(fine),
        "coarse_ranks": list(coarse),
        "machine": machine(),
        "numpy_threads_hint": torch.get_num_threads(),
        "seconds_total": total,
        "sites": sites,
    }
    if args.old_iters:
        results["old_tensorly_als"] = time_tensorly(stacks, fine, args.old_iters)
    if args.sweep:
        t0 = time.perf_counter()
        sweep, _ = rank_sweep(stacks, coarse, log=log)
        sweep["seconds_total"] = time.perf_counter() - t0
        results["sweep"] = sweep
    lines, bars = report(args, results)
    emit(
        Path(args.out),
        "compress_cpu",
        results,
        "\n".join(lines),
        bars,
        "compress fit, ViT-B/32-sized ARC stacks",
        "seconds",
    )
    if args.sweep:
        plot_sweep(results["sweep"], Path(args.out) / "compress_sweep_cpu.png", f"{results['case']}: --ranks auto")
    return 0


def time_tensorly(stacks: dict, fine, iterations: int) -> dict:
    """The former solver (tensorly tensor_ring_als) on the visual attention site, extrapolated to a whole fit."""
    import numpy as np
    import tensorly as tl
    from tensorly.decomposition import tensor_ring_als

    tensor = stacks["visual.attn"]
    t0 = time.perf_counter()
    cores = tensor_ring_als(tensor, rank=[*fine, fine[0]], n_iter_max=iterations, tol=0, random_state=0)
    per_iter = (time.perf_counter() - t0) / iterations
    err = float(np.linalg.norm(tensor - tl.tr_to_tensor(cores)) / np.linalg.norm(tensor))
    scale = sum((t.shape[0] / 768) ** 2 for t in stacks.values())  # an iteration's cost grows about as d²
    return {
        "seconds_per_iteration_visual_site": per_iter,
        "error_after_iterations": err,
        "iterations_timed": iterations,
        "extrapolated_seconds": per_iter * 100 * 3 * 2 * scale,
        "extrapolation": "100 iterations x 3 restarts x (fine + coarse), sites scaled by d^2",
    }


def report(args: argparse.Namespace, results: dict) -> tuple[list[str], dict]:
    """The table's lines and the bar chart's values."""
    from ringfold.trainer.compress_report import format_sweep

    sites, total = results["sites"], results["seconds_total"]
    rows = [
        f"| {k} | {'×'.join(map(str, s['shape']))} | {s['seconds']:.1f} | "
        f"{s['fine_error']:.4f} | {s['final_error']:.4f} |"
        for k, s in sites.items()
    ]
    lines = [
        f"{results['case']}, fine {args.ranks} + coarse {args.coarse_ranks}, CPU: {results['machine'].get('cpu', '?')}",
        "",
        "| site | 𝒜 | seconds | rel. error (fine) | rel. error (fine+coarse) |",
        "|---|---|---|---|---|",
        *rows,
        f"| **all** | | **{total:.1f}** | | |",
    ]
    bars = {"ringfold solver (all sites)": total}
    if args.old_iters:
        old = results["old_tensorly_als"]
        lines += [
            "",
            f"Former solver (tensorly tensor_ring_als, random start, float64): "
            f"{old['seconds_per_iteration_visual_site']:.2f} s per iteration on a visual site, "
            f"≈ {old['extrapolated_seconds']:.0f} s extrapolated ({old['extrapolation']}).",
        ]
        bars["former tensorly ALS (extrapolated)"] = old["extrapolated_seconds"]
    if args.sweep:
        lines += ["", format_sweep(results["sweep"]).rstrip(), f"(sweep: {results['sweep']['seconds_total']:.1f} s)"]
    return lines, bars


if __name__ == "__main__":
    sys.exit(main())
