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
) -> torch.Tensor:
    """(num_classes, embed_dim), unit rows."""
    texts = [template.format(name) for name in classnames for template in templates]
    tokens = tokenizer(texts).to(device)
    emb = model.encode_text(tokens, normalize=True)
    emb = emb.reshape(len(classnames), len(templates), -1).mean(dim=1)
    return F.normalize(emb, dim=-1)


def clip_logits(model: torch.nn.Module, images: torch.Tensor, class_emb: torch.Tensor) -> torch.Tensor:
    """CLIP zero-shot logits: logit_scale · ⟨normalised image embedding, class embedding⟩."""
    img = model.encode_image(images, normalize=True)
    return model.logit_scale.exp() * img @ class_emb.t()
