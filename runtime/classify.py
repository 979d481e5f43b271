"""Classify image files with a bundle: decode → preprocess → model → top-k labels."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ringfold.errors import ImageError
from ringfold.runtime.bundle import Bundle
from ringfold.runtime.images import list_images, load_image
from ringfold.runtime.preprocess import preprocess_image


@dataclass
class Prediction:
    path: Path
    labels: list[str]
    probabilities: list[float]
    error: str | None = None

    def to_dict(self) -> dict:
        if self.error:
            return {"path": str(self.path), "error": self.error}
        top = [
            {"label": lab, "probability": round(p, 6)} for lab, p in zip(self.labels, self.probabilities, strict=True)
        ]
        return {"path": str(self.path), "top": top}


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def classify_paths(
    bundle: Bundle,
    model,
    paths: Iterable[str | Path],
    top_k: int = 5,
    batch: int = 8,
    skip_bad: bool = False,
) -> list[Prediction]:
    """Predictions in input order. A bad image raises ImageError, or becomes an error row with ``skip_bad``."""
    files = list_images(paths)
    top_k = max(1, min(top_k, len(bundle.labels)))
    results: list[Prediction] = []
    pending: list[tuple[Path, np.ndarray]] = []

    def flush() -> None:
        if not pending:
            return
        pixels = np.stack([p for _, p in pending])
        probs = softmax(model.run(pixels)["logits"])
        for (path, _), row in zip(pending, probs, strict=True):
            order = np.argsort(-row, kind="stable")[:top_k]
            results.append(Prediction(path, [bundle.labels[i] for i in order], [float(row[i]) for i in order]))
        pending.clear()

    for path in files:
        try:
            pixels = preprocess_image(load_image(path), bundle.preprocess)
        except ImageError as exc:
            if not skip_bad:
                raise
            flush()
            results.append(Prediction(path, [], [], error=str(exc)))
            continue
        pending.append((path, pixels))
        if len(pending) >= batch:
            flush()
    flush()
    return results
