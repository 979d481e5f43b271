"""MMA-style baseline (Multi-Modal Adapter, Yang et al., CVPR 2024), to compare parameters and accuracy.

Per adapted layer l and tower: a down-projection (d → r, with bias), a ReLU,
a projection r → r *shared between the two towers* for that layer (with bias,
followed by a ReLU as in the authors' code), and an up-projection (r → d, with
bias); the result is scaled by a small factor (MMA's α, here the adapter
``scale``, 1e-3):

    delta_l(y) = up_l( relu( shared_l( relu( down_l(y) ) ) ) )      y = ln_1(x)

Where the branch sits: as in the authors' code (ZjjConan/Multi-Modal-Adapter,
``clip/model.py``, ``ModifiedResidualAttentionBlock.forward``), the branch reads
the block's ``ln_1`` output and its result is added to the *block output*,
after the MLP:

    x' = x + attn(ln_1 x)
    out = x' + mlp(ln_2 x') + s·delta_l(ln_1 x)

It is a forward hook on the open_clip block (``BlockBranch``, DESIGN §6), so
the frozen block is untouched. (Until issue 12 ringfold added the branch to the
attention input, ``attn(y + s·delta(y))``, which differs per block by about the
branch's whole effect.) The site kind is therefore always "attn" (= "reads
ln_1"); ``sites="mlp"`` / ``"both"`` are refused.

Defaults follow MMA for ViT-B/16: r = 32, scale 1e-3, both towers, layers
``last:2/3`` = blocks ⌊d/3⌋ … d−1 of a d-block tower, i.e. 4–11 (0-based) on 12
blocks — MMA's config says ``ADAPTER_START: 5, ADAPTER_END: 12`` over 1-based
block indices, 8 blocks — and 1–3 on the 4-block test model. Trainable
parameters on ViT-B/16:
8·[(768·32+32)+(32·768+768) + (512·32+32)+(32·512+512) + (32·32+32)] =
674,560, MMA's "0.675M".

Differences from the authors' released code, all configurable:

- ``up_init="zero"`` (default): the up-projections start at zero so the
  adapted model equals the frozen one at step 0, like every ringfold method;
  the gradient still reaches everything (step 1 moves ``up``, after which
  ``down`` and the shared projection receive gradients). MMA's code instead
  initialises *every* linear (up included) Kaiming-normal (fan_out, ReLU)
  with zero biases: ``up_init="kaiming"``. ``down`` and the shared
  projections use that Kaiming init in both cases.
- ``shared_relu=True`` (default) keeps MMA's ReLU after the shared
  projection (its shared adapter is ``Sequential(Linear(r, r), ReLU)``);
  ``False`` gives the single-ReLU down → ReLU → shared → up variant.
- ``grad_compensation=True`` (default) reproduces MMA's gradient-scale
  layers: the branch's parameters see gradients as if the scale were 1 (the
  forward output is still ×scale), and the gradient the branch sends back
  into the residual stream is ×scale. Without it a 1e-3 scale shrinks the
  branch's gradients 1000× (fatal with SGD, and near AdamW's ε). Forward
  values are identical either way; the exported graph does not contain it.

The branch is non-linear (ReLU) and lands after the MLP rather than at a
linear's input, so it does not fold: ``dense()`` raises, the exporter keeps
the visual-tower branches in the ONNX graph (a second ``ln_1`` evaluation and
extra MatMul, Add and Relu ops per adapted block) and its report says "NOT
fully folded".
``extra_macs`` gives the exporter the extra work per image for the manifest.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ringfold.errors import FieldError, RingfoldError

from ..config import MmaConfig
from .base import SiteAdapter
from .registry import Method, register


class _GradScale(torch.autograd.Function):
    """Identity forward, gradient × ``factor`` backward (MMA's ``gradient_scale_layer``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.factor, None


def _kaiming(linear: nn.Linear) -> nn.Linear:
    nn.init.kaiming_normal_(linear.weight, mode="fan_out", nonlinearity="relu")
    nn.init.zeros_(linear.bias)
    return linear


class MmaAdapter(SiteAdapter):
    """Per-layer down/up projections of one tower × site; the layer's shared r × r projection lives in
    ``AdapterSet.shared[f"mma_{site}"]`` (one ``nn.Linear(r, r)`` per adapted layer), created by the first
    tower and reused by the second, so it is one object, trained by both towers and saved once."""

    foldable: ClassVar[bool] = False
    placement: ClassVar[str] = "block"  # block(x) + s·delta(ln_1 x), as in MMA's code
    shared_parameters: ClassVar[tuple[str, ...]] = ()  # shared across towers, not across layers: see ``shared``

    def __init__(
        self, config: MmaConfig, *, dim: int, num_layers: int, tower: str, site: str, shared: nn.ModuleDict
    ) -> None:
        super().__init__(dim, num_layers)
        r = config.rank
        self.rank = r
        self.shared_relu = config.shared_relu
        self.down = nn.ModuleList(_kaiming(nn.Linear(dim, r)) for _ in range(num_layers))
        self.up = nn.ModuleList(_kaiming(nn.Linear(r, dim)) for _ in range(num_layers))
        if config.up_init == "zero":
            for up in self.up:
                nn.init.zeros_(up.weight)
        self.grad_scale = config.scale if config.grad_compensation else None
        key = f"mma_{site}"
        if key not in shared:
            shared[key] = nn.ModuleList(_kaiming(nn.Linear(r, r)) for _ in range(num_layers))
        middle = shared[key]
        have = (len(middle), middle[0].in_features) if isinstance(middle, nn.ModuleList) and len(middle) else None
        if have != (num_layers, r):
            found = f"{have[0]} layers at rank {have[1]}" if have else "an unexpected layout"
            raise FieldError(
                "layers",
                f"must select the same number of blocks in both towers (e.g. last:8), or adapt one tower only: "
                f"MMA shares one r×r projection per adapted layer between the towers, but the {tower} tower has "
                f"{num_layers} adapted layers at rank {r} and the shared projection has {found}",
            )
        # held by reference, not registered here: AdapterSet.shared owns it (one copy in every state dict)
        self.__dict__["middle"] = middle

    def _branch(self, y: torch.Tensor, layer: int) -> torch.Tensor:
        def lin(m: nn.Linear, h: torch.Tensor) -> torch.Tensor:
            return F.linear(h, m.weight.to(h.dtype), m.bias.to(h.dtype))

        h = F.relu(lin(self.down[layer], y))
        h = lin(self.middle[layer], h)
        if self.shared_relu:
            h = F.relu(h)
        return lin(self.up[layer], h)

    def delta(self, y: torch.Tensor, layer: int) -> torch.Tensor:
        s = self.grad_scale
        if s is None or not torch.is_grad_enabled() or torch.jit.is_tracing():
            return self._branch(y, layer)
        # the branch hook multiplies by s: parameters see gradients as if s were 1; the residual stream sees s
        # (MMA's gradient_scale_layer(x, s) before ln_1 and (…, 1/s) after; ln_1's backward is linear, so
        # scaling its output's gradient instead of its input's is the same)
        return _GradScale.apply(self._branch(_GradScale.apply(y, s), layer), 1.0 / s)

    def dense(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise RingfoldError(
            "MMA is non-linear (ReLU between its projections): it has no dense A_l and cannot be folded; "
            "the exporter keeps it in the graph"
        )

    def prepare_export(self) -> None:
        # inference from here on; the cross-tower projection is held by reference, so freeze it explicitly
        self.requires_grad_(False)
        self.middle.requires_grad_(False)

    def extra_macs(self, tokens: int) -> int:
        """One layer's branch per image: tokens · (d·r + r·r + r·d) multiply-accumulates (matrix products only;
        bias adds, ReLUs, the scale and the residual add are O(d) per token). ViT-B/16 defaults, 197 tokens,
        8 blocks: 79,077,376 MACs ≈ 0.158 GFLOPs per image on top of the base image tower."""
        return tokens * (2 * self.dim * self.rank + self.rank * self.rank)


register(
    Method(
        "mma",
        MmaConfig,
        MmaAdapter,
        "MMA baseline: per-layer down/ReLU/up per tower, cross-tower shared middle projection (not foldable)",
    )
)
