"""Class embeddings on the device: the bundle's ``text.onnx`` + torch-free tokenizer, open_clip's recipe in numpy.

Same as :func:`ringfold.trainer.text.class_embeddings`: every template filled with
every class name, each prompt's embedding L2-normalised (``text.onnx`` already
does that), the mean over a class's templates, re-normalised. The head the
exporter bakes is ``logit_scale · class_embeddings``; :func:`head_weight` gives it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ringfold.errors import BundleError, RingfoldError
from ringfold.runtime.backends.onnxruntime.session import create_session
from ringfold.runtime.bundle.loader import Bundle
from ringfold.runtime.bundle.sections.text import TEXT_INPUT, TEXT_OUTPUT, TextInfo, fill

from .tokenizer import ClipTokenizer

#: prompts per text.onnx call: large enough to amortise the call, small enough for a Jetson's memory
DEFAULT_TEXT_BATCH = 64


class TextModel:
    """``text.onnx`` in an ONNX Runtime session; its input/output names, dtypes and ranks are checked on load."""

    def __init__(self, path: Path, context_length: int, provider: str | None = "cpu", threads: int | None = None):
        self.session = create_session(path, provider, threads, error=BundleError)
        ins, outs = self.session.get_inputs(), self.session.get_outputs()
        if (
            [(i.name, i.type, len(i.shape)) for i in ins] != [(TEXT_INPUT, "tensor(int64)", 2)]
            or [(o.name, o.type, len(o.shape)) for o in outs] != [(TEXT_OUTPUT, "tensor(float)", 2)]
            or ins[0].shape[1] not in (context_length, None)
            or isinstance(ins[0].shape[1], str)
        ):
            raise BundleError(
                f"{path}: graph I/O differs from the manifest's text section (int64 {TEXT_INPUT} "
                f"[batch, {context_length}] → float32 {TEXT_OUTPUT} [batch, dim]); re-export the bundle"
            )
        self.path = Path(path)
        self.context_length = context_length

    def embed(self, input_ids: np.ndarray, batch: int = DEFAULT_TEXT_BATCH) -> np.ndarray:
        """float32 [n, dim] text embeddings (unit rows) of int64 [n, context_length] ids."""
        chunks = [
            self.session.run([TEXT_OUTPUT], {TEXT_INPUT: np.ascontiguousarray(input_ids[i : i + batch], np.int64)})[0]
            for i in range(0, len(input_ids), batch)
        ]
        return np.concatenate(chunks).astype(np.float32, copy=False)


@dataclass
class TextTower:
    """What ``classify --classes`` and ``relabel`` need from a bundle: model, tokenizer, section."""

    model: TextModel
    tokenizer: ClipTokenizer
    info: TextInfo

    def class_embeddings(
        self, classnames: Sequence[str], templates: Sequence[str], batch: int = DEFAULT_TEXT_BATCH
    ) -> np.ndarray:
        """float32 [classes, dim], unit rows: mean over templates of the prompts' unit embeddings, re-normalised."""
        prompts = [fill(t, name) for name in classnames for t in templates]
        emb = self.model.embed(self.tokenizer(prompts), batch).astype(np.float64)
        if emb.shape[1] != self.info.embed_dim:
            raise BundleError(
                f"{self.model.path}: gives {emb.shape[1]}-d embeddings, the manifest's text section says "
                f"{self.info.embed_dim}; re-export the bundle"
            )
        emb = emb.reshape(len(classnames), len(templates), -1).mean(axis=1)
        norms = np.linalg.norm(emb, axis=-1, keepdims=True)
        if not np.isfinite(emb).all() or (norms < 1e-12).any():
            raise RingfoldError(f"{self.model.path}: text embeddings are not finite/non-zero; re-export the bundle")
        return (emb / norms).astype(np.float32)

    def head_weight(self, class_emb: np.ndarray) -> np.ndarray:
        """``logit_scale · class_emb`` rounded once to float32, as the exporter bakes it (float64 product)."""
        return (class_emb.astype(np.float64) * self.info.logit_scale).astype(np.float32)

    def head_for(self, classnames: Sequence[str], templates: Sequence[str]) -> np.ndarray:
        """The head weight [classes, dim] that scores ``classnames``: what relabel writes and open vocabulary uses."""
        return self.head_weight(self.class_embeddings(list(classnames), tuple(templates)))


def open_text_tower(bundle: Bundle, provider: str | None = "cpu", threads: int | None = None) -> TextTower:
    """The bundle's text tower; a bundle exported without one is refused with what to do."""
    info = bundle.manifest.text
    if info is None:
        export = bundle.manifest.raw.get("export")
        note = export.get("text_skipped") if isinstance(export, dict) else None
        why = f" ({' '.join(str(note).split())[:120]})" if note else ""
        raise BundleError(
            f"{bundle.path}: has no text tower{why}; re-export it with this ringfold to use --classes or relabel"
        )
    tokenizer = ClipTokenizer.from_file(bundle.file(info.vocabulary), info.context_length)
    return TextTower(TextModel(bundle.file(info.file), info.context_length, provider, threads), tokenizer, info)
