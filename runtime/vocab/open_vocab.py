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
from ringfold.runtime.backends.base import Backend, IoSpec
from ringfold.runtime.bundle.loader import Bundle
from ringfold.runtime.bundle.spec import EMBEDDING, LOGITS

from .class_list import check_against_bundle
from .text_model import open_text_tower


class OpenVocabularyModel(Backend):
    """A bundle model whose logits come from its embedding and a head computed on the device.

    A :class:`~.backends.Backend` in its own right: ``run``, ``run_batched`` and ``io`` all describe the NEW
    head. Nothing is forwarded to the wrapped model by attribute (no ``__getattr__``): a wrapper that did
    would let ``run_batched`` or any later method reach the bundle's own head and return the old classes'
    logits under the new labels. Only what reports need (backend, provider, max_batch) is copied, by name.
    """

    def __init__(self, model: Backend, head_weight: np.ndarray) -> None:
        self._model = model
        self._head = np.ascontiguousarray(head_weight.T, dtype=np.float32)  # [embed_dim, classes]

    @property
    def backend(self) -> str:
        return self._model.backend

    @property
    def provider(self) -> str:
        return self._model.provider

    @property
    def max_batch(self) -> int | None:
        return self._model.max_batch

    @property
    def num_classes(self) -> int:
        return self._head.shape[1]

    def run(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """The new classes' logits (and the embedding they come from) for one batch."""
        out = self._model.run(pixels)
        embedding = np.asarray(out[EMBEDDING], dtype=np.float32)
        if embedding.ndim != 2 or embedding.shape[1] != self._head.shape[0]:
            raise BundleError(
                f"the image model's embedding is {list(embedding.shape[1:])}-d, the text tower's "
                f"{self._head.shape[0]}-d: they come from different models; re-export the bundle"
            )
        return {LOGITS: embedding @ self._head, EMBEDDING: embedding}

    def io(self) -> tuple[list[IoSpec], list[IoSpec]]:
        """The wrapped model's inputs; its outputs with the logits' width set to the new class count."""
        inputs, outputs = self._model.io()
        width = self.num_classes
        return inputs, [(n, d, [*s[:1], width] if n == LOGITS else s) for n, d, s in outputs]


def with_classes(
    bundle: Bundle,
    model: Backend,
    classes: Sequence[str],
    templates: Sequence[str] | None = None,
    provider: str | None = "cpu",
    threads: int | None = None,
) -> tuple[Bundle, OpenVocabularyModel]:
    """The bundle (labels replaced by ``classes``) and ``model`` scoring those classes; templates default to the
    bundle's. The class list is checked (:func:`~.class_list.check_against_bundle`) before the text tower loads."""
    check_against_bundle(bundle, classes, templates, "--classes")
    tower = open_text_tower(bundle, provider, threads)
    weight = tower.head_for(classes, templates or tower.info.templates)
    return dataclasses.replace(bundle, labels=list(classes)), OpenVocabularyModel(model, weight)
