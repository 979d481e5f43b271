"""The frozen model's image features, kept per training sample when the input is not augmented.

The consistency term of AdaRing's objective (DESIGN §4) compares the adapted
image features with the frozen model's. With ``--no-augment`` a sample's
input tensor is the same in every epoch, and so are its frozen features: the
frozen forward pass is then paid once per sample, in the first epoch, instead
of once per step. With augmentation every epoch sees a new crop, so nothing
is kept. The store is capped (``max_bytes``) so a full-size dataset cannot
turn it into a memory problem; past the cap it stops adding and the step
computes the features as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class FrozenFeatureCache:
    """sample index → frozen normalised image feature (one row), on the features' own device."""

    def __init__(self, max_bytes: int = 256 << 20) -> None:
        self.max_bytes = max_bytes
        self._rows: dict[int, torch.Tensor] = {}
        self._bytes = 0
        self.hits = 0

    def lookup(self, indices: Sequence[int]) -> torch.Tensor | None:
        """The batch's features stacked in order, or None when any sample has none stored."""
        rows = [self._rows.get(int(i)) for i in indices]
        if any(r is None for r in rows):
            return None
        self.hits += 1
        return torch.stack(rows)

    def store(self, indices: Sequence[int], features: torch.Tensor) -> None:
        if len(indices) != features.shape[0]:
            raise ValueError(f"{len(indices)} indices for {features.shape[0]} feature rows")
        for i, row in zip(indices, features.detach(), strict=True):
            size = row.numel() * row.element_size()
            if int(i) in self._rows or self._bytes + size > self.max_bytes:
                continue
            self._rows[int(i)] = row.clone()
            self._bytes += size

    def __len__(self) -> int:
        return len(self._rows)
