"""The adapter framework shared by every method.

An adapter is a linear map on the output of a block's ``ln_1`` (feeding
attention) or ``ln_2`` (feeding the MLP), DESIGN §2:

    y' = y + s · (y · A_l + b_l)

It is injected by wrapping the LayerNorm, so the frozen open_clip block code
runs untouched and removing the wrapper restores the exact base module. One
``SiteAdapter`` holds the parameters of one tower × site kind (shared parts
and per-layer parts together); the wrapper only knows its layer position.

A method whose branch lands on the block *output* (MMA, DESIGN §6:
``block(x) + s·delta(ln_1 x)``) sets ``placement = "block"``: its branch is a
forward hook on the block (:class:`BlockBranch`), again leaving the open_clip
module tree, its parameter names and its code unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ringfold.errors import FieldError, RingfoldError

from ..config import TOWERS, AdapterConfig
from .registry import get as get_method

#: tower × site kinds an adapter can sit at; the config's ``sites`` picks among them


def resolve_layers(spec: str, depth: int) -> list[int]:
    """Turn a layer spec into sorted 0-based block indices of a tower with ``depth`` blocks."""
    spec = str(spec).strip().lower()
    if spec == "all":
        return list(range(depth))
    if m := re.fullmatch(r"last:(\d+)/(\d+)", spec):
        # the last ceil(depth·p/q) blocks: "last:2/3" is blocks depth//3 .. depth-1 (4..11 of 12, 1..3 of 4)
        p, q = int(m.group(1)), int(m.group(2))
        if q == 0 or p == 0 or p > q:
            raise FieldError("layers", f"is {spec!r}: last:p/q needs 0 < p <= q")
        k = -(-depth * p // q)
        return list(range(depth - k, depth))
    if m := re.fullmatch(r"last:(\d+)", spec):
        k = min(int(m.group(1)), depth)
        return list(range(depth - k, depth))
    if m := re.fullmatch(r"(\d+)-(\d+)", spec):
        idx = list(range(int(m.group(1)), int(m.group(2)) + 1))
    elif re.fullmatch(r"\d+(,\d+)*", spec):
        idx = sorted({int(i) for i in spec.split(",")})
    else:
        raise FieldError("layers", f"is {spec!r}: use all, last:K, last:p/q, a-b or i,j,k (0-based)")
    if not idx or idx[-1] >= depth:
        raise FieldError("layers", f"is {spec!r}, out of range for a tower with {depth} blocks (0..{depth - 1})")
    return idx


class SiteAdapter(nn.Module):
    """All adapter parameters of one tower × site kind.

    Subclasses define ``delta`` (the training-time forward, cheap) and
    ``dense`` (the per-layer matrix and bias the exporter folds).
    """

    #: a linear, input-independent adapter folds exactly into the next linear layer
    foldable: ClassVar[bool] = True
    #: names of parameters shared by all layers (for the parameter table)
    shared_parameters: ClassVar[tuple[str, ...]] = ()
    #: "site": ``y + s·delta(y)`` replaces the LayerNorm output (``AdaptedNorm``); "block": the block's output
    #: gets ``+ s·delta(ln_1(x))`` (``BlockBranch``, site kind "attn" only)
    placement: ClassVar[str] = "site"

    def __init__(self, dim: int, num_layers: int) -> None:
        super().__init__()
        self.dim = dim
        self.num_layers = num_layers

    def begin_step(self) -> None:
        """Called once per forward pass before the blocks run (e.g. to contract shared cores once)."""

    def set_mode(self, mode: str) -> None:
        """Switch what ``delta`` computes: "full" (default) or a method-specific mode such as "coarse"."""
        if mode != "full":
            raise RingfoldError(f"{type(self).__name__} has no {mode!r} mode")

    def extra_macs(self, tokens: int) -> int:
        """Multiply-accumulates one layer's branch adds per image when it stays in the graph (non-foldable)."""
        return 0

    def prepare_export(self) -> None:
        """Non-foldable adapters: precompute what the exported graph needs (e.g. dense per-layer matrices)."""

    def delta(self, y: torch.Tensor, layer: int) -> torch.Tensor:
        """``y · A_l + b_l`` for row vectors ``y`` (..., d)."""
        raise NotImplementedError

    def dense(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A_l, b_l)`` with ``A_l`` (d, d) acting on row vectors, ``b_l`` (d,)."""
        raise NotImplementedError


class AdaptedNorm(nn.Module):
    """Wraps a block's LayerNorm: returns ``y + s·delta(y)`` with ``y = norm(x)``.

    The adapter is held by reference (not registered) so that its shared
    parameters appear once, under the ``AdapterSet``, in every state dict.
    """

    def __init__(self, norm: nn.Module, adapter: SiteAdapter, layer: int, scale: float) -> None:
        super().__init__()
        self.norm = norm
        self.layer = layer
        self.scale = scale
        self.__dict__["adapter"] = adapter
        self.enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(x)
        if not self.enabled:
            return y
        return y + self.scale * self.adapter.delta(y, self.layer)


class BlockBranch:
    """A block-output branch: ``block(x) + s·delta(ln_1(x))`` with ``x`` the block's input (DESIGN §6).

    Installed as a forward hook on the open_clip block, so the block's code, its submodules and their
    parameter names stay exactly as they were; ``remove()`` restores the plain block. ``ln_1`` is the
    block's own (frozen) LayerNorm, evaluated a second time for the branch, as in MMA's code.
    """

    def __init__(self, block: nn.Module, adapter: SiteAdapter, layer: int, scale: float) -> None:
        self.block = block
        self.adapter = adapter
        self.layer = layer
        self.scale = scale
        self.enabled = True
        self.handle = block.register_forward_hook(self, with_kwargs=True)

    def __call__(self, block: nn.Module, args: tuple, kwargs: dict, out: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return out
        x = args[0] if args else kwargs["q_x"]
        return out + self.scale * self.adapter.delta(block.ln_1(x), self.layer)

    def remove(self) -> None:
        self.handle.remove()


def tower_blocks(model: nn.Module, tower: str) -> nn.ModuleList:
    """The residual blocks of an open_clip CLIP / CustomTextCLIP tower."""
    if tower == "visual":
        return model.visual.transformer.resblocks
    text = getattr(model, "text", None)
    transformer = text.transformer if text is not None else getattr(model, "transformer", None)
    if transformer is None or not hasattr(transformer, "resblocks"):
        raise RingfoldError("this model's text tower is not an open_clip Transformer; use towers=('visual',)")
    return transformer.resblocks


_NORM_ATTR = {"attn": "ln_1", "mlp": "ln_2"}


@dataclass
class Placement:
    tower: str
    site: str
    blocks: list[int] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.tower}_{self.site}"


class AdapterSet(nn.Module):
    """Every adapter of a model, keyed ``<tower>_<site>``: the only trainable state of a run."""

    def __init__(self, config: AdapterConfig) -> None:
        super().__init__()
        self.config = config
        self.adapters = nn.ModuleDict()
        #: parameters shared across towers (e.g. MMA's per-layer middle projection), saved once
        self.shared = nn.ModuleDict()
        self.placements: dict[str, Placement] = {}
        self._wrappers: list[AdaptedNorm] = []
        #: (tower, site, block, branch) of every block-output branch (``placement = "block"``)
        self._branches: list[tuple[str, str, nn.Module, BlockBranch]] = []
        self._hooks: list[Any] = []
        #: (tower blocks, index of the first adapted block) per tower: the frozen prefix a step may share
        self.prefixes: list[tuple[nn.ModuleList, int]] = []
        #: False between ``set_enabled(False)`` and ``set_enabled(True)``: the model runs as the frozen base
        self.enabled = True

    def remove_hooks(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()

    def begin_step(self, tower: str | None = None) -> None:
        """Before a forward pass of ``tower`` (None: every tower): let its adapters prepare (contract cores).

        Nothing to prepare while the adapters are switched off (the frozen reference passes).
        """
        if not self.enabled:
            return
        for key, adapter in self.adapters.items():
            if tower is None or self.placements[key].tower == tower:
                adapter.begin_step()

    def set_mode(self, mode: str) -> None:
        for adapter in self.adapters.values():
            adapter.set_mode(mode)

    def set_enabled(self, enabled: bool) -> None:
        self.enabled = enabled
        for wrapper in self._wrappers:
            wrapper.enabled = enabled
        for *_, branch in self._branches:
            branch.enabled = enabled

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def foldable(self) -> bool:
        return all(a.foldable for a in self.adapters.values())


def build_site_adapter(
    config: AdapterConfig, dim: int, num_layers: int, tower: str, site: str, shared: nn.ModuleDict | None = None
) -> SiteAdapter:
    """``shared`` holds cross-tower modules; a method creates them on first use and reuses them after."""
    shared = nn.ModuleDict() if shared is None else shared
    method = get_method(config.method)
    return method.adapter_cls(config, dim=dim, num_layers=num_layers, tower=tower, site=site, shared=shared)


def block_width(block: nn.Module) -> int:
    return (
        block.ln_1.normalized_shape[0]
        if hasattr(block.ln_1, "normalized_shape")
        else block.ln_1.norm.normalized_shape[0]
    )


def inject(model: nn.Module, config: AdapterConfig) -> AdapterSet:
    """Freeze ``model`` and wrap the configured LayerNorms with fresh adapters of ``config.method``."""
    model.requires_grad_(False)
    aset = AdapterSet(config)
    for tower in config.towers:
        blocks = tower_blocks(model, tower)
        idx = resolve_layers(config.layers, len(blocks))
        dim = block_width(blocks[0])
        aset.prefixes.append((blocks, min(idx)))
        for site in config.site_kinds:
            placement = Placement(tower, site, idx)
            adapter = build_site_adapter(config, dim, len(idx), tower, site, aset.shared)
            aset.adapters[placement.key] = adapter
            aset.placements[placement.key] = placement
            for pos, block_index in enumerate(idx):
                block = blocks[block_index]
                if adapter.placement == "block":
                    if site != "attn":
                        raise RingfoldError(f"a block-output branch reads ln_1 (site attn), not site {site!r}")
                    if any(isinstance(h, BlockBranch) for h in block._forward_hooks.values()):
                        raise RingfoldError("model already has adapters injected; build a fresh model")
                    aset._branches.append((tower, site, block, BlockBranch(block, adapter, pos, config.scale)))
                    continue
                norm = getattr(block, _NORM_ATTR[site])
                if isinstance(norm, AdaptedNorm):
                    raise RingfoldError("model already has adapters injected; build a fresh model")
                wrapper = AdaptedNorm(norm, adapter, pos, config.scale)
                setattr(block, _NORM_ATTR[site], wrapper)
                aset._wrappers.append(wrapper)
    model.adapters = aset  # registered: moves with .to(device), saved via model.adapters.state_dict()
    _install_step_hooks(model, aset)
    return aset


def _install_step_hooks(model: nn.Module, aset: AdapterSet) -> None:
    """Run ``begin_step`` before each tower's forward so its shared cores are contracted once per pass.

    Each hook prepares its own tower's adapters only: a step that runs both towers contracts every
    adapter once, not twice.
    """

    def hook_for(tower: str):
        def hook(_module: nn.Module, _args: Any) -> None:
            aset.begin_step(tower)

        return hook

    text = getattr(model, "text", None)
    towers = {"visual": model.visual, "text": text.transformer if text is not None else model.transformer}
    for name, module in towers.items():
        aset._hooks.append(module.register_forward_pre_hook(hook_for(name)))


def adapted_norms(model: nn.Module) -> list[tuple[str, str, nn.Module, AdaptedNorm]]:
    """(tower, site, block, wrapper) for every wrapped LayerNorm in ``model``."""
    found = []
    for tower in TOWERS:
        try:
            blocks = tower_blocks(model, tower)
        except RingfoldError:
            continue
        for block in blocks:
            for site, attr in _NORM_ATTR.items():
                norm = getattr(block, attr)
                if isinstance(norm, AdaptedNorm):
                    found.append((tower, site, block, norm))
    return found


def adapted_blocks(model: nn.Module) -> list[tuple[str, str, nn.Module, BlockBranch]]:
    """(tower, site, block, branch) for every block-output branch installed on ``model``."""
    aset = getattr(model, "adapters", None)
    return list(aset._branches) if isinstance(aset, AdapterSet) else []


def site_linear(block: nn.Module, site: str) -> tuple[nn.Parameter, nn.Parameter | None]:
    """The (weight, bias) of the frozen linear that reads a site's adapted output."""
    if site == "mlp":
        return block.mlp.c_fc.weight, block.mlp.c_fc.bias
    attn = block.attn
    if isinstance(attn, nn.MultiheadAttention) and not attn._qkv_same_embed_dim:
        raise RingfoldError("attention with separate q/k/v projections is not supported for folding")
    return attn.in_proj_weight, attn.in_proj_bias
