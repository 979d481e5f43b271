"""The deployed graph: image → (logits, embedding), with the class text embeddings baked in (DESIGN §5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ImageClassifier(nn.Module):
    """Image tower + L2 normalisation + one bias-free Linear holding ``logit_scale · class_embeddings``.

    No text tower on the device: the class embeddings are computed once, at
    export, with the adapted text tower.
    """

    def __init__(self, visual: nn.Module, class_emb: torch.Tensor, logit_scale: float) -> None:
        super().__init__()
        self.visual = visual
        num_classes, dim = class_emb.shape
        self.head = nn.Linear(dim, num_classes, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(class_emb.to(torch.float64).mul(logit_scale).to(self.head.weight.dtype))
        self.head.requires_grad_(False)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = F.normalize(self.visual(image), dim=-1)
        return self.head(embedding), embedding


@torch.no_grad()
def classifier_outputs(classifier: nn.Module, pixels: torch.Tensor, batch: int = 16):
    """(logits, embedding) as float32 numpy arrays, in batches: the PyTorch side of every parity check."""
    import numpy as np

    logits, embs = [], []
    for start in range(0, len(pixels), batch):
        lg, em = classifier(pixels[start : start + batch])
        logits.append(lg.float().numpy())
        embs.append(em.float().numpy())
    return np.concatenate(logits), np.concatenate(embs)


def build_classifier(model: nn.Module, class_emb: torch.Tensor) -> ImageClassifier:
    """Wrap an open_clip model's image tower (adapted, folded or base) with the baked head."""
    scale = float(model.logit_scale.detach().exp())
    return ImageClassifier(model.visual, class_emb.detach(), scale).eval()
