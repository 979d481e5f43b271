"""Shared helpers for the benchmark scripts: timing, a random-weights run, table/JSON/plot output."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def time_call(fn: Callable[[], Any], warmup: int = 5, runs: int = 30) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return {
        "p50_ms": statistics.median(samples),
        "p90_ms": float(np.percentile(samples, 90)),
        "mean_ms": statistics.fmean(samples),
        "runs": runs,
    }


def machine() -> dict[str, Any]:
    """The runtime's own machine record (CPU model, cores, onnxruntime), plus the platform string."""
    from ringfold.runtime.infer.bench import machine_info

    return {"platform": platform.platform(), **machine_info()}


def write_results(out: Path, name: str, results: dict[str, Any], table: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / f"{name}.md").write_text(table + "\n")


def bar_plot(path: Path, labels: list[str], values: list[float], title: str, xlabel: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(labels)))
    ax.barh(labels[::-1], values[::-1])
    for i, v in enumerate(values[::-1]):
        ax.text(v, i, f" {v:.1f}", va="center", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def emit(out: Path, name: str, results: dict[str, Any], table: str, bars: dict[str, float], title: str, xlabel: str):
    """Every benchmark's ending: JSON + markdown + PNG under ``out``, then JSON and the table on stdout."""
    write_results(out, name, results, table)
    bar_plot(out / f"{name}.png", list(bars), list(bars.values()), title, xlabel)
    print(json.dumps(results, indent=2))
    print(table)
