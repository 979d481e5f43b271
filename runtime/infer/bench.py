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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ringfold.atomic import atomic_path, write_json, write_text
from ringfold.extras import missing_module
from ringfold.runtime.backends.base import Backend
from ringfold.runtime.backends.onnxruntime.model import OnnxModel
from ringfold.runtime.backends.registry import open_model
from ringfold.runtime.base.limits import check_batch_bytes
from ringfold.runtime.bundle.loader import Bundle

from .recommend import recommend


@dataclass
class BenchPoint:
    backend: str
    precision: str
    batch: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    throughput: float  # images / s at p50
    #: the configuration's parity gate on this machine: True passed, False failed, None not run
    parity: bool | None = None


@dataclass(frozen=True)
class BenchConfig:
    """One configuration to time: a backend, its ONNX Runtime provider (else None) and a precision."""

    backend: str
    precision: str
    provider: str | None = None


@dataclass
class BenchReport:
    bundle: str
    model: str
    random_weights: bool
    threads: int | None
    machine: dict[str, Any]
    points: list[BenchPoint] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)
    #: where the parity verdicts come from ("the bundle's reference set, run here", a parity.json)
    gates_from: str = ""

    @property
    def recommendation(self) -> dict[int, BenchPoint]:
        """Batch → the fastest configuration whose parity gate passed here (:func:`.recommend.recommend`)."""
        return recommend(self.points)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bundle": self.bundle,
            "model": self.model,
            "random_weights": self.random_weights,
            "threads": self.threads or "default",
            "machine": self.machine,
            "points": [p.__dict__ for p in self.points],
            "ratios": self.ratios,
            "parity_gates_from": self.gates_from,
            "recommendation": {str(b): p.__dict__ for b, p in self.recommendation.items()},
        }

    def to_markdown(self) -> str:
        lines = [
            f"# Benchmark — {self.model}" + (" (random weights)" if self.random_weights else ""),
            "",
            f"- machine: {self.machine.get('cpu', self.machine.get('processor'))}, "
            f"{self.machine.get('cpu_count')} cores; "
            f"threads: {self.threads or 'default'}",
            *([f"- parity gates: {self.gates_from}"] if self.gates_from else []),
            "",
            "| backend | precision | batch | p50 ms | p90 ms | p99 ms | images/s | parity |",
            "|---|---|---|---|---|---|---|---|",
        ]
        verdict = {True: "pass", False: "FAIL", None: "not run"}
        for p in self.points:
            lines.append(
                f"| {p.backend} | {p.precision} | {p.batch} | {p.p50_ms:.2f} | {p.p90_ms:.2f} | {p.p99_ms:.2f} | "
                f"{p.throughput:.1f} | {verdict[p.parity]} |"
            )
        if self.ratios:
            lines += ["", "Ratios of p50 latencies:"]
            lines += [f"- {k}: {v:.3f}" for k, v in self.ratios.items()]
        return "\n".join(lines + ["", *self.recommendation_lines()]) + "\n"

    def recommendation_lines(self) -> list[str]:
        """The deploy advice: per batch, the fastest configuration whose parity gate passed on this machine."""
        best = self.recommendation
        if not best:
            return ["Deploy: nothing to recommend — no timed configuration passed its parity gate on this machine."]
        lines = ["Deploy (per batch: the fastest configuration whose parity gate passed on this machine):"]
        for batch, p in best.items():
            lines.append(f"- batch {batch}: {p.backend} {p.precision} — p50 {p.p50_ms:.2f} ms")
        return lines


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
    if missing_module(("openvino",)) is None:
        import openvino  # optional: the [openvino] extra, only when installed

        info["openvino"] = openvino.__version__
    return info


def backend_label(model: Backend) -> str:
    """``onnxruntime CPU``, ``openvino CPU``: the backend and, short, what runs it (the column bench prints)."""
    return f"{model.backend} {short_provider(model.provider)}"


def short_provider(provider: str) -> str:
    """``CPUExecutionProvider`` → ``CPU``; OpenVINO's ``CPU, inference precision f32 …`` → ``CPU``."""
    return provider.split(",")[0].replace("ExecutionProvider", "").strip()


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


#: a parity gate bench runs on each opened model: (model, precision) → passed
Gate = Callable[[Backend, str], bool]


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
    *,
    configs: list[BenchConfig] | None = None,
    gate: Gate | None = None,
    gates: Mapping[tuple[str, str], bool] | None = None,
    gates_from: str = "",
) -> BenchReport:
    """Time every configuration (``configs``, default: ONNX Runtime on ``providers`` × ``precisions``).

    Each configuration's parity verdict comes from ``gate`` (run here on the opened model) or ``gates``
    ((backend label, precision) → passed, from a parity.json); without either it is None and the
    configuration is never recommended.
    """
    shape = (3, *bundle.manifest.input_size)
    check_batch_bytes(max(batches), shape)
    report = BenchReport(str(bundle.path), bundle.describe(), bundle.random_weights, threads, machine_info())
    report.gates_from = gates_from
    configs = configs or [BenchConfig("onnxruntime", p, pv) for pv in providers for p in precisions]
    models = [(c.precision, partial(open_model, bundle, c.precision, c.backend, c.provider, threads)) for c in configs]
    if base is not None:
        for provider in dict.fromkeys(c.provider for c in configs if c.backend == "onnxruntime"):
            models.append(("base-fp32", partial(OnnxModel, base, provider=provider, threads=threads)))
    total = len(models) * len(batches)
    for i, (precision, factory) in enumerate(models):
        model = factory()
        label = backend_label(model)
        passed = None
        if precision != "base-fp32":
            passed = gate(model, precision) if gate else (gates or {}).get((label, precision))
        for j, batch in enumerate(batches):
            p50, p90, p99 = measure(model.run, batch, shape, warmup, runs)
            report.points.append(BenchPoint(label, precision, batch, p50, p90, p99, 1000 * batch / p50, passed))
            if progress:
                n = i * len(batches) + j + 1
                print(f"[{n}/{total}] {label} {precision} batch {batch}: p50 {p50:.2f} ms", flush=True)
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
    (a linear axis put ticks at 3, 5, 6, 7, where nothing was measured, and crowded 1, 2, 4 together), and
    log y axes: backends and precisions differ by up to two orders of magnitude (OpenVINO int8 at 15 ms beside
    ONNX Runtime int8-fp16 at 1.3 s), which a linear axis flattened onto zero. The legend sits right of the
    plots, where it covers no line."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter, NullLocator

    fig, (ax_l, ax_t) = plt.subplots(1, 2, figsize=(12, 3.8))
    series: dict[tuple[str, str], list[BenchPoint]] = {}
    for p in report.points:
        series.setdefault((p.backend, p.precision), []).append(p)
    for (backend, precision), pts in series.items():
        pts = sorted(pts, key=lambda p: p.batch)
        label = f"{precision} · {backend}"
        ax_l.plot([p.batch for p in pts], [p.p50_ms for p in pts], marker="o", label=label)
        ax_t.plot([p.batch for p in pts], [p.throughput for p in pts], marker="o", label=label)
    _mark_recommendation(report, ax_l, ax_t)
    batches = sorted({p.batch for p in report.points})
    for ax, ylabel in ((ax_l, "p50 latency (ms)"), (ax_t, "images / s")):
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(batches))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([str(b) for b in batches])
        if len(batches) == 1:
            ax.set_xlim(batches[0] / 2, batches[0] * 2)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))  # 10, 20, 50, 100 …: plain numbers, not 2×10¹
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("batch (measured sizes)")
        ax.set_ylabel(f"{ylabel}, log scale")
        ax.grid(True, alpha=0.3, which="both")
    handles, labels = ax_l.get_legend_handles_labels()
    ax_t.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.suptitle(report.model, fontsize=9)
    fig.tight_layout()
    return fig


def _mark_recommendation(report: BenchReport, ax_l, ax_t) -> None:
    """A star on each batch's recommended configuration, named beside it (the table's last lines, drawn)."""
    picks = report.recommendation
    names = {f"{p.precision} · {p.backend}" for p in picks.values()}
    one = names.pop() if len(names) == 1 else None  # the same pick at every batch: named once, in the legend
    last = max(picks, default=None)
    for n, (batch, p) in enumerate(picks.items()):
        label = (f"deploy: {one}" if one else "deploy: fastest passing parity here") if n == 0 else None
        ax_l.plot([batch], [p.p50_ms], marker="*", markersize=14, color="black", linestyle="none", label=label)
        ax_t.plot([batch], [p.throughput], marker="*", markersize=14, color="black", linestyle="none")
        if one is None:  # picks differ: each star named above it, kept inside the panel at the right edge
            ax_l.annotate(
                f"{p.precision} · {p.backend}",
                (batch, p.p50_ms),
                fontsize=7,
                xytext=(0, 10),
                textcoords="offset points",
                ha="right" if batch == last else "center",
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1},
            )
