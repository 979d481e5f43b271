"""What ``ringfold compress`` writes for people: the report (compress_report.md) and the rank sweep's table and plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ringfold.atomic import atomic_path

from .compress_fit import ranks_text
from .compress_images import agreement_lines


def format_sweep(sweep: dict[str, Any], with_warning: bool = True) -> str:
    chosen = sweep["chosen"]
    source = sweep.get("source_parameters")
    lines = [
        f"Rank sweep (coarse {ranks_text(sweep['coarse_ranks'])}; pick: fewest parameters with worst site error "
        f"<= {sweep['max_error']:g}"
        + (f", among rings smaller than the source's {source:,} parameters)" if source else ")"),
        "",
        "| fine ranks | AdaRing params | worst site rel. error | overall rel. error | seconds | |",
        "|---|---|---|---|---|---|",
    ]
    for p in sweep["points"]:
        mark = "" if p["fine_ranks"] != chosen else "most accurate, above --max-error" if sweep["warning"] else "chosen"
        lines.append(
            f"| {ranks_text(p['fine_ranks'])} | {p['parameters']:,} | {p['max_error']:.4f} | "
            f"{p['overall_error']:.4f} | {p['seconds']:.1f} | {mark} |"
        )
    for p in sweep.get("skipped", []):
        lines.append(f"| {ranks_text(p['fine_ranks'])} | {p['parameters']:,} | — | — | — | not fitted: {p['reason']} |")
    if source:
        lines += ["", f"(the source run has {source:,} parameters)"]
    if with_warning and sweep.get("warning"):
        lines += ["", f"warning: {sweep['warning']}"]
    return "\n".join(lines) + "\n"


def plot_sweep(sweep: dict[str, Any], path: Path, title: str) -> None:
    """Relative error against AdaRing parameter count, one labelled point per fitted candidate; the source run's
    size as a labelled line, and the candidates not fitted because they are not smaller as grey ticks past it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = sweep["points"]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    xs = [p["parameters"] for p in pts]
    ax.plot(xs, [p["max_error"] for p in pts], marker="o", label="worst site")
    ax.plot(xs, [p["overall_error"] for p in pts], marker=".", linestyle="--", label="all sites (energy)")
    for p in pts:
        chosen = p["fine_ranks"] == sweep["chosen"]
        ax.annotate(
            ranks_text(p["fine_ranks"]) + (" (chosen)" if chosen else ""),
            (p["parameters"], p["max_error"]),
            textcoords="offset points",
            xytext=(4, 6),
            fontsize=8,
            fontweight="bold" if chosen else "normal",
        )
    ax.axhline(
        sweep["max_error"], color="grey", linewidth=0.8, linestyle=":", label=f"--max-error {sweep['max_error']:g}"
    )
    _plot_source(ax, sweep)
    ax.set_xscale("log")
    ax.set_ylim(0, max(1.0, max(p["max_error"] for p in pts) * 1.05))
    ax.set_xlabel("AdaRing parameters (fine ranks R0,R1,R2; coarse fixed)")
    ax.set_ylabel("relative reconstruction error")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _plot_source(ax, sweep: dict[str, Any]) -> None:
    """The source run's size, and grey ticks (ranks, not fitted) for the candidates that are not smaller."""
    source = sweep.get("source_parameters")
    if not source:
        return
    ax.axvline(source, color="tab:red", linewidth=1.0, linestyle=":", label=f"source run: {source:,} parameters")
    larger = [p for p in sweep.get("skipped", []) if p["reason"] == "not smaller than the source"]
    if not larger:
        return
    xs = [p["parameters"] for p in larger]
    on_axis = ax.get_xaxis_transform()  # x in parameters, y in axes fractions: no error value is implied
    ax.plot(xs, [0.04] * len(xs), transform=on_axis, linestyle="none", marker="x", color="grey")
    ax.plot([], [], linestyle="none", marker="x", color="grey", label="not smaller than the source: not fitted")
    for p in larger:
        ax.annotate(
            ranks_text(p["fine_ranks"]),
            (p["parameters"], 0.04),
            xycoords=on_axis,
            xytext=(3, 4),
            textcoords="offset points",
            fontsize=7,
            color="grey",
        )
    left = min([*xs, source, *(p["parameters"] for p in sweep["points"])]) / 1.5
    right = max([*xs, source]) * 1.5
    ax.axvspan(source, right, color="grey", alpha=0.08, linewidth=0)  # the sizes compress does not consider
    ax.set_xlim(left, right)


def format_report(report: dict[str, Any], sweep: dict[str, Any] | None = None) -> str:
    lines = [
        f"# Compression report — {report['source_method']} → AdaRing",
        "",
        f"- weights: {report['weights']}",
        f"- ranks: fine {report['fine_ranks']}, coarse {report['coarse_ranks']}",
        f"- parameters: {report['source_parameters']:,} → {report['adaring_parameters']:,} "
        f"(ratio {report['parameter_ratio']:.3f})",
        "",
        "| site | d | L | dense L·d² | source params | AdaRing params | rel. error (fine) | rel. error (fine+coarse) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in report["sites"]:
        lines.append(
            f"| {s['key']} | {s['dim']} | {s['layers']} | {s['dense_parameters']:,} | {s['source_parameters']:,} | "
            f"{s['ring_parameters']:,} | {s['fine_error']:.3g} | {s['final_error']:.3g} |"
        )
    lines += ["", "Reconstruction errors are of the adapter weights; the figures below are of the models' outputs.", ""]
    lines += agreement_lines(report["agreement"])
    lines += ["", *report.get("warnings", [])] if report.get("warnings") else []
    sweep = sweep if sweep is not None else report.get("rank_sweep")
    if sweep:
        lines += ["", format_sweep(sweep).rstrip()]
    return "\n".join(lines) + "\n"
