"""Training curves as a PNG, because people would rather look than read a log.

The loss panel draws the total and every term the epoch rows carry (``loss_<term>``: AdaRing's CE of the full
model, CE of the coarse-only model, the consistency distance), so a user sees which term moves and which one
stalls, not only their weighted sum. The terms differ by orders of magnitude (a consistency distance of 1e-3
beside a CE of 2), hence a log axis whenever every value is positive.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ringfold.atomic import atomic_path

#: legend text of the terms trainer/losses.py logs; a term not listed is shown by its own name
TERM_LABELS = {
    "ce": "ce: CE of the full model",
    "coarse_ce": "coarse_ce: CE of the coarse-only model (× λ_c in total)",
    "consistency": "consistency: 1 − cos to frozen features (× λ_g in total)",
}

_MARKERS = ["s", "^", "v", "D", "P"]


def loss_terms(history: list[dict[str, Any]]) -> list[str]:
    """The loss terms logged in ``history`` (``loss_<term>`` keys), in first-seen order."""
    found: dict[str, None] = {}
    for row in history:
        for key, value in row.items():
            if key.startswith("loss_") and value is not None:
                found.setdefault(key[len("loss_") :], None)
    return list(found)


def _series(history: list[dict[str, Any]], key: str) -> tuple[list[Any], list[float]]:
    points = [(row["epoch"], float(row[key])) for row in history if row.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def _draw_losses(ax, history: list[dict[str, Any]]) -> None:
    """The total (bold) and one line per term; a log axis when every drawn value is positive."""
    from matplotlib.ticker import MaxNLocator

    drawn: list[float] = []
    epochs, total = _series(history, "loss")
    if total:
        ax.plot(epochs, total, marker="o", color="black", linewidth=2, label="total (what is minimised)")
        drawn += total
    terms = loss_terms(history)
    for term, marker in zip(terms, _MARKERS * len(terms), strict=False):  # markers tell apart terms that overlap
        epochs, values = _series(history, f"loss_{term}")
        ax.plot(epochs, values, marker=marker, markersize=5, linestyle="--", label=TERM_LABELS.get(term, term))
        drawn += values
    if drawn and min(drawn) > 0:
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss (per-epoch mean)" + (", log scale" if ax.get_yscale() == "log" else ""))
    if terms:
        ax.legend(fontsize=7)


def training_figure(history: list[dict[str, Any]], title: str):
    """The figure: losses per term on the left, train and eval accuracy on the right."""
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    _draw_losses(ax_loss, history)
    for key, label in (("train_acc", "train"), ("eval_acc", "eval")):
        epochs, values = _series(history, key)
        if values:
            ax_acc.plot(epochs, values, marker="o", label=label)
    ax_acc.xaxis.set_major_locator(ax_loss.xaxis.get_major_locator())
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(0, 1)
    ax_acc.legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_training_curves(history: list[dict[str, Any]], path: Path, title: str) -> None:
    """Write curves.png (atomically) from the epoch rows of train_log.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = training_figure(history, title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
