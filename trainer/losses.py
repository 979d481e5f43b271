"""Training objective: CE, plus AdaRing's generalization-aware terms (DESIGN §4).

    L = CE(logits_full) + λ_c · CE(logits_coarse_only) + λ_g · (1 − cos(f_adapted, f_frozen))

``λ_c`` and ``λ_g`` come from the adapter config (``coarse_loss_weight``,
``consistency_loss_weight``); methods without them train with CE only. The
consistency term averages over image features and, when the text tower is
adapted, class embeddings; the frozen ones come from the same model with its
adapters switched off.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .adapters import AdapterSet


@dataclass
class LossWeights:
    coarse: float = 0.0
    consistency: float = 0.0

    @classmethod
    def from_config(cls, config) -> LossWeights:
        return cls(
            coarse=float(getattr(config, "coarse_loss_weight", 0.0)),
            consistency=float(getattr(config, "consistency_loss_weight", 0.0)),
        )


@dataclass
class LossOutput:
    total: torch.Tensor
    logits: torch.Tensor
    terms: dict[str, float] = field(default_factory=dict)


def _cos_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (1.0 - F.cosine_similarity(a.float(), b.float(), dim=-1)).mean()


def compute_loss(
    model: torch.nn.Module,
    adapters: AdapterSet,
    images: torch.Tensor,
    labels: torch.Tensor,
    class_emb_fn: Callable[[], torch.Tensor],
    weights: LossWeights,
    frozen_class_emb: torch.Tensor | None = None,
    text_adapted: bool = True,
) -> LossOutput:
    """One step's loss; ``class_emb_fn`` recomputes class embeddings with whatever adapters are active."""
    scale = model.logit_scale.exp()
    class_emb = class_emb_fn() if text_adapted else frozen_class_emb
    image_feat = model.encode_image(images, normalize=True)
    logits = scale * image_feat @ class_emb.t()
    ce = F.cross_entropy(logits.float(), labels)
    total = ce
    terms = {"ce": float(ce.detach())}
    if weights.coarse > 0:
        adapters.set_mode("coarse")
        try:
            coarse_emb = class_emb_fn() if text_adapted else frozen_class_emb
            coarse_logits = scale * model.encode_image(images, normalize=True) @ coarse_emb.t()
        finally:
            adapters.set_mode("full")
        coarse_ce = F.cross_entropy(coarse_logits.float(), labels)
        total = total + weights.coarse * coarse_ce
        terms["coarse_ce"] = float(coarse_ce.detach())
    if weights.consistency > 0:
        # inference mode: no autograd bookkeeping at all for the frozen pass; the clone turns the inference
        # tensor into an ordinary constant the consistency term may save for its backward
        with torch.inference_mode():
            adapters.set_enabled(False)
            try:
                frozen_image = model.encode_image(images, normalize=True)
            finally:
                adapters.set_enabled(True)
        frozen_image = frozen_image.clone()
        consistency = _cos_distance(image_feat, frozen_image)
        if text_adapted and frozen_class_emb is not None:
            consistency = 0.5 * (consistency + _cos_distance(class_emb, frozen_class_emb))
        total = total + weights.consistency * consistency
        terms["consistency"] = float(consistency.detach())
    terms["total"] = float(total.detach())
    return LossOutput(total=total, logits=logits, terms=terms)
