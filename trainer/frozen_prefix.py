"""Run a tower's un-adapted leading blocks once per training step, however many passes the step makes.

AdaRing's generalization-aware objective (DESIGN §4) pushes the same images
through the model up to three times per step: with all adapters, with the
coarse ring only, and with adapters off (the frozen reference). With the
default ``--layers last:8`` on a 12-block tower, blocks 0–3 carry no adapter,
so all three passes compute exactly the same thing there: a third of every
extra pass is repeated work. Adapters also start at block 4 in the text tower,
where the class prompts are the same for every pass.

:func:`shared_prefixes` swaps, for the duration of one step, each tower's
leading blocks for a :class:`PrefixReplay` that runs them on the first pass
and hands their output to the later passes. It is exact, not a cache that can
go stale: a replay is used only when the later pass's input to block 0 is
bit-identical to the recorded one (``torch.equal`` on one activation, cheap
next to a block), and only when nothing in the prefix needs a gradient or
draws random numbers (dropout / drop-path active in training mode), since then
the passes would differ. A batch that is the same inputs stacked twice
(AdaRing's paired full + coarse pass) runs the prefix on one copy and
repeats its output. The blocks are put back when the step's context
exits, even on error, so export, evaluation and checkpoints see the model
unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn


def _stochastic(module: nn.Module) -> bool:
    """True when the module would draw random numbers in its current mode (dropout-like with p > 0)."""
    if not module.training:
        return False
    for sub in module.modules():
        p = getattr(sub, "p", None) if isinstance(sub, nn.modules.dropout._DropoutNd) else None
        if p:
            return True
        if type(sub).__name__ in ("DropPath", "PatchDropout") and getattr(sub, "drop_prob", getattr(sub, "prob", 0)):
            return True
        attn_dropout = getattr(sub, "dropout", None)
        if isinstance(sub, nn.MultiheadAttention) and attn_dropout:
            return True
    return False


class PrefixReplay(nn.Module):
    """Stands in for block 0 of a prefix: runs ``blocks`` once, replays their output for identical input."""

    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self._recorded: tuple[torch.Tensor, torch.Tensor] | None = None
        self.replays = 0  # for tests and benchmarks: how many passes reused the prefix
        self.halved = 0  # ... and how many ran it on one copy of a batch stacked twice

    def __getattr__(self, name: str) -> Any:
        """Anything else asked of block 0 (open_clip reads ``resblocks[0].get_weight_dtype()``) is block 0's."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["blocks"][0], name)

    def _run(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, attn_mask=attn_mask)
        return x

    def forward(self, x: torch.Tensor, *args: Any, attn_mask: torch.Tensor | None = None, **kw: Any) -> torch.Tensor:
        if args:  # open_clip's checkpointed call: block(x, None, None, attn_mask)
            attn_mask = args[-1]
        if x.requires_grad:  # something upstream is trainable: the prefix is not constant, run it
            return self._run(x, attn_mask)
        half = x.shape[0] // 2
        per_sample_mask = attn_mask is not None and attn_mask.dim() > 2
        if half and x.shape[0] % 2 == 0 and not per_sample_mask and torch.equal(x[:half], x[half:]):
            # a batch stacked twice (AdaRing's paired full + coarse pass): the prefix is per sample, run one copy
            self.halved += 1
            out = self._replay_or_run(x[:half], attn_mask)
            return torch.cat((out, out))
        return self._replay_or_run(x, attn_mask)

    def _replay_or_run(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        if self._recorded is not None:
            seen, out = self._recorded
            if seen.shape == x.shape and seen.dtype == x.dtype and torch.equal(seen, x):
                self.replays += 1
                # a prefix recorded in inference mode (the frozen pass) must not leak an inference tensor
                # into a graph that autograd saves for backward
                return out.clone() if torch.is_inference(out) and not torch.is_inference_mode_enabled() else out
        with torch.no_grad():
            out = self._run(x, attn_mask)
        self._recorded = (x.detach(), out)
        return out


class _PassThrough(nn.Module):
    """Stands in for blocks 1..k-1 of a prefix: :class:`PrefixReplay` already ran them."""

    def forward(self, x: torch.Tensor, *args: Any, **kw: Any) -> torch.Tensor:
        return x


@contextmanager
def replay_prefix(blocks: nn.ModuleList, count: int) -> Iterator[PrefixReplay | None]:
    """Within the context, blocks[:count] run once per distinct input; yields None where replay is unsafe."""
    prefix = list(blocks[:count])
    trainable = any(p.requires_grad for b in prefix for p in b.parameters())
    if count <= 0 or trainable or any(_stochastic(b) for b in prefix):
        yield None
        return
    replay = PrefixReplay(prefix)
    for i in range(count):
        blocks[i] = replay if i == 0 else _PassThrough()
    try:
        yield replay
    finally:
        for i, block in enumerate(prefix):
            blocks[i] = block


@contextmanager
def shared_prefixes(towers: Sequence[tuple[nn.ModuleList, int]]) -> Iterator[list[PrefixReplay | None]]:
    """:func:`replay_prefix` for each (blocks, first adapted block) pair; one step's worth."""
    with ExitStack() as stack:
        yield [stack.enter_context(replay_prefix(blocks, count)) for blocks, count in towers]
