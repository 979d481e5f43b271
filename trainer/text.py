"""Class embeddings from the (adapted) text tower.

Same recipe as open_clip's ``build_zero_shot_classifier`` (templates ×
classes, normalise, average, renormalise) but differentiable, because text
adapters are trained through it; tests check it against open_clip's.

The text tower runs only as far as the longest prompt's EOT token, not over
the whole 77-token context: CLIP's text attention is causal and reads out the
EOT position, so the padding after it cannot change the embedding. Class
prompts are short (about 10 tokens), so this cuts the text tower's work per
training step by roughly 7×, for every method.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def prompt_length(model: torch.nn.Module, tokens: torch.Tensor) -> int | None:
    """How many leading tokens decide every prompt's embedding, or None when the whole context must run.

    Only for open_clip's own CLIP text tower read out at the EOT token (``text_pool_type == "argmax"``)
    with a causal mask: there, no position up to the longest prompt's EOT attends to anything after it.
    Any other tower (HF text encoders, other poolings, no mask) runs over the full context.
    """
    if getattr(model, "text_pool_type", None) != "argmax" or not hasattr(model, "token_embedding"):
        return None
    mask = getattr(model, "attn_mask", None)
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2 or tokens.dim() != 2 or tokens.shape[0] == 0:
        return None
    length = int(tokens.argmax(dim=-1).max()) + 1
    if length >= tokens.shape[1] or not bool(torch.isneginf(mask[:length, length:]).all()):
        return None
    return length


def text_features(
    model: torch.nn.Module, tokens: torch.Tensor, eot: torch.Tensor, length: int | None = None
) -> torch.Tensor:
    """open_clip's ``CLIP.encode_text(normalize=True)`` step by step, read out at the positions ``eot``.

    ``length``: ``tokens`` holds only the first ``length`` positions, and the positional embedding and
    causal mask are cut to match; None runs them whole (the exporter's fixed-context ``text.onnx``).
    """
    positions = model.positional_embedding if length is None else model.positional_embedding[:length]
    mask = model.attn_mask if length is None else model.attn_mask[:length, :length]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype) + positions.to(cast_dtype)
    x = model.ln_final(model.transformer(x, attn_mask=mask))
    x = x[torch.arange(x.shape[0], device=x.device), eot]
    if isinstance(model.text_projection, torch.nn.Linear):
        x = model.text_projection(x)
    elif model.text_projection is not None:
        x = x @ model.text_projection
    return F.normalize(x, dim=-1)


def encode_text(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Unit text embeddings, equal to ``model.encode_text(tokens, normalize=True)`` (tests hold it to 1e-6),
    computed over the first :func:`prompt_length` tokens only."""
    length = prompt_length(model, tokens)
    if length is None:
        return model.encode_text(tokens, normalize=True)
    tokens = tokens[:, :length]
    return text_features(model, tokens, tokens.argmax(dim=-1), length)


def class_embeddings(
    model: torch.nn.Module,
    tokenizer,
    classnames: Sequence[str],
    templates: Sequence[str],
    device: str | torch.device = "cpu",
    copies: int = 1,
) -> torch.Tensor:
    """(num_classes, embed_dim), unit rows; (copies, num_classes, embed_dim) when ``copies`` > 1.

    ``copies`` > 1 encodes the prompts that many times in one batch, stacked (AdaRing's paired pass
    gives each copy its own adapter mode); the copies differ only through what the adapters do to them.
    """
    texts = [template.format(name) for name in classnames for template in templates]
    tokens = tokenizer(texts).to(device)
    if copies > 1:
        tokens = tokens.repeat(copies, 1)
    emb = encode_text(model, tokens)
    emb = emb.reshape(copies, len(classnames), len(templates), -1).mean(dim=2)
    emb = F.normalize(emb, dim=-1)
    return emb if copies > 1 else emb[0]


def clip_logits(model: torch.nn.Module, images: torch.Tensor, class_emb: torch.Tensor) -> torch.Tensor:
    """CLIP zero-shot logits: logit_scale · ⟨normalised image embedding, class embedding⟩."""
    img = model.encode_image(images, normalize=True)
    return model.logit_scale.exp() * img @ class_emb.t()
