"""MMA-style baseline (Multi-Modal Adapter, Yang et al., CVPR 2024), for comparing parameters and accuracy.

Per adapted layer and tower: a down-projection (d → r, bias), ReLU, a projection
r → r that is *shared between the two towers* for that layer (bias), and an
up-projection (r → d, bias), scaled by a small factor (MMA's α = 1e-3):

    delta_l(y) = up_l( shared_l( relu( down_l(y) ) ) )

Defaults follow MMA for ViT-B/16: blocks 4–11 (0-based; MMA's "layers 5–11"
counted from 1 with its extra index), r = 32, scale 1e-3, both towers —
674,560 trainable parameters (0.675M). MMA adds its branch to the block
output; ringfold puts it on the attention input (the ``ln_1`` output, site
"attn"), to reuse the adapter-site machinery. The up-projections start at
zero, as in MMA, so the adapted model equals the frozen one at step 0.

The branch is non-linear, so it does not fold: the exporter keeps it in the
graph and the export report says so (extra MatMuls and a ReLU per layer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ringfold.errors import RingfoldError
from ringfold.trainer.adapters.base import AdapterConfig, SiteAdapter
from ringfold.trainer.adapters.registry import Method, register


@dataclass
class MmaConfig(AdapterConfig):
    method: ClassVar[str] = "mma"
    layers: str = "4-11"
    sites: str = "attn"
    scale: float = 1e-3
    rank: int = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rank < 1:
            raise RingfoldError(f"--rank {self.rank} invalid; MMA needs a bottleneck of at least 1")


class MmaAdapter(SiteAdapter):
    foldable: ClassVar[bool] = False

    def __init__(
        self, config: MmaConfig, *, dim: int, num_layers: int, tower: str, site: str, shared: nn.ModuleDict
    ) -> None:
        super().__init__(dim, num_layers)
        r = config.rank
        self.down = nn.ModuleList(nn.Linear(dim, r) for _ in range(num_layers))
        self.up = nn.ModuleList(nn.Linear(r, dim) for _ in range(num_layers))
        for up in self.up:
            nn.init.zeros_(up.weight)
            nn.init.zeros_(up.bias)
        key = f"mma_{site}"
        if key not in shared:
            shared[key] = nn.ModuleList(nn.Linear(r, r) for _ in range(num_layers))
        middle = shared[key]
        if len(middle) != num_layers or middle[0].in_features != r:
            raise RingfoldError(
                f"MMA shares its middle projection across towers: both towers need the same number of adapted "
                f"layers and rank (got {num_layers} vs {len(middle)}); use the same --layers count for both"
            )
        self.__dict__["middle"] = middle  # registered once, under AdapterSet.shared

    def delta(self, y: torch.Tensor, layer: int) -> torch.Tensor:
        hidden = F.relu(self.down[layer](y))
        return self.up[layer](self.middle[layer](hidden))

    def extra_macs(self, tokens: int) -> int:
        r = self.down[0].out_features
        return tokens * (self.dim * r + r * r + r * self.dim)

    def dense(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise RingfoldError("MMA is non-linear (ReLU) and has no dense A_l; it stays in the exported graph")


register(Method("mma", MmaConfig, MmaAdapter, "MMA-style baseline: per-layer down/ReLU/shared/up (not foldable)"))
