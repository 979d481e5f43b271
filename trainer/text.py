"""Class embeddings from the (adapted) text tower.

Same recipe as open_clip's ``build_zero_shot_classifier`` (templates ×
classes, normalise, average, renormalise) but differentiable, because text
adapters are trained through it; tests check it against open_clip's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


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
    emb = model.encode_text(tokens, normalize=True)
    emb = emb.reshape(copies, len(classnames), len(templates), -1).mean(dim=2)
    emb = F.normalize(emb, dim=-1)
    return emb if copies > 1 else emb[0]


def clip_logits(model: torch.nn.Module, images: torch.Tensor, class_emb: torch.Tensor) -> torch.Tensor:
    """CLIP zero-shot logits: logit_scale · ⟨normalised image embedding, class embedding⟩."""
    img = model.encode_image(images, normalize=True)
    return model.logit_scale.exp() * img @ class_emb.t()
