"""Export the (folded) text tower as ``text.onnx`` and ship the tokenizer's vocabulary (open vocabulary, DESIGN §13).

The device then computes class embeddings for any class names the way
:func:`ringfold.trainer.text.class_embeddings` does at export: templates ×
classes through ``text.onnx`` (which already L2-normalises), mean over templates,
re-normalise; logits are ``logit_scale · ⟨image embedding, class embedding⟩``.

Only open_clip ``CLIP`` models with the built-in text transformer, argmax (EOT)
pooling and open_clip's own ``SimpleTokenizer`` (clean='lower', default
vocabulary) are supported: those are what the torch-free tokenizer reproduces.
Anything else is skipped with a note in the manifest (the bundle still works
for its own classes; ``classify --classes`` and ``relabel`` then refuse).
"""

from __future__ import annotations

import functools
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ringfold.errors import RingfoldError
from ringfold.runtime.bundle.sections.text import TEXT_FILE, TEXT_INPUT, TEXT_OUTPUT, VOCAB_FILE
from ringfold.runtime.vocab.text_model import TextModel
from ringfold.runtime.vocab.tokenizer import VOCAB_SIZE, ClipTokenizer, read_merges
from ringfold.trainer.text import text_features

from .onnx_export import export_module

#: protobuf's 2 GiB message limit, less room for the graph
MAX_TEXT_ONNX_BYTES = 2**31 - 64 * 2**20
#: max |Δ| between text.onnx (ONNX Runtime) and the unfolded PyTorch text tower's unit embeddings
TEXT_TOLERANCE = 1e-4
#: the manifest records this many (prompt) rows of the ONNX-vs-PyTorch check at most
MAX_CHECK_PROMPTS = 256


class TextEncoder(nn.Module):
    """input_ids int64 [batch, context] → L2-normalised text embedding [batch, embed_dim].

    open_clip's ``CLIP.encode_text(normalize=True)`` step by step, except that the EOT position is the
    argmax of the ids cast to int32: ONNX Runtime before 1.2x has no int64 ArgMax kernel (1.17, the
    oldest the runtime supports, refuses the graph), and ids are < 49,408. Tests compare it with
    ``encode_text`` of the unfolded model.
    """

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return text_features(self.clip, input_ids, input_ids.to(torch.int32).argmax(dim=-1))


def unsupported_reason(model: nn.Module, tokenizer: Any) -> str | None:
    """Why the text tower of ``model`` cannot ship for the torch-free tokenizer, or None when it can."""
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer, default_bpe

    if not isinstance(model, open_clip.CLIP):
        return f"{type(model).__name__} has no built-in open_clip text transformer (only open_clip.CLIP is supported)"
    if getattr(model, "text_pool_type", "argmax") != "argmax":
        return f"text pooling {model.text_pool_type!r} (only 'argmax', the EOT token, is supported)"
    if not isinstance(tokenizer, SimpleTokenizer) or tokenizer.reduction_fn is not None:
        return f"tokenizer {type(tokenizer).__name__} (only open_clip's SimpleTokenizer is reproduced torch-free)"
    if tokenizer.clean_fn.__name__ != "_clean_lower" or len(tokenizer.encoder) != VOCAB_SIZE:
        return "SimpleTokenizer with a non-default cleaning or vocabulary"
    text_bytes = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if not n.startswith("visual."))
    if text_bytes > MAX_TEXT_ONNX_BYTES:
        return f"text tower of {text_bytes / 2**30:.1f} GiB: over the 2 GiB a single-file ONNX model can hold"
    if model.token_embedding.num_embeddings != VOCAB_SIZE:
        return f"text vocabulary of {model.token_embedding.num_embeddings} tokens (expected {VOCAB_SIZE})"
    if tokenizer.bpe_ranks != _default_ranks(default_bpe()):
        return "the tokenizer's BPE merges differ from open_clip's default vocabulary file"
    return None


@functools.lru_cache(maxsize=1)
def _default_merges(path: str) -> tuple[tuple[str, str], ...]:
    return tuple(read_merges(Path(path)))


@functools.lru_cache(maxsize=1)
def _default_ranks(path: str) -> dict[tuple[str, str], int]:
    merges = _default_merges(path)
    return dict(zip(merges, range(len(merges)), strict=True))


@dataclass
class TextCheck:
    """PyTorch's adapted (unfolded) text embeddings of the class prompts, to compare ``text.onnx`` against."""

    prompts: list[str]
    input_ids: np.ndarray
    embedding: np.ndarray


@torch.no_grad()
def text_reference(model: nn.Module, tokenizer: Any, record: Any) -> TextCheck:
    """Call BEFORE folding: the unfolded adapted text tower on (up to MAX_CHECK_PROMPTS of) the class prompts."""
    prompts = [t.format(c) for c in record.classnames for t in record.templates][:MAX_CHECK_PROMPTS]
    ids = tokenizer(prompts)
    emb = model.encode_text(ids, normalize=True).float().numpy()
    return TextCheck(prompts, ids.numpy().astype(np.int64), emb)


def export_text_onnx(model: nn.Module, context_length: int, path: Path, opset: int) -> None:
    """Write the text tower (dynamic batch) and run onnx's full checker."""
    dummy = torch.zeros(2, context_length, dtype=torch.long)
    dummy[:, 0], dummy[:, 1] = VOCAB_SIZE - 2, VOCAB_SIZE - 1  # SOT, EOT
    export_module(TextEncoder(model), dummy, TEXT_INPUT, (TEXT_OUTPUT,), path, opset, what="text graph")


def write_text_tower(
    model: nn.Module, bundle_dir: Path, opset: int, check: TextCheck, templates: list[str]
) -> tuple[dict[str, Any] | None, str | None]:
    """Export text.onnx + vocabulary into ``bundle_dir``; return (the manifest's ``text`` section, None).

    The ONNX Runtime embeddings of the check prompts are compared with the unfolded PyTorch ones, and the
    torch-free tokenizer's ids with open_clip's; both results go in the section. Past TEXT_TOLERANCE the
    files are removed and (None, why) returned: the bundle ships without a text tower rather than a wrong one.
    """
    from open_clip.tokenizer import default_bpe

    context_length = int(model.context_length)
    export_text_onnx(model, context_length, bundle_dir / TEXT_FILE, opset)
    shutil.copyfile(default_bpe(), bundle_dir / VOCAB_FILE)
    ours = ClipTokenizer(_default_merges(default_bpe()), context_length)  # the file copied above, read once
    if not np.array_equal(ours(check.prompts), check.input_ids):
        raise RingfoldError("internal: the torch-free tokenizer differs from open_clip's on the class prompts")
    got = TextModel(bundle_dir / TEXT_FILE, context_length).embed(check.input_ids)
    max_abs = float(np.abs(got - check.embedding).max())
    if not max_abs <= TEXT_TOLERANCE:
        (bundle_dir / TEXT_FILE).unlink()
        (bundle_dir / VOCAB_FILE).unlink()
        return None, f"text.onnx (ONNX Runtime) differs from the PyTorch text tower by {max_abs:.3g} > {TEXT_TOLERANCE}"
    return {
        "file": TEXT_FILE,
        "vocabulary": VOCAB_FILE,
        "tokenizer": "open_clip SimpleTokenizer (clean=lower), reimplemented torch-free",
        "context_length": context_length,
        "embed_dim": int(got.shape[1]),
        "input": TEXT_INPUT,
        "output": TEXT_OUTPUT,
        "normalised": True,
        "logit_scale": float(model.logit_scale.detach().exp()),
        "templates": list(templates),
        "opset": opset,
        "check": {
            "prompts": int(len(check.input_ids)),
            "onnx_vs_torch_max_abs": max_abs,
            "tokenizer_equal": True,
        },
    }, None


def report_lines(manifest: dict[str, Any]) -> str:
    """The export report's paragraph on the text tower (or why there is none)."""
    text = manifest.get("text")
    if text is None:
        return f"\n**No text tower** in this bundle: {manifest['export'].get('text_skipped', '?')}.\n"
    return (
        f"\n**Text tower** `{text['file']}` (adapters folded; context {text['context_length']}, "
        f"embedding {text['embed_dim']}, L2-normalised) + `{text['vocabulary']}` for `classify --classes` and "
        f"`relabel`: ONNX Runtime vs the unfolded PyTorch text tower on {text['check']['prompts']} class prompts, "
        f"max |Δ| = {text['check']['onnx_vs_torch_max_abs']:.3g}; torch-free tokenizer ids equal open_clip's.\n"
    )
