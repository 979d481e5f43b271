"""Live PyTorch side of ``ringfold parity --run RUN/``: rebuild the adapted model and compare on new images."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from ringfold.errors import RingfoldError
from ringfold.runtime.bundle.loader import Bundle
from ringfold.runtime.parity.metrics import PreprocessCheck, Tolerance, compare
from ringfold.runtime.parity.report import ParityReport
from ringfold.runtime.pixels.images import folder_labels, list_images, load_image
from ringfold.runtime.pixels.preprocess import preprocess_batch
from ringfold.trainer.head import build_classifier, classifier_outputs
from ringfold.trainer.models import openclip_transform
from ringfold.trainer.run import load_adapted_model
from ringfold.trainer.text import class_embeddings

from .fold import fold_adapters


def add_torch_parity(
    report: ParityReport,
    bundle: Bundle,
    model,
    run_dir: str | Path,
    images: list[str] | None,
    precision: str,
    tolerance: Tolerance,
    live_check: bool = True,
) -> None:
    record, loaded, _ = load_adapted_model(run_dir)
    if record.weights_fingerprint != bundle.manifest.weights_fingerprint:
        raise RingfoldError(
            f"{run_dir}: this run's frozen model is not the one in {bundle.path}; pass the run it came from"
        )
    if record.classnames != bundle.labels:
        raise RingfoldError(f"{run_dir}: class names differ from {bundle.path}/labels.json; pass the run it came from")
    with torch.no_grad():
        class_emb = class_embeddings(loaded.model, loaded.tokenizer, record.classnames, record.templates)
    unfolded = build_classifier(loaded.model, class_emb)
    folded_model = copy.deepcopy(loaded.model)
    fold_adapters(folded_model)
    folded = build_classifier(folded_model, class_emb)

    ref = bundle.reference()
    live_logits, live_emb = classifier_outputs(unfolded, torch.from_numpy(ref.pixel_values))
    if live_check:
        report.comparisons.append(
            compare(
                "PyTorch live (rebuilt from run) vs bundle's stored reference",
                "fp32",
                live_logits,
                live_emb,
                ref.logits,
                ref.embedding,
                None,
                images=list(ref.images),
                subject="live PyTorch",
            )
        )
    if not images:
        return
    paths = list_images(images)
    if not paths:
        raise RingfoldError(f"{' '.join(images)}: no images found; pass files or folders of images")
    pil = [load_image(p) for p in paths]
    transform = openclip_transform(record.preprocess)
    torch_pixels = torch.stack([transform(img) for img in pil])
    ours = preprocess_batch(pil, bundle.preprocess)
    if live_check:  # the same images for every precision: check the preprocessing once
        report.preprocessing.append(
            PreprocessCheck(
                "runtime preprocess vs open_clip transform (--images)",
                len(paths),
                float(np.abs(ours - torch_pixels.numpy()).max()),
            )
        )
    labels = np.array(folder_labels(paths, record.classnames), dtype=np.int64)
    labels = labels if (labels >= 0).any() else None
    out = model.run_batched(ours)
    for name, classifier in (("adapted (unfolded)", unfolded), ("folded", folded)):
        ref_logits, ref_emb = classifier_outputs(classifier, torch_pixels)
        report.comparisons.append(
            compare(
                f"{precision} backend vs PyTorch {name}, --images end to end",
                precision,
                out["logits"],
                out["embedding"],
                ref_logits,
                ref_emb,
                labels,
                tolerance,
                images=[str(p) for p in paths],
                against="folded" if name == "folded" else "unfolded",
                source="--images",
                end_to_end=True,
            )
        )
