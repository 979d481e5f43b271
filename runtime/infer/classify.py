"""Classify image files with a bundle: decode → preprocess → model → top-k labels."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from ringfold.errors import ImageError, RingfoldError
from ringfold.runtime.backends.base import Backend
from ringfold.runtime.base.fields import one_line
from ringfold.runtime.base.limits import check_batch_bytes
from ringfold.runtime.bundle.loader import Bundle
from ringfold.runtime.pixels.images import IMAGE_EXTENSIONS, list_images, load_image
from ringfold.runtime.pixels.preprocess import preprocess_image

#: labels per image when the caller does not say (fewer when the bundle has fewer classes)
DEFAULT_TOP_K = 5


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


def _top_k(requested: int | None, bundle: Bundle) -> int:
    classes = len(bundle.labels)
    if requested is None:
        return max(1, min(DEFAULT_TOP_K, classes))
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
        raise RingfoldError(f"--top-k must be a positive whole number, got {requested!r}")
    if requested > classes:
        raise RingfoldError(
            one_line(
                f"--top-k {requested} asks for more labels than {bundle.path} has classes ({classes}); "
                f"pass --top-k {classes} or fewer, or leave it out"
            )
        )
    return requested


def _no_images(paths: list[str | os.PathLike]) -> RingfoldError:
    if not paths:
        return RingfoldError("no images given; pass image files and/or folders that hold some")
    names = [os.fspath(p) for p in paths]
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    extensions = " ".join(sorted(IMAGE_EXTENSIONS))
    return RingfoldError(
        one_line(
            f"{shown}: no image files found (looked for {extensions}, in any letter case; hidden files are "
            "skipped); check the path, or pass the image files themselves"
        )
    )


def iter_predictions(
    bundle: Bundle,
    model: Backend,
    paths: Iterable[str | Path],
    top_k: int | None = None,
    batch: int = 8,
    skip_bad: bool = False,
    preprocess: Callable[[Image.Image], np.ndarray] | None = None,
) -> Iterator[Prediction]:
    """Predictions in input order, each batch's as soon as the model has run on it.

    Arguments are checked (and folders listed) now, before anything is decoded: an
    explicit ``top_k`` above the bundle's class count, or paths that hold no image
    files, raise :class:`RingfoldError` here. ``top_k=None`` means
    ``min(DEFAULT_TOP_K, classes)``. A bad image raises :class:`ImageError` when the
    iteration reaches it, or becomes an error row with ``skip_bad``.
    """
    k = _top_k(top_k, bundle)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise RingfoldError(f"batch must be a positive whole number, got {batch!r}")
    check_batch_bytes(batch, (3, *bundle.preprocess.size))
    paths = list(paths)
    files = list_images(paths)
    if not files:
        raise _no_images(paths)
    prepare = preprocess or partial(preprocess_image, cfg=bundle.preprocess)  # or the raw model's resize
    return _predictions(bundle, model, files, k, batch, skip_bad, prepare)


def _run_batch(bundle: Bundle, model: Backend, pending: list[tuple[Path, np.ndarray]], top_k: int) -> list[Prediction]:
    if not pending:
        return []
    probs = softmax(model.run(np.stack([p for _, p in pending]))["logits"])
    out = []
    for (path, _), row in zip(pending, probs, strict=True):
        order = np.argsort(-row, kind="stable")[:top_k]
        out.append(Prediction(path, [bundle.labels[i] for i in order], [float(row[i]) for i in order]))
    return out


def _predictions(
    bundle: Bundle, model: Backend, files: list[Path], top_k: int, batch: int, skip_bad: bool, prepare
) -> Iterator[Prediction]:
    pending: list[tuple[Path, np.ndarray]] = []
    for path in files:
        try:
            img = load_image(path)
            try:
                pixels = prepare(img)
            except ImageError as exc:  # preprocess does not know the path; load_image's errors start with it
                raise ImageError(f"{os.fspath(path)}: {exc}") from exc
        except ImageError as exc:
            if not skip_bad:
                raise
            yield from _run_batch(bundle, model, pending, top_k)  # keep input order
            pending = []
            yield Prediction(path, [], [], error=str(exc))
            continue
        pending.append((path, pixels))
        if len(pending) >= batch:
            yield from _run_batch(bundle, model, pending, top_k)
            pending = []
    yield from _run_batch(bundle, model, pending, top_k)
