"""Fold adapters into the frozen linear weights (DESIGN §2).

For a site adapter ``y' = y + s(y·A + b)`` read by a linear ``W, c``:

    W' = W (I + sA)ᵀ,   c' = c + s·W b

computed in float64 and cast back once, so the folded model is a plain
open_clip model with the base graph, FLOPs and latency.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ringfold.errors import RingfoldError
from ringfold.trainer.adapters.base import AdaptedNorm, adapted_blocks, adapted_norms, site_linear


@dataclass
class FoldReport:
    folded_sites: int = 0
    kept_sites: int = 0  # non-foldable adapters left in place (both towers)
    kept_visual_sites: int = 0  # of those, the ones in the exported (image) graph
    kept_methods: list[str] = field(default_factory=list)
    extra_macs_per_image: int = 0  # multiply-accumulates the kept branches add to the image tower
    max_abs_delta_weight: float = 0.0

    @property
    def fully_folded(self) -> bool:
        return self.kept_sites == 0


def folded_linear(
    weight: torch.Tensor, bias: torch.Tensor | None, a: torch.Tensor, b: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The merged (W', c') in the dtype of ``weight``; refuses non-finite results."""
    w64 = weight.detach().to(torch.float64)
    a64 = scale * a.detach().to(device=w64.device, dtype=torch.float64)
    b64 = scale * b.detach().to(device=w64.device, dtype=torch.float64)
    eye = torch.eye(a64.shape[0], dtype=torch.float64, device=w64.device)
    new_w = w64 @ (eye + a64).t()
    if bias is None:
        if torch.count_nonzero(b64):
            raise RingfoldError("adapter has a bias but the frozen linear has none; this site cannot be folded")
        new_b = None
    else:
        new_b = bias.detach().to(torch.float64) + w64 @ b64
    if not torch.isfinite(new_w).all() or (new_b is not None and not torch.isfinite(new_b).all()):
        raise RingfoldError("folding produced non-finite weights: the adapter checkpoint holds NaN/Inf or overflows")
    return new_w.to(weight.dtype), None if new_b is None else new_b.to(bias.dtype)


@torch.no_grad()
def fold_adapters(model: nn.Module) -> FoldReport:
    """Fold every foldable adapter in place and unwrap its LayerNorm; leave the rest in the graph.

    Block-output branches (MMA, DESIGN §6) act after the block's MLP, not at a linear's input: they never
    fold and are always counted as kept."""
    report = FoldReport()
    if hasattr(model, "adapters"):
        model.adapters.requires_grad_(False)  # inference from here on; kept branches are traced as constants
    tokens = _visual_tokens(model)
    for tower, site, block, wrapper in adapted_norms(model) + adapted_blocks(model):
        adapter = wrapper.adapter
        attr = "ln_1" if site == "attn" else "ln_2"
        if not adapter.foldable or not isinstance(wrapper, AdaptedNorm):
            adapter.prepare_export()
            report.kept_sites += 1
            if tower == "visual":
                report.kept_visual_sites += 1
                report.extra_macs_per_image += adapter.extra_macs(tokens)
            name = type(adapter).__name__
            if name not in report.kept_methods:
                report.kept_methods.append(name)
            continue
        a, b = adapter.dense(wrapper.layer)
        weight, bias = site_linear(block, site)
        new_w, new_b = folded_linear(weight, bias, a, b, wrapper.scale)
        report.max_abs_delta_weight = max(report.max_abs_delta_weight, float((new_w - weight).abs().max()))
        weight.copy_(new_w)
        if bias is not None:
            bias.copy_(new_b)
        setattr(block, attr, wrapper.norm)
        report.folded_sites += 1
    if report.fully_folded and hasattr(model, "adapters"):
        model.adapters.remove_hooks()
        del model.adapters
    return report


def _visual_tokens(model: nn.Module) -> int:
    grid = getattr(model.visual, "grid_size", (0, 0))
    return int(grid[0]) * int(grid[1]) + 1  # patches + class token


def unfold_is_clean(model: nn.Module) -> bool:
    """True when no adapter wrapper (LayerNorm wrapper or block-output branch) is left anywhere in ``model``."""
    return not any(isinstance(m, AdaptedNorm) for m in model.modules()) and not adapted_blocks(model)
