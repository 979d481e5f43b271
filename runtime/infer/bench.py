"""``ringfold bench BUNDLE``: latency percentiles and throughput per backend, precision and batch size.

Torch-free, so it runs on the device. Synthetic inputs of the bundle's input
shape (latency does not depend on pixel values). When the bundle carries the
base model (``ringfold export --include-base``) or ``--base FILE.onnx`` is
given, the base model is measured beside it for the folded / base ratio.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ringfold.atomic import atomic_path, write_json, write_text
from ringfold.runtime.backends.onnxruntime.model import OnnxModel, open_bundle_model
from ringfold.runtime.base.limits import check_batch_bytes
from ringfold.runtime.bundle.loader import Bundle


@dataclass
class BenchPoint:
    backend: str
    precision: str
    batch: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    throughput: float  # images / s at p50


@dataclass
class BenchReport:
    bundle: str
    model: str
    random_weights: bool
    threads: int | None
    machine: dict[str, Any]
    points: list[BenchPoint] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bundle": self.bundle,
            "model": self.model,
            "random_weights": self.random_weights,
            "threads": self.threads or "default",
            "machine": self.machine,
            "points": [p.__dict__ for p in self.points],
            "ratios": self.ratios,
        }

    def to_markdown(self) -> str:
        lines = [
            f"# Benchmark — {self.model}" + (" (random weights)" if self.random_weights else ""),
            "",
            f"- machine: {self.machine.get('cpu', self.machine.get('processor'))}, "
            f"{self.machine.get('cpu_count')} cores; "
            f"threads: {self.threads or 'default'}",
            "",
            "| backend | precision | batch | p50 ms | p90 ms | p99 ms | images/s |",
            "|---|---|---|---|---|---|---|",
        ]
        for p in self.points:
            lines.append(
                f"| {p.backend} | {p.precision} | {p.batch} | {p.p50_ms:.2f} | {p.p90_ms:.2f} | {p.p99_ms:.2f} | "
                f"{p.throughput:.1f} |"
            )
        if self.ratios:
            lines += ["", "Ratios of p50 latencies:"]
            lines += [f"- {k}: {v:.3f}" for k, v in self.ratios.items()]
        return "\n".join(lines) + "\n"


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime as ort

    info["onnxruntime"] = ort.__version__
    return info


def measure(run, batch: int, shape: tuple[int, ...], warmup: int, runs: int) -> tuple[float, float, float]:
    x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
    for _ in range(warmup):
        run(x)
    samples = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        run(x)
        samples[i] = (time.perf_counter() - t0) * 1000
    p50, p90, p99 = np.percentile(samples, [50, 90, 99])
    return float(p50), float(p90), float(p99)


def run_bench(
    bundle: Bundle,
    precisions: list[str],
    providers: list[str],
    batches: list[int],
    runs: int = 50,
    warmup: int = 10,
    threads: int | None = None,
    base: Path | None = None,
    progress: bool = True,
) -> BenchReport:
    shape = (3, *bundle.manifest.input_size)
    check_batch_bytes(max(batches), shape)
    report = BenchReport(str(bundle.path), bundle.describe(), bundle.random_weights, threads, machine_info())
    models: list[tuple[str, str, Any]] = []
    for provider in providers:
        for precision in precisions:
            models.append(
                (provider, precision, lambda p=precision, pv=provider: open_bundle_model(bundle, p, pv, threads))
            )
        if base is not None:
            models.append((provider, "base-fp32", lambda pv=provider: OnnxModel(base, provider=pv, threads=threads)))
    total = len(models) * len(batches)
    done = 0
    for _provider, precision, factory in models:
        model = factory()
        backend = f"onnxruntime {model.provider.replace('ExecutionProvider', '')}"
        for batch in batches:
            p50, p90, p99 = measure(model.run, batch, shape, warmup, runs)
            report.points.append(BenchPoint(backend, precision, batch, p50, p90, p99, 1000 * batch / p50))
            done += 1
            if progress:
                print(f"[{done}/{total}] {backend} {precision} batch {batch}: p50 {p50:.2f} ms", flush=True)
    _ratios(report)
    return report


def _ratios(report: BenchReport) -> None:
    by_key = {(p.backend, p.precision, p.batch): p.p50_ms for p in report.points}
    for (backend, precision, batch), p50 in by_key.items():
        fp32 = by_key.get((backend, "fp32", batch))
        if precision == "base-fp32" and fp32:
            report.ratios[f"{backend} batch {batch}: bundle fp32 / base fp32 latency (≈1 = no overhead)"] = fp32 / p50
        elif precision != "fp32" and precision != "base-fp32" and fp32:
            report.ratios[f"{backend} batch {batch}: {precision} speed-up over fp32"] = fp32 / p50


def write_bench(report: BenchReport, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "bench.json", report.to_dict())
    write_text(out / "bench.md", report.to_markdown())
    written = [out / "bench.json", out / "bench.md"]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return written
    fig = bench_figure(report)
    with atomic_path(out / "bench.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    written.append(out / "bench.png")
    return written


def bench_figure(report: BenchReport):
    """Latency and throughput against batch, on a log2 batch axis whose ticks are the measured batch sizes
    (a linear axis put ticks at 3, 5, 6, 7, where nothing was measured, and crowded 1, 2, 4 together)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator

    fig, (ax_l, ax_t) = plt.subplots(1, 2, figsize=(10, 3.5))
    series: dict[tuple[str, str], list[BenchPoint]] = {}
    for p in report.points:
        series.setdefault((p.backend, p.precision), []).append(p)
    for (backend, precision), pts in series.items():
        pts = sorted(pts, key=lambda p: p.batch)
        label = f"{precision} · {backend.split()[-1]}"
        ax_l.plot([p.batch for p in pts], [p.p50_ms for p in pts], marker="o", label=label)
        ax_t.plot([p.batch for p in pts], [p.throughput for p in pts], marker="o", label=label)
    batches = sorted({p.batch for p in report.points})
    for ax, ylabel in ((ax_l, "p50 latency (ms)"), (ax_t, "images / s")):
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(batches))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([str(b) for b in batches])
        if len(batches) == 1:
            ax.set_xlim(batches[0] / 2, batches[0] * 2)
        ax.set_xlabel("batch (measured sizes)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    ax_l.legend(fontsize=7)
    fig.suptitle(report.model, fontsize=9)
    fig.tight_layout()
    return fig
