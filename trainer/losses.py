"""Training objective: CE, plus AdaRing's generalization-aware terms (DESIGN §4).

    L = CE(logits_full) + λ_c · CE(logits_coarse_only) + λ_g · (1 − cos(f_adapted, f_frozen))

``λ_c`` and ``λ_g`` come from the adapter config (``coarse_loss_weight``,
``consistency_loss_weight``); methods without them train with CE only. The
consistency term averages over image features and, when the text tower is
adapted, class embeddings; the frozen ones come from the same model with its
adapters switched off.

When a step makes more than one pass, the blocks in front of the first
adapted one are computed once and replayed (``frozen_prefix``): exact, and a
third of each extra pass with the default ``--layers last:8`` on 12 blocks.

The full and the coarse-only pass run as one *paired* pass: the batch (and,
when the text tower is adapted, the class prompts) stacked twice, the
adapters in mode "paired" (first copy full, second coarse only). Every
frozen weight then runs once on 2n rows instead of twice on n: the same
arithmetic per row, half the kernel launches and autograd nodes, and larger
matmuls; the frozen prefix runs on one copy.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .adapters import AdapterSet
from .frozen_prefix import shared_prefixes


@dataclass
class LossWeights:
    """λ_c and λ_g, and how often the two auxiliary terms are computed (``aux_every``, K)."""

    coarse: float = 0.0
    consistency: float = 0.0
    aux_every: int = 1

    @classmethod
    def from_config(cls, config) -> LossWeights:
        return cls(
            coarse=float(getattr(config, "coarse_loss_weight", 0.0)),
            consistency=float(getattr(config, "consistency_loss_weight", 0.0)),
            aux_every=int(getattr(config, "aux_every", 1)),
        )

    def at_step(self, step: int) -> LossWeights:
        """The weights step ``step`` trains with.

        With K = ``aux_every`` > 1 the auxiliary terms run on every K-th step only (0, K, 2K, …), weighted
        K·λ there and 0 elsewhere: over K steps their gradient adds up to what K exact steps would give
        with the adapters held still, so the objective is kept on average while K−1 of K steps skip the
        coarse-only and the frozen pass. K = 1 is the exact objective, every step.
        """
        k = self.aux_every
        if k <= 1:
            return self
        factor = float(k) if step % k == 0 else 0.0
        return LossWeights(coarse=self.coarse * factor, consistency=self.consistency * factor)


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
    class_emb_fn: Callable[..., torch.Tensor],
    weights: LossWeights,
    frozen_class_emb: torch.Tensor | None = None,
    text_adapted: bool = True,
    frozen_image: torch.Tensor | None = None,
    paired: bool = True,
) -> LossOutput:
    """One step's loss; ``class_emb_fn(copies=1)`` recomputes class embeddings with whatever adapters are active.

    ``class_emb_fn(copies=2)`` returns (2, classes, dim): the prompts encoded twice in one batch (see
    ``text.class_embeddings``); the paired pass needs it when the text tower is adapted.
    ``frozen_image``: the frozen model's normalised features of ``images`` when the caller has them
    (the trainer caches them when the input is not augmented); computed here otherwise.
    ``paired=False`` runs the full and the coarse-only pass one after the other (the reference the paired
    pass is tested against).
    """
    passes = 1 + (weights.coarse > 0) + (weights.consistency > 0 and frozen_image is None)
    with shared_prefixes(adapters.prefixes) if passes > 1 else nullcontext():
        return _loss(
            model,
            adapters,
            images,
            labels,
            class_emb_fn,
            weights,
            frozen_class_emb,
            text_adapted,
            frozen_image,
            paired,
        )


def frozen_image_features(model: torch.nn.Module, adapters: AdapterSet, images: torch.Tensor) -> torch.Tensor:
    """The frozen model's normalised image features (adapters off, no autograd), as an ordinary tensor."""
    # inference mode: no autograd bookkeeping at all for the frozen pass; the clone turns the inference
    # tensor into an ordinary constant the consistency term may save for its backward
    with torch.inference_mode():
        adapters.set_enabled(False)
        try:
            frozen = model.encode_image(images, normalize=True)
        finally:
            adapters.set_enabled(True)
    return frozen.clone()


def _graded_passes(model, adapters, images, class_emb_fn, weights, frozen_class_emb, text_adapted, paired):
    """(image features, class embeddings) with every adapter, and the same with the coarse ring alone (or None)."""
    if weights.coarse <= 0:
        return model.encode_image(images, normalize=True), class_emb_fn() if text_adapted else frozen_class_emb, None
    if paired:
        adapters.set_mode("paired")
        try:
            both_emb = class_emb_fn(copies=2) if text_adapted else (frozen_class_emb, frozen_class_emb)
            full_feat, coarse_feat = model.encode_image(torch.cat((images, images)), normalize=True).chunk(2)
        finally:
            adapters.set_mode("full")
        return full_feat, both_emb[0], (coarse_feat, both_emb[1])
    image_feat = model.encode_image(images, normalize=True)
    class_emb = class_emb_fn() if text_adapted else frozen_class_emb
    adapters.set_mode("coarse")
    try:
        coarse_emb = class_emb_fn() if text_adapted else frozen_class_emb
        coarse_feat = model.encode_image(images, normalize=True)
    finally:
        adapters.set_mode("full")
    return image_feat, class_emb, (coarse_feat, coarse_emb)


def _loss(model, adapters, images, labels, class_emb_fn, weights, frozen_class_emb, text_adapted, frozen_image, paired):
    scale = model.logit_scale.exp()
    image_feat, class_emb, coarse = _graded_passes(
        model, adapters, images, class_emb_fn, weights, frozen_class_emb, text_adapted, paired
    )
    logits = scale * image_feat @ class_emb.t()
    ce = F.cross_entropy(logits.float(), labels)
    total = ce
    terms = {"ce": float(ce.detach())}
    if coarse is not None:
        coarse_feat, coarse_emb = coarse
        coarse_ce = F.cross_entropy((scale * coarse_feat @ coarse_emb.t()).float(), labels)
        total = total + weights.coarse * coarse_ce
        terms["coarse_ce"] = float(coarse_ce.detach())
    if weights.consistency > 0:
        if frozen_image is None:
            frozen_image = frozen_image_features(model, adapters, images)
        consistency = _cos_distance(image_feat, frozen_image)
        if text_adapted and frozen_class_emb is not None:
            consistency = 0.5 * (consistency + _cos_distance(class_emb, frozen_class_emb))
        total = total + weights.consistency * consistency
        terms["consistency"] = float(consistency.detach())
    terms["total"] = float(total.detach())
    return LossOutput(total=total, logits=logits, terms=terms)
