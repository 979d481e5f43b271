"""MMA's adapted block against an independent re-typing of the authors' forward (issue 12, DESIGN §6).

What was checked, in ZjjConan/Multi-Modal-Adapter at commit 274cb0bc (read, not copied):

- ``clip/model.py``, ``ModifiedResidualAttentionBlock.forward``: with an adapter for this block,
  ``y = gradient_scale_layer(x, scale); y = ln_1(y); y = seq_adapter.down(y); y = shared_adapter(y);
  y = seq_adapter.up(y) * scale; y = gradient_scale_layer(y, 1 / scale)``, then
  ``x = x + attention(ln_1(x))`` and ``x = x + mlp(ln_2(x)) + y``: the branch reads the block *input*
  through ``ln_1`` and is added to the block *output*, after the MLP.
- ``trainers/mmadapter.py``, ``_build_adapter``: ``down = Sequential(Linear(d, r), ReLU)``,
  ``up = Linear(r, d)``; the shared adapter (built with ``d_model = r``) is ``Sequential(Linear(r, r), ReLU)``,
  one per layer, handed to both towers (``return_text_adapter`` / ``return_visual_adapter``).
- ``clip/gsl.py``: ``GradientScaleLayer`` is identity forward, gradient × scale backward.
- ``configs/trainers/MultiModalAdapter/vit_b16_ep5.yaml``: ``ADAPTER_START: 5, ADAPTER_END: 12``
  (``Transformer`` numbers its blocks ``index + 1``: 0-based 4..11), ``ADAPTER_DIM: 32``,
  ``ADAPTER_SCALE: 0.001``.

The reference below is written from those lines with plain functional ops; ringfold's block (open_clip's
untouched block plus its forward hook) must match it to 1e-6, and must *not* match the placement ringfold
used before (branch added to the attention input).
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ringfold.trainer.adapters import inject
from ringfold.trainer.adapters.base import resolve_layers, tower_blocks
from ringfold.trainer.adapters.mma import MmaConfig
from ringfold.trainer.models import load_clip

from .conftest import TINY

TOL = 1e-6


class _ScaleGrad(torch.autograd.Function):
    """The authors' gradient_scale_layer, re-typed: identity forward, gradient × factor backward."""

    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


def _layer_norm(ln: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, ln.normalized_shape, ln.weight, ln.bias, ln.eps)


def _attention(block: nn.Module, h: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
    mha = block.attn
    return mha(h, h, h, need_weights=False, attn_mask=attn_mask)[0]


def _mlp(block: nn.Module, h: torch.Tensor) -> torch.Tensor:
    fc, act, proj = block.mlp.c_fc, block.mlp.gelu, block.mlp.c_proj
    return F.linear(act(F.linear(h, fc.weight, fc.bias)), proj.weight, proj.bias)


def authors_block(block, x, down, middle, up, scale, attn_mask=None, grad_compensation=True):
    """MMA's adapted block, step by step (see the module docstring); down/middle/up are nn.Linear."""
    assert isinstance(block.ls_1, nn.Identity) and isinstance(block.ls_2, nn.Identity)  # MMA's CLIP has no LayerScale
    y = _ScaleGrad.apply(x, scale) if grad_compensation else x
    y = _layer_norm(block.ln_1, y)
    y = F.relu(F.linear(y, down.weight, down.bias))  # seq_adapter.down = Linear(d, r) + ReLU
    y = F.relu(F.linear(y, middle.weight, middle.bias))  # shared_adapter = Linear(r, r) + ReLU
    y = F.linear(y, up.weight, up.bias) * scale  # seq_adapter.up = Linear(r, d), then × scale
    if grad_compensation:
        y = _ScaleGrad.apply(y, 1.0 / scale)
    x = x + _attention(block, _layer_norm(block.ln_1, x), attn_mask)
    return x + _mlp(block, _layer_norm(block.ln_2, x)) + y


def old_ringfold_block(block, x, down, middle, up, scale, attn_mask=None):
    """The placement ringfold used before issue 12: the branch added to the attention input."""
    h = _layer_norm(block.ln_1, x)
    branch = F.linear(
        F.relu(F.linear(F.relu(F.linear(h, down.weight, down.bias)), middle.weight, middle.bias)), up.weight, up.bias
    )
    x = x + _attention(block, h + scale * branch, attn_mask)
    return x + _mlp(block, _layer_norm(block.ln_2, x))


def _adapted(scale, seed=0):
    loaded = load_clip(TINY, random_init=True)
    aset = inject(loaded.model, MmaConfig(scale=scale))  # defaults: r = 32, blocks ⌊d/3⌋..d−1 = 1..3 of 4
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in aset.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return loaded.model, aset


def _mask(model, tower, n):
    return None if tower == "visual" else model.attn_mask[:n, :n]


def _weights(aset, tower, layer):
    adapter = aset.adapters[f"{tower}_attn"]
    return adapter.down[layer], aset.shared["mma_attn"][layer], adapter.up[layer]


@pytest.mark.parametrize("scale", [1e-3, 0.5])
@pytest.mark.parametrize("tower", ["visual", "text"])
def test_adapted_block_equals_authors_forward_and_not_the_old_placement(tower, scale):
    model, aset = _adapted(scale)
    blocks = tower_blocks(model, tower)
    adapted = resolve_layers(aset.config.layers, len(blocks))
    assert adapted == [1, 2, 3]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 7, 128, generator=g)
    mask = _mask(model, tower, 7)
    with torch.no_grad():
        for pos, index in enumerate(adapted):
            block = blocks[index]
            down, middle, up = _weights(aset, tower, pos)
            assert middle is _weights(aset, "visual" if tower == "text" else "text", pos)[1]  # one per layer
            ours = block(x, attn_mask=mask)
            ref = authors_block(block, x, down, middle, up, scale, mask)
            old = old_ringfold_block(block, x, down, middle, up, scale, mask)
            assert (ours - ref).abs().max() <= TOL, (tower, index)
            assert (ours - old).abs().max() > 100 * TOL, "the test must be able to tell the placements apart"
        # the block before the adapted ones is the plain open_clip block
        plain = blocks[0]
        aset.set_enabled(False)
        off = plain(x, attn_mask=mask)
        aset.set_enabled(True)
        assert torch.equal(plain(x, attn_mask=mask), off)


def test_blocks_inside_the_real_forward_match_the_reference():
    """Captured block inputs/outputs of real encode_image / encode_text passes match the reference."""
    model, aset = _adapted(0.5, seed=2)
    captured = []
    handles = []
    for tower in ("visual", "text"):
        blocks = tower_blocks(model, tower)
        for pos, index in enumerate(resolve_layers(aset.config.layers, len(blocks))):

            def capture(block, args, kwargs, out, tower=tower, pos=pos):
                captured.append((tower, pos, block, args[0].detach(), kwargs.get("attn_mask"), out.detach()))

            # registered after ringfold's branch hook: sees the block's final output
            handles.append(blocks[index].register_forward_hook(capture, with_kwargs=True))
    with torch.no_grad():
        model.encode_image(torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
        model.encode_text(torch.randint(1, 400, (2, 32), generator=torch.Generator().manual_seed(0)))
        assert len(captured) == 6
        for tower, pos, block, x, mask, out in captured:
            down, middle, up = _weights(aset, tower, pos)
            assert (mask is None) == (tower == "visual")
            assert (out - authors_block(block, x, down, middle, up, 0.5, mask)).abs().max() <= TOL, (tower, pos)
    for h in handles:
        h.remove()


@pytest.mark.parametrize("tower", ["visual", "text"])
def test_gradients_match_the_authors_gradient_scale_layers(tower):
    """Same gradients, into the residual stream and into every branch weight, as MMA's gsl placement."""
    scale = 1e-2
    model, aset = _adapted(scale, seed=4)
    block = tower_blocks(model, tower)[2]
    down, middle, up = _weights(aset, tower, 1)
    aset.requires_grad_(True)
    x = torch.randn(2, 5, 128, generator=torch.Generator().manual_seed(5))
    w = torch.randn(2, 5, 128, generator=torch.Generator().manual_seed(6))
    mask = _mask(model, tower, 5)
    grads = []
    for forward in (
        lambda x: block(x, attn_mask=mask),
        lambda x: authors_block(block, x, down, middle, up, scale, mask),
    ):
        xi = x.clone().requires_grad_(True)
        params = [down.weight, down.bias, middle.weight, middle.bias, up.weight, up.bias]
        for p in params:
            p.grad = None
        (forward(xi) * w).sum().backward()
        grads.append([xi.grad.clone()] + [p.grad.clone() for p in params])
    for ours, ref in zip(*grads, strict=True):
        # float32 rounding only (different op order): 1e-6 of the largest gradient; without the compensation the
        # weight gradients would be ×scale = 1e-2 off
        assert (ours - ref).abs().max() <= 1e-6 * ref.abs().max() + TOL
