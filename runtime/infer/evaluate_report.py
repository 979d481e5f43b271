"""The report folder of ``ringfold evaluate``: evaluate.json, evaluate.md and one confusion-matrix PNG per run.

Every figure says what it was measured on: the folder, the image count, the bundle, and — when the
bundle's manifest says its weights are random — that the accuracies mean nothing. matplotlib is
optional (a Jetson may lack it): without it the PNGs are left out and evaluate.md says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ringfold.atomic import atomic_path, write_json, write_text

RANDOM_NOTE = "the bundle's weights are random (manifest: random_weights): these accuracies mean nothing"


@dataclass
class EvaluateReport:
    """Everything evaluate.json holds: where the images came from, which bundle, the figures per run."""

    bundle: str
    model: str
    random_weights: bool
    images_dir: str
    classnames: list[str]
    figures: dict[str, dict[str, Any]]  # "backend/precision" -> run figures
    skipped: list[dict[str, str]]
    source: str  # the data source in words
    not_evaluated: dict[str, str] = field(default_factory=dict)  # "backend/precision" -> why it did not open

    def by_backend(self) -> dict[str, dict[str, dict[str, Any]]]:
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for row in self.figures.values():
            out.setdefault(row["backend"], {})[row["precision"]] = row
        return out

    def to_dict(self) -> dict[str, Any]:
        backends = self.by_backend()
        first = next(iter(backends), None)
        doc: dict[str, Any] = {
            "bundle": self.bundle,
            "model": self.model,
            "images": {
                "dir": self.images_dir,
                "source": self.source,
                "evaluated": next(iter(self.figures.values()), {}).get("images", 0),
                "skipped": self.skipped,
            },
            "classes": self.classnames,
            "precisions": backends.get(first, {}) if first else {},  # the first backend's runs
            "backends": backends,
            "not_evaluated": self.not_evaluated,
        }
        if self.random_weights:
            doc["note"] = RANDOM_NOTE
        return doc


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def to_markdown(report: EvaluateReport) -> str:
    doc = report.to_dict()
    lines = [
        f"# ringfold evaluate: {report.model}",
        "",
        f"Measured on {doc['images']['evaluated']} images of {len(report.classnames)} classes in "
        f"`{report.images_dir}` ({report.source}); bundle `{report.bundle}`.",
    ]
    if report.skipped:
        lines.append(f"{len(report.skipped)} unreadable image(s) skipped (--skip-bad; listed in evaluate.json).")
    if report.random_weights:
        lines += ["", f"**Note: {RANDOM_NOTE}.**"]
    for run, why in report.not_evaluated.items():
        lines += ["", f"Not evaluated: {run} — {why}"]
    lines += ["", "| backend | precision | top-1 | top-k | agreement with fp32 | flips | near-tie flips |"]
    lines.append("|---|---|---|---|---|---|---|")
    for row in report.figures.values():
        agree = _pct(row.get("agreement_with_fp32")) if "fp32_run" in row else "—"
        flips = f"{row['flips']}" if "flips" in row else "—"
        near = f"{row['near_tie_flips']} (margin ≤ {row['near_tie_margin']:g})" if "flips" in row else "—"
        lines.append(
            f"| {row['backend']} | {row['precision']} | {_pct(row['top1'])} | top-{row['top_k']} "
            f"{_pct(row['top5'])} | {agree} | {flips} | {near} |"
        )
    lines += ["", "## Per class (top-1)", "", "| class | images | " + " | ".join(report.figures) + " |"]
    lines.append("|---|---|" + "---|" * len(report.figures))
    for name in report.classnames:
        rows = [r["per_class"][name] for r in report.figures.values()]
        n = rows[0]["images"] if rows else 0
        lines.append(f"| {name} | {n} | " + " | ".join(_pct(r["top1"]) for r in rows) + " |")
    return "\n".join(lines) + "\n"


def png_name(run: str) -> str:
    backend, precision = run.split("/", 1)
    return f"confusion_{precision}.png" if backend == "onnxruntime" else f"confusion_{backend}_{precision}.png"


def write_evaluate(report: EvaluateReport, out: Path) -> list[Path]:
    """evaluate.json, evaluate.md and (with matplotlib) one confusion PNG per run, into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "evaluate.json", report.to_dict())
    written = [out / "evaluate.json"]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        write_text(out / "evaluate.md", to_markdown(report) + "\n(matplotlib is not installed: no PNGs.)\n")
        return [*written, out / "evaluate.md"]
    for run, row in report.figures.items():
        fig = confusion_figure(report, run, row)
        with atomic_path(out / png_name(run)) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
        written.append(out / png_name(run))
    md = to_markdown(report) + "\n" + "\n".join(f"![{r}]({png_name(r)})" for r in report.figures) + "\n"
    write_text(out / "evaluate.md", md)
    return [*written, out / "evaluate.md"]


def _short(name: str, width: int = 24) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def confusion_figure(report: EvaluateReport, run: str, row: dict[str, Any]):
    """The confusion matrix of one run: colour is the share of the true class (row), each cell its count."""
    import matplotlib.pyplot as plt

    matrix = np.asarray(row["confusion"], dtype=float)
    n = len(report.classnames)
    side = max(5.0, 0.42 * n + 3.0)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    labels = [_short(c) for c in report.classnames]
    ax.set_xticks(range(n), labels, rotation=60, ha="right", fontsize=9)
    ax.set_yticks(range(n), labels, fontsize=9)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if n <= 30:
        for (i, j), count in np.ndenumerate(matrix):
            if count:
                ax.text(j, i, f"{int(count)}", ha="center", va="center", fontsize=8,
                        color="white" if shares[i, j] > 0.6 else "black")  # fmt: skip
    where = os.path.basename(os.path.normpath(report.images_dir)) or report.images_dir
    title = f"{report.model} — {row['precision']} on {row['backend']}: top-1 {_pct(row['top1'])}"
    title += f"\non {row['images']} images in {where}/ ({report.source})"
    if report.random_weights:
        title += "\nrandom weights: accuracy means nothing"
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
