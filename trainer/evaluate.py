"""Base-to-novel evaluation of a run (CoOp / CoCoOp / MMA / AdaRing protocol).

A run trained with ``--classes base`` saw only the first ceil(n/2) classes of a dataset. The papers
report three numbers on the test split:

- **base**: accuracy on the base classes' test images, classified among the base classes;
- **novel**: accuracy on the other classes' test images, classified among those classes only (their
  class embeddings come from the *adapted* text tower with the new class names and the run's
  templates; the model never saw them during training);
- **H** = 2·base·novel / (base + novel), their harmonic mean (``accuracy["hm"]`` in the result).

The model is the adapted PyTorch model with the adapters unfolded (:func:`load_adapted_model`), so
gated (non-foldable) adapters are evaluated exactly as trained. A run trained on ``all`` (or ``new``)
classes gets one accuracy on its own classes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ringfold.errors import FieldError, RingfoldError

from . import data as data_mod
from .device import pick_device
from .models import RANDOM_WEIGHTS, openclip_transform
from .run import RUN_FILE, load_adapted_model, read_run, splits_from_record
from .text import class_embeddings, clip_logits

EVAL_FORMAT = "ringfold-evaluate"
EVAL_FORMAT_VERSION = 1


def harmonic_mean(a: float, b: float) -> float:
    """2ab/(a+b), the papers' H; 0 when both are 0 (no division by zero)."""
    return 0.0 if a + b <= 0 else 2.0 * a * b / (a + b)


def _names(classnames: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(repr(c) for c in classnames[:limit])
    return shown + (", ..." if len(classnames) > limit else "")


def _subsets(record, splits: data_mod.LabelledSplits, data: str | Path) -> dict[str, data_mod.LabelledSplits]:
    """The class subsets to evaluate, checked against the classes the run was trained on."""
    trained_on = record.data.classes
    n = len(splits.classnames)
    if trained_on == "base":
        if list(splits.classnames) == list(record.classnames):
            raise RingfoldError(
                f"{data} holds only the run's {n} base classes and no new ones, so there is nothing novel to score: "
                "pass the full dataset (all classes) the run's base classes were taken from"
            )
        base = data_mod.subsample_classes(splits, "base")
        if list(base.classnames) != list(record.classnames):
            raise RingfoldError(
                f"{data}: its base classes ({_names(base.classnames)}; {len(base.classnames)} of {n}) are not the "
                f"{len(record.classnames)} classes the run was trained on ({_names(record.classnames)}): pass the "
                "dataset the run was trained on (see run.json data.path)"
            )
        return {"base": base, "novel": data_mod.subsample_classes(splits, "new")}
    subset = data_mod.subsample_classes(splits, trained_on) if trained_on in ("base", "new") else splits
    if list(subset.classnames) != list(record.classnames):
        raise RingfoldError(
            f"{data}: its classes ({_names(subset.classnames)}; {len(subset.classnames)}) are not the "
            f"{len(record.classnames)} classes the run was trained on ({_names(record.classnames)}): pass the dataset "
            "the run was trained on (see run.json data.path)"
        )
    return {trained_on: subset}


@torch.no_grad()
def count_correct(
    model: torch.nn.Module, class_emb: torch.Tensor, batches, device: torch.device, num_classes: int
) -> tuple[int, list[int]]:
    """(correct, per-class correct counts) of CLIP's zero-shot rule over ``(images, labels)`` batches.

    The one accuracy of ringfold: the trainer's per-epoch eval accuracy and ``ringfold evaluate`` count here.
    """
    correct = 0
    per_class = [0] * num_classes
    for images, labels in batches:
        pred = clip_logits(model, images.to(device), class_emb).argmax(-1).cpu()
        hit = pred == labels
        correct += int(hit.sum())
        for label in labels[hit].tolist():
            per_class[label] += 1
    return correct, per_class


@torch.no_grad()
def _accuracy(
    model: torch.nn.Module,
    tokenizer,
    classnames: list[str],
    templates: list[str],
    samples: list[data_mod.Sample],
    transform,
    device: torch.device,
    batch_size: int,
    workers: int,
    progress: bool,
    desc: str,
) -> tuple[int, list[int]]:
    """(correct, per-class correct counts) for ``samples`` classified among ``classnames`` only."""
    class_emb = class_embeddings(model, tokenizer, classnames, templates, device)
    loader = DataLoader(
        data_mod.ImageDataset(samples, transform), batch_size=batch_size, shuffle=False, num_workers=workers
    )
    if progress:
        from tqdm.auto import tqdm

        loader = tqdm(loader, desc=desc, unit="batch", leave=False)
    return count_correct(model, class_emb, loader, device, len(classnames))


def evaluate_run(
    run_dir: str | Path,
    data: str | Path | None = None,
    image_root: str | Path | None = None,
    split: str = "test",
    batch_size: int = 64,
    device: str = "auto",
    progress: bool = True,
    *,
    workers: int = 0,
    zero_shot: bool = False,
) -> dict[str, Any]:
    """Accuracy of a run's adapted model on its base and novel classes (or on its own classes).

    ``data`` defaults to the dataset recorded in run.json (and ``image_root`` with it). With
    ``zero_shot`` the same images are also classified with the adapters switched off (the frozen
    CLIP model), the papers' reference row. Returns a JSON-ready dict; see ``accuracy`` in it.
    """
    t0 = time.time()
    run_dir = Path(run_dir)
    record, data, image_root = _checked_request(run_dir, data, image_root, split, batch_size)
    splits = splits_from_record(record, data=data, image_root=image_root, classes="all")  # _subsets cuts them
    subsets = _subsets(record, splits, data)

    torch_device = pick_device(device)
    record, loaded, adapters = load_adapted_model(run_dir, device=str(torch_device))
    scorer = _Scorer(
        loaded.model,
        loaded.tokenizer,
        adapters,
        openclip_transform(record.preprocess),
        list(record.templates),
        torch_device,
        batch_size,
        workers,
        progress,
    )
    results = {name: _evaluate_subset(scorer, name, subset, split, data, zero_shot) for name, subset in subsets.items()}
    out = _result(run_dir, record, results, scorer, splits.source, data, split, zero_shot)
    out["seconds"] = round(time.time() - t0, 2)
    return out


def _checked_request(
    run_dir: Path, data: str | Path | None, image_root: str | Path | None, split: str, batch_size: int
) -> tuple[Any, str | Path, str | Path | None]:
    """The run's record and the dataset to read (run.json's when ``data`` is None), every argument checked first.

    One-line errors for a missing run, a bad batch size or split and a damaged run.json, before anything heavy.
    """
    if not run_dir.is_dir():
        raise RingfoldError(
            f"{run_dir}: no such run directory (no {RUN_FILE}); pass a directory written by `ringfold train`"
        )
    if batch_size < 1:
        raise FieldError("batch_size", f"must be >= 1, got {batch_size}")
    if split not in data_mod.SPLIT_NAMES:
        raise FieldError("split", f"must be one of {', '.join(data_mod.SPLIT_NAMES)}, got {split!r}")
    record = read_run(run_dir)
    if data is None:
        if not record.data.path:
            raise FieldError("data", f"is needed: {run_dir / RUN_FILE} records no dataset path")
        data = record.data.path
        if image_root is None:
            image_root = record.data.image_root
    return record, data, image_root


@dataclass
class _Scorer:
    """The loaded model and how to batch images through it: what every subset's accuracy needs."""

    model: torch.nn.Module
    tokenizer: Any
    adapters: Any
    transform: Any
    templates: list[str]
    device: torch.device
    batch_size: int
    workers: int
    progress: bool

    def correct(self, classnames: list[str], samples: list[data_mod.Sample], desc: str) -> tuple[int, list[int]]:
        """(correct, per-class correct counts) for ``samples`` among ``classnames``, adapters as they are now."""
        args = (self.model, self.tokenizer, classnames, self.templates, samples, self.transform, self.device)
        return _accuracy(*args, self.batch_size, self.workers, self.progress, desc=desc)


def _evaluate_subset(
    scorer: _Scorer, name: str, subset: data_mod.LabelledSplits, split: str, data: str | Path, zero_shot: bool
) -> dict[str, Any]:
    """One subset's entry of the result: its decodable ``split`` images classified among its classes only."""
    samples = subset.split(split)
    if not samples:
        raise RingfoldError(
            f"{data}: the {name} classes have no {split} images: pass a dataset with a {split} split "
            f"(or --split {'val' if split == 'test' else 'test'})"
        )
    usable = data_mod.scan_images(samples, "skip")
    if not usable:
        raise RingfoldError(f"{data}: none of the {len(samples)} {name} {split} images can be decoded; fix them")
    counts = [0] * len(subset.classnames)
    for s in usable:
        counts[s.label] += 1
    classnames = list(subset.classnames)
    scorer.adapters.set_enabled(True)
    correct, per_class = scorer.correct(classnames, usable, desc=f"{name} ({len(usable)} images)")
    entry: dict[str, Any] = {
        "classes": len(subset.classnames),
        "classnames": classnames,
        "images": len(usable),
        "skipped_images": len(samples) - len(usable),
        "correct": correct,
        "accuracy": correct / len(usable),
        "chance": 1.0 / len(subset.classnames),
        "per_class_accuracy": {
            c: (per_class[i] / counts[i] if counts[i] else None) for i, c in enumerate(subset.classnames)
        },
    }
    if zero_shot:
        scorer.adapters.set_enabled(False)
        try:
            zs_correct, _ = scorer.correct(classnames, usable, desc=f"{name} zero-shot")
        finally:
            scorer.adapters.set_enabled(True)
        entry["zero_shot_correct"] = zs_correct
        entry["zero_shot_accuracy"] = zs_correct / len(usable)
    return entry


def _result(
    run_dir: Path,
    record,
    results: dict[str, dict[str, Any]],
    scorer: _Scorer,
    data_source: str,
    data: str | Path,
    split: str,
    zero_shot: bool,
) -> dict[str, Any]:
    """The JSON-ready result: the subsets' entries, the accuracies (with H for base-to-novel) and the run's facts."""
    protocol = "base-to-novel" if "novel" in results else record.data.classes
    accuracy: dict[str, float] = {name: r["accuracy"] for name, r in results.items()}
    if protocol == "base-to-novel":
        accuracy["hm"] = harmonic_mean(accuracy["base"], accuracy["novel"])
    out: dict[str, Any] = {
        "format": EVAL_FORMAT,
        "format_version": EVAL_FORMAT_VERSION,
        "run": str(run_dir),
        "model": record.model_name,
        "weights": record.weights.describe(),
        "random_weights": record.is_random,
        "method": record.adapter.method,
        "protocol": protocol,
        "data": str(data),
        "data_source": data_source,
        "split": split,
        "templates": scorer.templates,
        "device": str(scorer.device),
        "accuracy": accuracy,
        "subsets": results,
    }
    if zero_shot:
        zs = {name: r["zero_shot_accuracy"] for name, r in results.items()}
        if protocol == "base-to-novel":
            zs["hm"] = harmonic_mean(zs["base"], zs["novel"])
        out["zero_shot_accuracy"] = zs
    if record.is_random:
        out["note"] = (
            f"{RANDOM_WEIGHTS}: the frozen model is a random-init {record.model_name}; these accuracies test the "
            "machinery and say nothing about accuracy on real photos"
        )
    return out


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def format_result(result: dict[str, Any]) -> str:
    """A small plain-text table of the result of :func:`evaluate_run`."""
    zs = result.get("zero_shot_accuracy")
    lines = [
        f"{result['model']} ({result['weights']}) · {result['method']} · {result['protocol']} · "
        f"{result['split']} split of {result['data']}",
    ]
    header = f"{'subset':<8} {'classes':>7} {'images':>7} {'correct':>8} {'accuracy':>9}"
    if zs:
        header += f" {'zero-shot':>10}"
    lines += [header, "-" * len(header)]
    for name, r in result["subsets"].items():
        row = f"{name:<8} {r['classes']:>7} {r['images']:>7} {r['correct']:>8} {_pct(r['accuracy']):>9}"
        if zs:
            row += f" {_pct(r.get('zero_shot_accuracy')):>10}"
        lines.append(row)
    if "hm" in result["accuracy"]:
        row = f"{'H':<8} {'':>7} {'':>7} {'':>8} {_pct(result['accuracy']['hm']):>9}"
        if zs:
            row += f" {_pct(zs.get('hm')):>10}"
        lines.append(row)
    skipped = sum(r["skipped_images"] for r in result["subsets"].values())
    if skipped:
        lines.append(f"skipped {skipped} image(s) that cannot be decoded")
    if result.get("random_weights"):
        lines.append(f"note: {result['note']}")
    return "\n".join(lines)
