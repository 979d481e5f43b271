"""``classify --classes``: score images against class names chosen now, with the bundle's text tower.

The image model's ``embedding`` output is L2-normalised (the exporter's head
takes it as is, :mod:`ringfold.trainer.head`), so the logits for the new
classes are ``embedding @ (logit_scale · class_embeddings)ᵀ`` — exactly what a
bundle exported with those classes computes in its MatMul head.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from ringfold.errors import BundleError

from .bundle import EMBEDDING, LOGITS, Bundle
from .text_model import open_text_tower


class OpenVocabularyModel:
    """A bundle model whose logits come from its embedding and a head computed on the device."""

    def __init__(self, model, head_weight: np.ndarray) -> None:
        self.model = model
        self.head = np.ascontiguousarray(head_weight.T, dtype=np.float32)  # [embed_dim, classes]

    def run(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        out = self.model.run(pixels)
        embedding = np.asarray(out[EMBEDDING], dtype=np.float32)
        if embedding.ndim != 2 or embedding.shape[1] != self.head.shape[0]:
            raise BundleError(
                f"the image model's embedding is {list(embedding.shape[1:])}-d, the text tower's "
                f"{self.head.shape[0]}-d: they come from different models; re-export the bundle"
            )
        return {LOGITS: embedding @ self.head, EMBEDDING: embedding}

    def __getattr__(self, name: str):  # provider, backend, … of the wrapped model for reports
        return getattr(self.model, name)


def with_classes(
    bundle: Bundle,
    model,
    classes: Sequence[str],
    templates: Sequence[str] | None = None,
    provider: str | None = "cpu",
    threads: int | None = None,
) -> tuple[Bundle, OpenVocabularyModel]:
    """The bundle (labels replaced by ``classes``) and ``model`` scoring those classes; templates default to the
    bundle's."""
    tower = open_text_tower(bundle, provider, threads)
    weight = tower.head_for(classes, templates or tower.info.templates)
    return dataclasses.replace(bundle, labels=list(classes)), OpenVocabularyModel(model, weight)
