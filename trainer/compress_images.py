"""The real images ``ringfold compress`` measures the compressed run on, and what it measures (DESIGN §4.5).

A comparison of two models is only worth printing on images like the ones they will see: agreement on
generated noise said 100 % for a compression that cost a third of the accuracy on held-out photos. So
compress measures on the run's own held-out images (its test split, val when it has none, drawn again
from the data path ``run.json`` records, with the run's seed) or on ``--images DIR``; without either it
says "agreement not measured: no real images" and prints no figure at all.

Everything here that can fail on the user's input (a missing or empty ``--images``) runs before the
source model is loaded or any ring is fitted; the images are decoded and transformed once, up front.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ringfold.errors import FieldError, RingfoldError
from ringfold.runtime.base.fields import one_line
from ringfold.runtime.parity.metrics import compare
from ringfold.runtime.pixels.images import (
    IMAGE_EXTENSIONS,
    folder_labels,
    list_images,
    load_image,
    round_robin_by_label,
)

from .head import build_classifier, classifier_outputs
from .run import RunRecord, splits_from_record
from .text import class_embeddings

#: default --images-limit: enough for a top-1 figure to mean something, few enough to take seconds on a CPU
DEFAULT_IMAGES_LIMIT = 64
#: the most images compress decodes and holds (as float32 tensors) at once
MAX_IMAGES_LIMIT = 1024
#: what the report and stdout say when there is nothing real to measure on
NO_IMAGES = "agreement not measured: no real images"
NO_IMAGES_FIX = "pass --images DIR (held-out images, one sub-folder per class) to measure it"


@dataclass
class ImageSet:
    """Decoded, transformed images with labels (-1: not one of the run's classes), and where they came from."""

    pixels: torch.Tensor | None
    labels: list[int] = field(default_factory=list)
    origin: str = ""  # "run data" or "--images"
    path: str | None = None
    split: str | None = None  # the run's split they were drawn from; None for --images
    reason: str | None = None  # why there are none

    @property
    def count(self) -> int:
        return 0 if self.pixels is None else len(self.pixels)

    def describe(self) -> str:
        return describe_images(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "labelled": sum(label >= 0 for label in self.labels),
            "origin": self.origin,
            "path": self.path,
            "split": self.split,
        }


def find_images(record: RunRecord, images: str | None, limit: int, transform: Callable) -> ImageSet:
    """Up to ``limit`` real images, round-robin over classes: ``--images DIR``, else the run's held-out split.

    A bad ``--images`` is the user's mistake and a one-line error; the run's data being gone is not
    (compress still works) and gives an empty set whose ``reason`` the report prints.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_IMAGES_LIMIT:
        raise FieldError("images_limit", f"must be an integer from 1 to {MAX_IMAGES_LIMIT}, got {limit!r}")
    if images is not None:
        return _user_images(Path(images), record.classnames, limit, transform)
    return _run_images(record, limit, transform)


def _user_images(root: Path, classnames: list[str], limit: int, transform: Callable) -> ImageSet:
    fix = "pass a folder of held-out images, one sub-folder per class (the class name, '_' for ' ')"
    if not root.is_dir():
        raise RingfoldError(one_line(f"--images {root}: no such folder; {fix}"))
    paths = [p for p in list_images([root]) if p.is_file()]  # regular files only: a FIFO would block the read
    if not paths:
        kinds = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise RingfoldError(one_line(f"--images {root}: no image files ({kinds}) in it; {fix}"))
    labelled = list(zip(paths, folder_labels(paths, classnames), strict=True))
    pixels, labels, first_error = _decode(round_robin_by_label(labelled), limit, transform)
    if pixels is None:
        raise RingfoldError(
            one_line(f"--images {root}: none of its {len(paths)} image files can be decoded (first: {first_error})")
        )
    return ImageSet(pixels, labels, "--images", str(root), None)


def _run_images(record: RunRecord, limit: int, transform: Callable) -> ImageSet:
    where = record.data.path
    if not where:
        return ImageSet(None, reason="run.json records no data path (a synthetic or hand-made run)")
    if not Path(where).exists():
        return ImageSet(None, path=where, reason=f"the run's data {where} is gone (moved or deleted)")
    try:
        splits = splits_from_record(record)  # with the run's seed: the very images it held out
    except (RingfoldError, OSError) as exc:
        return ImageSet(None, path=where, reason=one_line(f"the run's data {where} cannot be read ({exc})"))
    split = "test" if splits.test else "val"
    samples = splits.test or splits.val
    if not samples:
        return ImageSet(None, path=where, reason=f"the run's data {where} has no held-out (test or val) images")
    index = {name: i for i, name in enumerate(record.classnames)}
    labelled = [(s.path, index.get(splits.classnames[s.label], -1)) for s in samples]
    pixels, labels, first_error = _decode(round_robin_by_label(labelled), limit, transform)
    if pixels is None:
        return ImageSet(None, path=where, split=split, reason=f"no {split} image of {where} decodes ({first_error})")
    return ImageSet(pixels, labels, "run data", where, split)


def _decode(items: list[tuple[Path, int]], limit: int, transform: Callable):
    """The first ``limit`` items that decode, as (pixels, labels, first error); undecodable files are skipped."""
    tensors, labels, first_error = [], [], None
    for path, label in items:
        if len(tensors) == limit:
            break
        try:
            tensors.append(transform(load_image(path)))
        except RingfoldError as exc:  # ImageError: corrupt, empty, too small, too large
            first_error = first_error or str(exc)
            continue
        labels.append(label)
    return (torch.stack(tensors) if tensors else None), labels, first_error


@torch.no_grad()
def measure_agreement(images: ImageSet, record: RunRecord, source_model, target_model, tokenizer) -> dict[str, Any]:
    """Source vs compressed on real images: top-1 agreement, max |Δlogit|, min cosine, and each one's accuracy."""
    if images.pixels is None:
        return {"measured": False, "reason": images.reason, "message": no_images_line(images.reason)}

    outputs = []
    for model in (source_model, target_model):
        emb = class_embeddings(model, tokenizer, record.classnames, record.templates)
        outputs.append(classifier_outputs(build_classifier(model, emb), images.pixels))
    labels = np.asarray(images.labels, dtype=np.int64)
    comp = compare("AdaRing (compressed) vs source run", "fp32", *outputs[1], *outputs[0], labels=labels)
    return {
        "measured": True,
        "images": images.to_dict(),
        "top1_agreement": comp.top1_agreement,
        "max_abs_logit": comp.max_abs_logit,
        "cosine_min": comp.cosine_min,
        "source_top1_accuracy": comp.accuracy_reference,
        "compressed_top1_accuracy": comp.accuracy_backend,
    }


def describe_images(images: dict[str, Any]) -> str:
    """'12 held-out images from /data (test split)' or '40 images from --images /x'."""
    if images["origin"] == "--images":
        return f"{images['count']} images from --images {images['path']}"
    return f"{images['count']} held-out images from {images['path']} ({images['split']} split)"


def no_images_line(reason: str | None) -> str:
    return f"{NO_IMAGES} ({reason}); {NO_IMAGES_FIX}"


def agreement_lines(agreement: dict[str, Any]) -> list[str]:
    """The report's and stdout's lines: every figure with the images it was measured on."""
    if not agreement.get("measured"):
        return [agreement["message"]]
    im = agreement["images"]
    lines = [
        f"Compressed vs source run on {describe_images(im)}: top-1 agreement {agreement['top1_agreement']:.1%}, "
        f"max |Δlogit| {agreement['max_abs_logit']:.3g}, min embedding cosine {agreement['cosine_min']:.6f}."
    ]
    if agreement["source_top1_accuracy"] is None:
        lines.append(
            f"Top-1 accuracy not measured: none of the {im['count']} images is in a folder named after "
            "one of the run's classes."
        )
    else:
        lines.append(
            f"Top-1 accuracy on the {im['labelled']} labelled ones: source run "
            f"{agreement['source_top1_accuracy']:.1%}, compressed {agreement['compressed_top1_accuracy']:.1%}."
        )
    return lines
