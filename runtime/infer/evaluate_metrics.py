"""The figures of ``ringfold evaluate``: accuracy of each run on the labelled images, and how it agrees with fp32.

Per run (a precision on a backend): top-1, top-5 (top-k when the bundle has fewer classes), per-class
top-1, the confusion matrix (rows: true class, columns: predicted), and against the fp32 run on the
same images: top-1 agreement, the flips, and the near-ties — images whose fp32 top-1 margin is within
the precision's tie margin (twice the logit error it is expected to make, parity's rule), where a flip
says nothing about the model. The tie margins come from the caller (parity owns the tolerances).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def top_k_hits(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Whether each image's true class is among its ``k`` highest logits."""
    if len(labels) == 0:
        return np.zeros(0, dtype=bool)
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return (top == labels[:, None]).any(axis=1)


def top1_margins(logits: np.ndarray) -> np.ndarray:
    """Each image's top-1 logit minus its runner-up (0 with a single class)."""
    if logits.shape[1] < 2:
        return np.zeros(len(logits))
    part = np.partition(logits, -2, axis=1)
    return part[:, -1] - part[:, -2]


def confusion(labels: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """[true class, predicted class] counts."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def _ratio(hits: int, total: int) -> float | None:
    return hits / total if total else None


def accuracy(logits: np.ndarray, labels: np.ndarray, classnames: Sequence[str]) -> dict[str, Any]:
    """top-1, top-5, per-class top-1 and the confusion matrix of one run."""
    predicted = logits.argmax(axis=1) if len(labels) else np.zeros(0, dtype=np.int64)
    matrix = confusion(labels, predicted, len(classnames))
    k = min(5, len(classnames))
    per_class = {}
    for i, name in enumerate(classnames):
        n = int(matrix[i].sum())
        per_class[name] = {"images": n, "top1": _ratio(int(matrix[i, i]), n)}
    return {
        "images": int(len(labels)),
        "top1": _ratio(int((predicted == labels).sum()), len(labels)),
        "top5": _ratio(int(top_k_hits(logits, labels, k).sum()), len(labels)),
        "top_k": k,
        "per_class": per_class,
        "confusion": matrix.tolist(),
    }


def against_fp32(logits: np.ndarray, fp32: np.ndarray, tie_margin: float, paths: Sequence[str]) -> dict[str, Any]:
    """Top-1 agreement with the fp32 run on the same images, its flips and the near-ties among them."""
    mine, ref = logits.argmax(axis=1), fp32.argmax(axis=1)
    margins = top1_margins(fp32)
    flips = np.flatnonzero(mine != ref)
    near = [int(i) for i in flips if margins[i] <= tie_margin]
    return {
        "agreement_with_fp32": _ratio(int((mine == ref).sum()), len(ref)),
        "flips": int(len(flips)),
        "near_tie_margin": tie_margin,
        "near_ties": int((margins <= tie_margin).sum()),
        "near_tie_flips": len(near),
        "flipped": [
            {"path": paths[i], "fp32_margin": float(margins[i]), "near_tie": bool(margins[i] <= tie_margin)}
            for i in flips[:50]
        ],
    }


def run_figures(
    logits: Mapping[str, np.ndarray],
    labels: Sequence[int],
    classnames: Sequence[str],
    tie_margins: Mapping[str, float],
    paths: Sequence[str],
) -> dict[str, dict[str, Any]]:
    """Every run's figures; runs are ``backend/precision`` and each is compared with its backend's fp32 run
    (or the first fp32 run there is), when one was evaluated."""
    y = np.asarray(labels, dtype=np.int64)
    fp32_runs = {run.split("/")[0]: run for run in logits if run.endswith("/fp32")}
    figures = {}
    for run, z in logits.items():
        backend, precision = run.split("/", 1)
        row = {"backend": backend, "precision": precision, **accuracy(z, y, classnames)}
        ref = fp32_runs.get(backend) or next(iter(fp32_runs.values()), None)
        if ref is not None and len(y):
            row["fp32_run"] = ref
            row.update(against_fp32(z, logits[ref], tie_margins.get(precision, 0.0), paths))
        figures[run] = row
    return figures
