"""parity.png: one panel per gate (precision), |Δlogit| per image, sorted, against the precision's line.

The |Δlogit| axis is logarithmic (fp32 errors of 1e-6 under a 1e-4 gate lay flat on zero on a linear one) and
each comparison draws in a column of its own, labelled with its max and that max as a multiple of the line,
so comparisons with equal errors do not hide each other. Exact zeros are drawn at the axis floor and counted.

matplotlib is optional (a Jetson may lack it): ``plot_report`` returns None without it, and nothing
else in the runtime imports matplotlib at import time (this module imports it inside its functions).
The report (:mod:`.report`) decides what is written; this module only draws.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from ringfold.atomic import atomic_path

from .metrics import Comparison


class Drawable(Protocol):
    """What a figure is drawn from (:class:`.report.ParityReport` is one): its comparisons and the model."""

    comparisons: Sequence[Comparison]
    model: str


_MAX_LABELS = 3  # outliers named per panel; the rest are counted in the corner


def _short(c: Comparison) -> str:
    """A comparison as a legend entry: which images, which PyTorch side (its typed fields, not its title)."""
    if c.subject:
        return f"{c.subject} vs stored reference"
    if c.source == "--images":
        return f"--images, vs {c.against}"
    if c.source == "reference set":
        return "reference set, end to end" if c.end_to_end else f"reference set, vs {c.against}"
    return c.name if len(c.name) <= 36 else c.name[:35] + "…"


def _title(gate: str, comps: list[Comparison]) -> str:
    reasons: list[str] = []
    for c in comps:
        reasons += [r for r in (f.split(" (")[0] for f in c.failures) if r not in reasons]
    ties = {f["image"] for c in comps for f in c.near_ties}
    verdict = "PASS" if not reasons else "FAIL: " + "; ".join(reasons)
    n = max(c.n for c in comps)
    detail = [f"n={n}", f"top-1 {min(c.top1_agreement for c in comps):.1%}"]
    if ties:
        detail.append(f"{len(ties)} near-tie{'s' if len(ties) != 1 else ''}")
    detail.append(f"min cos {min(c.cosine_min for c in comps):.5f}")
    return f"{gate} — {verdict}\n" + " · ".join(detail)


_HALF_WIDTH = 0.4  # each comparison draws in its own column, x = column ± this


def _floor(comps: list[Comparison], line: float) -> float:
    """Where an exact zero is drawn on the log axis: a decade under the smallest positive value (or the line)."""
    positive = [d for c in comps for d in c.abs_logit_diffs if d > 0]
    return min([line, *positive]) / 10.0


def _column(ax, col: int, c: Comparison, colour: str, floor: float, outliers: list, markers: dict) -> float:
    """One comparison's |Δlogit| per image, sorted, inside column ``col``; flagged images collected. Its max."""
    diffs = np.asarray(c.abs_logit_diffs, dtype=np.float64)
    order = np.argsort(diffs, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    xs = col - _HALF_WIDTH + 2 * _HALF_WIDTH * (np.arange(len(diffs)) + 0.5) / len(diffs)
    shown = np.maximum(diffs, floor)
    ax.plot(xs, shown[order], marker=".", markersize=4, linewidth=1, color=colour, label=_short(c))
    for kind, flips in (("near-tie flip", c.near_ties), ("flip beyond margin", c.flips_beyond_margin)):
        for f in flips:
            x, y = float(xs[rank[f["index"]]]), float(shown[f["index"]])
            markers[kind][0].append(x)
            markers[kind][1].append(y)
            outliers.append((x, y, f"{Path(f['image']).name} (margin {f['margin']:.2g})"))
    tol = c.tolerance
    if tol.max_abs_logit is not None:
        over = np.flatnonzero(diffs > tol.logit_error)
        outliers += [(float(xs[rank[i]]), float(shown[i]), f"{i}: {diffs[i]:.2g}") for i in over]
    zeros = int((diffs <= 0).sum())
    line = "gate" if tol.max_abs_logit is not None else "expected"
    note = f"max {diffs.max():.2g}\n= {diffs.max() / tol.logit_error:.2g} × {line}"
    note += f"\n{zeros} exact 0 at floor" if zeros else ""
    ax.text(col, 0.97, note, transform=ax.get_xaxis_transform(), fontsize=6.5, ha="center", va="top")
    return float(shown.max())


def _flag_markers(ax, markers: dict, outliers: list) -> None:
    """Circles on near-tie flips, crosses on real flips, and the first few flagged images named."""
    if markers["near-tie flip"][0]:
        ax.scatter(
            *markers["near-tie flip"],
            s=90,
            facecolors="none",
            edgecolors="tab:purple",
            linewidths=1.8,
            label="near-tie flip",
            zorder=3,
        )
    if markers["flip beyond margin"][0]:
        ax.scatter(
            *markers["flip beyond margin"], s=70, marker="X", color="tab:red", label="flip beyond margin", zorder=3
        )
    seen: set[str] = set()
    shown = [o for o in outliers if not (o[2] in seen or seen.add(o[2]))]
    for x, y, text in shown[:_MAX_LABELS]:
        ax.annotate(text, (x, y), xytext=(-4, -10), textcoords="offset points", fontsize=7, ha="right")
    if len(shown) > _MAX_LABELS:
        ax.text(
            0.98,
            0.03,
            f"+{len(shown) - _MAX_LABELS} more flagged (parity.md)",
            transform=ax.transAxes,
            fontsize=7,
            ha="right",
            va="bottom",
        )


def _panel(ax, gate: str, comps: list[Comparison], colours: dict[str, str]) -> None:
    """One gate: a log |Δlogit| axis, each comparison in a column of its own, the gate's line across them."""
    tol = comps[0].tolerance
    line, gated = tol.logit_error, tol.max_abs_logit is not None
    comps = [c for c in comps if c.abs_logit_diffs]
    floor = _floor(comps, line)
    outliers: list[tuple[float, float, str]] = []  # x, y, text
    markers: dict[str, tuple[list[float], list[float]]] = {"near-tie flip": ([], []), "flip beyond margin": ([], [])}
    top = max([line, *(_column(ax, i, c, colours[_short(c)], floor, outliers, markers) for i, c in enumerate(comps))])
    _flag_markers(ax, markers, outliers)
    colour = "tab:red" if gated else "dimgrey"  # its label at the left, where each column's sorted curve is lowest
    ax.axhline(line, color=colour, linestyle="--", linewidth=1.2, zorder=1)
    what = f"gate: max |Δlogit| {line:g}" if gated else f"expected error {line:g} (not gated)"
    ax.text(0.01, line, what, transform=ax.get_yaxis_transform(), fontsize=7, va="bottom", color=colour)
    ax.set_yscale("log")
    bottom = floor / 2  # the data and the gate fill the lower 70% of the axis; each column's note sits above
    ax.set_ylim(bottom, bottom * (top / bottom) ** (1 / 0.7))
    ax.set_xlim(-0.5, len(comps) - 0.5)
    ax.set_xticks(range(len(comps)), [textwrap.fill(_short(c), 18) for c in comps], fontsize=7)
    ax.set_xlabel("comparison (its images sorted by |Δlogit|)", fontsize=8)
    ax.set_ylabel("max |Δlogit| per image (log)")
    ax.set_title(_title(gate, comps), fontsize=9, color="black" if all(c.passed for c in comps) else "tab:red")


def parity_figure(report: Drawable):
    """The figure (matplotlib imported by the caller's check); one axes per gate, in report order."""
    import matplotlib.pyplot as plt

    groups: dict[str, list[Comparison]] = {}
    for c in report.comparisons:
        if c.abs_logit_diffs:
            groups.setdefault(c.gate_name, []).append(c)
    labels = list(dict.fromkeys(_short(c) for comps in groups.values() for c in comps))
    palette = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    colours = {label: palette[i % len(palette)] for i, label in enumerate(labels)}
    cols = min(3, len(groups))
    rows = -(-len(groups) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.8 * cols, 3.6 * rows + 0.6), squeeze=False)
    flat = list(axes.flat)
    for ax, (gate, comps) in zip(flat, groups.items(), strict=False):
        _panel(ax, gate, comps, colours)
    for ax in flat[len(groups) :]:
        fig.delaxes(ax)
    # one legend for every panel: the same comparison has the same colour everywhere
    handles: dict[str, object] = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(4, len(handles)), fontsize=7)
    legend_rows = -(-len(handles) // 4)
    fig.suptitle(f"parity: {report.model}", fontsize=9)
    fig.tight_layout(rect=(0, 0.05 * legend_rows / rows, 1, 1))
    return fig


def plot_report(report: Drawable, path: Path) -> Path | None:
    """Write parity.png; None where matplotlib is not installed (Jetson) or there is nothing to draw."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    if not any(c.abs_logit_diffs for c in report.comparisons):
        return None
    fig = parity_figure(report)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
