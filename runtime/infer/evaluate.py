"""``ringfold evaluate BUNDLE --images DIR``: a bundle's accuracy on the user's own labelled images, torch-free.

On the device, before shipping, the question is "how right is this engine on my photos?" — not
"does it match the PyTorch reference?" (that is parity). DIR is an ImageFolder whose folder names are
the bundle's class names; every image is decoded and preprocessed once, and each model asked for
(precision × backend) runs on the same pixels, so their accuracies and their agreement with fp32
are measured on exactly the same images. Everything is checked before a model opens: folders that
name no class are refused in one line that lists them.

The figures (:mod:`.evaluate_metrics`) and the report folder (:mod:`.evaluate_report`) live beside.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from ringfold.errors import ImageError, RingfoldError
from ringfold.runtime.backends.base import Backend
from ringfold.runtime.backends.openvino.modes import OPENVINO_PRECISIONS
from ringfold.runtime.backends.registry import backend_precisions, open_model
from ringfold.runtime.base.fields import one_line
from ringfold.runtime.base.limits import check_batch_bytes
from ringfold.runtime.bundle.loader import Bundle
from ringfold.runtime.bundle.precisions import TABLE
from ringfold.runtime.pixels.images import IMAGE_EXTENSIONS, folder_labels, list_images, load_image
from ringfold.runtime.pixels.preprocess import preprocess_image

from .evaluate_metrics import run_figures
from .evaluate_report import EvaluateReport

#: what the figures were measured on, in words (the report adds the folder and the count)
SOURCE = "the user's labelled images, ImageFolder layout: each folder names the class"
#: images decoded and run per step (every model sees each batch before the next one is decoded)
BATCH = 16
#: a progress line at most this often (seconds), and only for folders with more images than BATCH
PROGRESS_EVERY_S = 2.0


@dataclass(frozen=True)
class LabelledImages:
    """The images of DIR with their class index, in sorted order; ``root`` as the user gave it."""

    root: Path
    paths: list[Path]
    labels: list[int]


@dataclass
class Outputs:
    """What the models said: logits per run (``backend/precision`` → [images, classes]) on the images kept."""

    paths: list[Path] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    logits: dict[str, list[np.ndarray]] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"path", "error"} per unreadable image

    def stacked(self, run: str) -> np.ndarray:
        return np.concatenate(self.logits[run]) if self.logits[run] else np.zeros((0, 0), np.float32)


def labelled_images(root: str | os.PathLike, classnames: Sequence[str]) -> LabelledImages:
    """DIR's images and their labels; one line naming the fix when DIR is no ImageFolder of these classes."""
    root = Path(root)
    if not root.is_dir():
        raise RingfoldError(f"--images {os.fspath(root)}: not a folder; pass an ImageFolder (DIR/<class name>/*.jpg)")
    paths = list_images([root])
    if not paths:
        extensions = " ".join(sorted(IMAGE_EXTENSIONS))
        raise RingfoldError(f"--images {os.fspath(root)}: no image files below it (looked for {extensions})")
    outside = [p for p in paths if p.parent == root or p.parent.parent != root]
    if outside:
        raise RingfoldError(
            one_line(
                f"--images {os.fspath(root)}: {len(outside)} image(s) not in a class folder directly below it "
                f"(first: {os.fspath(outside[0])}); lay them out as DIR/<class name>/image"
            )
        )
    labels = folder_labels(paths, classnames)
    unknown = sorted({p.parent.name for p, label in zip(paths, labels, strict=True) if label < 0})
    if unknown:
        shown = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
        raise RingfoldError(
            one_line(
                f"--images {os.fspath(root)}: folder(s) {shown} name no class of the bundle; rename each to one of "
                "the bundle's class names (labels.json; '_' for ' ' accepted) or move it out"
            )
        )
    return LabelledImages(root, paths, labels)


def _decode(path: Path, prepare: Callable) -> np.ndarray:
    img = load_image(path)
    try:
        return prepare(img)
    except ImageError as exc:  # preprocess does not know the path; load_image's errors start with it
        raise ImageError(f"{os.fspath(path)}: {exc}") from exc


def _batches(images: LabelledImages, prepare: Callable, skip_bad: bool, out: Outputs) -> Iterator[np.ndarray]:
    """Preprocessed batches in image order; a bad image raises, or with ``skip_bad`` is listed in ``out``."""
    pending: list[np.ndarray] = []
    for path, label in zip(images.paths, images.labels, strict=True):
        try:
            pixels = _decode(path, prepare)
        except ImageError as exc:
            if not skip_bad:
                raise
            out.skipped.append({"path": os.fspath(path), "error": str(exc)})
            continue
        pending.append(pixels)
        out.paths.append(path)
        out.labels.append(label)
        if len(pending) == BATCH:
            yield np.stack(pending)
            pending = []
    if pending:
        yield np.stack(pending)


def run_models(
    bundle: Bundle,
    images: LabelledImages,
    models: dict[str, Backend],
    *,
    skip_bad: bool = False,
    progress: bool = True,
) -> Outputs:
    """Every model in ``models`` (run name → opened model) on every image of ``images``, one decode per image."""
    check_batch_bytes(BATCH, (3, *bundle.preprocess.size))
    prepare = partial(preprocess_image, cfg=bundle.preprocess)
    out = Outputs(logits={name: [] for name in models})
    total, done, last = len(images.paths), 0, time.monotonic()
    for batch in _batches(images, prepare, skip_bad, out):
        for name, model in models.items():
            out.logits[name].append(np.asarray(model.run(batch)["logits"], dtype=np.float32))
        done += len(batch)
        seen = done + len(out.skipped)
        if progress and total > BATCH and (time.monotonic() - last >= PROGRESS_EVERY_S or seen == total):
            print(f"ringfold evaluate: {seen}/{total} images", file=sys.stderr, flush=True)
            last = time.monotonic()
    return out


# ------------------------------------------------------------------------------------------- the runs
def run_names(bundle: Bundle, precisions: Sequence[str] | str, backends: Sequence[str]) -> list[tuple[str, str, bool]]:
    """(backend, precision, asked) for each run: "all" is every variant the precision table gives that backend
    (``asked`` False: one that cannot open there is skipped); named precisions must exist (one-line error)."""
    every = precisions == "all" or (not isinstance(precisions, str) and "all" in precisions)
    names = [precisions] if isinstance(precisions, str) and not every else list(precisions)
    for name in [] if every else names:
        if name in TABLE or name not in OPENVINO_PRECISIONS:  # OpenVINO's bf16 names no bundle file
            bundle.model_path(name)  # the bundle's one-line "has no X model; re-export with --precision X"
    runs = []
    for backend in dict.fromkeys(backends):
        if every and backend == "openvino":  # its own precisions (bf16, int8-bf16, ...) that this CPU runs
            runs += [(backend, p, False) for p in backend_precisions(bundle, backend)]
        elif every:
            runs += [(backend, p, False) for p in bundle.variants if _takes(backend, p)]
        else:
            runs += [(backend, p, True) for p in dict.fromkeys(names)]
    return runs


def _takes(backend: str, precision: str) -> bool:
    known = TABLE.get(precision)
    return known is None or backend in known.backends


def open_runs(
    bundle: Bundle, runs: list[tuple[str, str, bool]], provider: str | None, threads: int | None
) -> tuple[dict[str, Backend], dict[str, str]]:
    """Each run's model, opened now: (``backend/precision`` → model, ``backend/precision`` → why it was not
    opened). An asked run that cannot open raises its one-line error; an unasked one ("all") is left out, and
    the report says why (an ONNX Runtime too old for the variant's opsets, an engine not built yet)."""
    models: dict[str, Backend] = {}
    not_opened: dict[str, str] = {}
    for backend, precision, asked in runs:
        name = f"{backend}/{precision}"
        try:
            models[name] = open_model(bundle, precision, backend, provider, threads)
        except RingfoldError as exc:
            if asked:
                raise
            not_opened[name] = one_line(str(exc))[:300]
    if not models:
        reasons = "; ".join(f"{name}: {why}" for name, why in not_opened.items())
        raise RingfoldError(one_line(f"no model of {bundle.path} opens here ({reasons or 'none asked'})"))
    return models, not_opened


def evaluate_images(
    bundle: Bundle,
    images: LabelledImages,
    models: dict[str, Backend],
    tie_margins: dict[str, float],
    *,
    not_opened: dict[str, str] | None = None,
    skip_bad: bool = False,
    progress: bool = True,
) -> EvaluateReport:
    """Run every model on the labelled images and gather the report (``tie_margins``: precision → the fp32
    top-1 margin under which a flip is a near-tie; parity's tolerances, passed in by the caller)."""
    out = run_models(bundle, images, models, skip_bad=skip_bad, progress=progress)
    logits = {run: out.stacked(run) for run in models}
    paths = [os.fspath(p) for p in out.paths]
    return EvaluateReport(
        bundle=os.fspath(bundle.path),
        model=bundle.describe(),
        random_weights=bundle.random_weights,
        images_dir=os.fspath(images.root),
        classnames=list(bundle.labels),
        figures=run_figures(logits, out.labels, bundle.labels, tie_margins, paths),
        skipped=out.skipped,
        source=SOURCE,
        not_evaluated=dict(not_opened or {}),
    )
