"""ARC: Adapter Re-Composing (Dong et al., NeurIPS 2023), DESIGN §3.

One down-projection ``D`` (d × r) per tower and site kind, shared by all
adapted layers, whose transpose is the up-projection; each layer only owns a
re-scaling vector ``λ_l`` and a bias. ``A_l = D diag(λ_l) Dᵀ`` is symmetric,
so it folds into the following linear layer exactly.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ..config import ArcConfig
from .base import SiteAdapter
from .registry import Method, register


class ArcAdapter(SiteAdapter):
    foldable: ClassVar[bool] = True
    shared_parameters: ClassVar[tuple[str, ...]] = ("down",)

    def __init__(
        self, config: ArcConfig, *, dim: int, num_layers: int, tower: str, site: str, shared: nn.ModuleDict
    ) -> None:
        super().__init__(dim, num_layers)
        r = config.rank
        self.down = nn.Parameter(torch.empty(dim, r))
        nn.init.xavier_uniform_(self.down)
        self.rescale = nn.Parameter(torch.zeros(num_layers, r))
        if site == "mlp" and config.mlp_lambda_init == "xavier":
            nn.init.xavier_uniform_(self.rescale)
        self.bias = nn.Parameter(torch.zeros(num_layers, dim))
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()

    def delta(self, y: torch.Tensor, layer: int) -> torch.Tensor:
        hidden = self.dropout((y @ self.down.to(y.dtype)) * self.rescale[layer].to(y.dtype))
        return hidden @ self.down.to(y.dtype).t() + self.bias[layer].to(y.dtype)

    def dense(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.down
        return (d * self.rescale[layer]) @ d.t(), self.bias[layer]


register(Method("arc", ArcConfig, ArcAdapter, "shared symmetric projection + per-layer re-scaling (foldable)"))
