"""Attention with separate Q, K and V projections, swapped in for the ONNX export only.

open_clip keeps the attention's input projection packed: ``nn.MultiheadAttention`` (open_clip 3.x) and
open_clip's own ``Attention`` (its 4.x blocks, and 3.x's custom blocks) hold one ``in_proj_weight`` of
shape (3·C, C). Exported as is, that is one MatMul followed by a Split — a graph ONNX Runtime's
transformer optimizer (``FusionAttentionClip``) cannot fuse, because it looks for three MatMul+Add
projections of the same LayerNormalization output. :class:`SplitAttention` holds the same weights, sliced
into three ``nn.Linear`` (the fold stays exact: nothing is recomputed), and computes attention in the
layout that optimizer matches (the HF CLIP eager form):

    q = (x·Wqᵀ + bq) · d^-½ → (N·h, L, d);  k, v likewise without the scale
    out = softmax(q·kᵀ [+ mask]) · v → (N, L, C) → out_proj

The 1/√d scale stays an explicit Mul on Q after its bias (not folded into Wq): ONNX Runtime keys its
pattern on that Mul, and Q pre-scaled before Q·Kᵀ is also the form TensorRT's own MHA fusion accepts.
The swap is undone after the export, so the PyTorch model the rest of the export uses is untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class SplitAttention(nn.Module):
    """Self-attention over batch-first (N, L, C) input with q/k/v as three Linear layers (export only)."""

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        out_proj: nn.Linear,
        num_heads: int,
        batch_first: bool = True,
        returns_tuple: bool = True,
    ) -> None:
        super().__init__()
        dim = weight.shape[1]
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.scale = self.head_dim**-0.5
        self.batch_first, self.returns_tuple = batch_first, returns_tuple
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(dim, dim, bias=bias is not None) for _ in range(3))
        with torch.no_grad():
            for i, proj in enumerate((self.q_proj, self.k_proj, self.v_proj)):
                proj.weight.copy_(weight[i * dim : (i + 1) * dim])
                if bias is not None:
                    proj.bias.copy_(bias[i * dim : (i + 1) * dim])
        self.out_proj = out_proj

    def _heads(self, t: torch.Tensor, n: int, length: int) -> torch.Tensor:
        """(N, L, C) → (N·h, L, d), as view → transpose → reshape (the layout the fusion matches)."""
        t = t.reshape(n, length, self.num_heads, self.head_dim).transpose(1, 2)
        return t.reshape(n * self.num_heads, length, self.head_dim)

    def _mask(self, mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """An additive float mask that broadcasts over (N·h, L, L); a boolean one becomes 0 / -inf."""
        if mask.dtype == torch.bool:
            mask = torch.zeros_like(mask, dtype=like.dtype).masked_fill(mask, float("-inf"))
        if mask.dim() == 4:  # (N, h, L, L)
            mask = mask.reshape(-1, mask.shape[-2], mask.shape[-1])
        return mask.to(like.dtype)

    def forward(self, query: torch.Tensor, key=None, value=None, need_weights=False, attn_mask=None, **_):
        x = query if self.batch_first else query.transpose(0, 1)
        n, length, dim = x.shape
        q = self._heads(self.q_proj(x) * self.scale, n, length)
        k = self._heads(self.k_proj(x), n, length)
        v = self._heads(self.v_proj(x), n, length)
        scores = torch.bmm(q, k.transpose(1, 2))
        if attn_mask is not None:
            scores = scores + self._mask(attn_mask, scores)
        out = torch.bmm(scores.softmax(dim=-1), v)
        out = out.reshape(n, self.num_heads, length, self.head_dim).transpose(1, 2).reshape(n, length, dim)
        out = self.out_proj(out)
        out = out if self.batch_first else out.transpose(0, 1)
        return (out, None) if self.returns_tuple else out


def split_of(module: nn.Module) -> SplitAttention | None:
    """The export-time equivalent of ``module``, or None when it is not a plain packed self-attention."""
    if isinstance(module, nn.MultiheadAttention):
        plain = (
            module._qkv_same_embed_dim
            and module.bias_k is None
            and module.bias_v is None
            and not module.add_zero_attn
            and module.in_proj_weight is not None
        )
        if not plain:
            return None
        return SplitAttention(
            module.in_proj_weight.detach(),
            None if module.in_proj_bias is None else module.in_proj_bias.detach(),
            module.out_proj,
            module.num_heads,
            batch_first=module.batch_first,
        )
    return _open_clip_split(module)


def _open_clip_split(module: nn.Module) -> SplitAttention | None:
    """open_clip's own ``Attention`` (packed ``in_proj_weight``, SDPA): only its plain form (no qk-norm,
    scaled cosine, head scale or inner norm), which is exactly softmax(q·kᵀ/√d)·v."""
    if type(module).__name__ != "Attention" or not type(module).__module__.startswith("open_clip"):
        return None
    weight = getattr(module, "in_proj_weight", None)
    out_proj = getattr(module, "out_proj", None)
    extras = ("ln_q", "ln_k", "ln_inner")
    plain = (
        isinstance(weight, torch.Tensor)
        and isinstance(out_proj, nn.Linear)
        and all(isinstance(getattr(module, name, nn.Identity()), nn.Identity) for name in extras)
        and getattr(module, "logit_scale", None) is None
        and getattr(module, "head_scale", None) is None
        and isinstance(getattr(module, "num_heads", None), int)
    )
    if not plain or getattr(module, "scale", None) not in (None, (weight.shape[1] // module.num_heads) ** -0.5):
        return None  # a custom scale is not the 1/sqrt(d) SplitAttention computes
    bias = getattr(module, "in_proj_bias", None)
    return SplitAttention(
        weight.detach(), None if bias is None else bias.detach(), out_proj, module.num_heads, returns_tuple=False
    )


@contextlib.contextmanager
def split_attention(model: nn.Module) -> Iterator[int]:
    """Within the block, every packed self-attention in ``model`` is a :class:`SplitAttention`; yields how many
    were swapped. The original modules are put back on exit, even when the export fails."""
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    try:
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                split = split_of(child)
                if split is not None:
                    setattr(parent, name, split.train(child.training))
                    swapped.append((parent, name, child))
        yield len(swapped)
    finally:
        for parent, name, child in reversed(swapped):
            setattr(parent, name, child)
