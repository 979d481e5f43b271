"""AdaRing: cross-layer tensor-ring adapters (Huang et al., 2025), DESIGN §4 — ringfold's formulation.

One site kind's adapter matrices over the L adapted layers form a tensor
``𝒜 ∈ R^{d × L × d}`` kept in tensor-ring form with three cores:

    G_in  (R0 × d × R1)   shared by all layers
    G_lay (R1 × L × R2)   slice l is layer l's own part
    G_out (R2 × d × R0)   shared by all layers
    A_l[i, j] = Tr(G_in[:, i, :] · G_lay[:, l, :] · G_out[:, j, :])

Two such rings per tower and site kind — a fine-grained one (larger ranks)
and a coarse-grained one (smaller ranks) — are blended per layer by a
combinator, plus a per-layer bias:

    y' = y + s·(α_l · y·A_l^fine + β_l · y·A_l^coarse + b_l)

Static combinator: (α_l, β_l) = softmax(w_l), input-independent, so the sum
is one linear map and folds exactly. Gated combinator (option): (α, β) =
softmax(mean-token(y)·W_g + w_l) per image — not foldable; the exporter
contracts the cores into dense per-layer matrices kept in the graph.

Initialisation: the layer cores ``G_lay`` start at zero (so A_l = 0 and the
adapted model equals the frozen one), the shared cores ``G_in``/``G_out``
start random. The gradient still flows: ∂A_l/∂G_lay is built from G_in and
G_out, which are non-zero, so G_lay moves at the first step; once it is
non-zero the shared cores get gradients too (tested after one step).

The training forward never builds a d × d matrix: once per forward pass
(``begin_step``) it contracts, for all layers at once, each ring's input
factor ``U_l = G_in ×₁ G_lay[:, l, :]`` reshaped to d × (R0·R2) and its output
factor ``V = G_out`` reshaped to (R0·R2) × d. With the static combinator the
two rings are one factor pair, ``U_l = [α_l·U_l^fine | β_l·U_l^coarse]`` and
the shared ``V = [V^fine ; V^coarse]``, so each adapted layer costs two plain
matmuls (plus the bias, fused into the second) for both rings together.

Mode "paired" serves the generalization-aware objective (DESIGN §4.3): the
caller stacks the batch twice, rows ``[:n]`` get the full adapter and rows
``[n:]`` the coarse ring alone, so the frozen weights run one 2n-row pass
instead of two n-row passes (same arithmetic, half the kernel launches); each
adapted layer serves both halves with one batched matmul against
``(U_l, [0 | U_l^coarse])``. On a GPU such a step is bound by the operations
the host issues, not by the device, so the forward keeps them few (DESIGN §4.2).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ringfold.errors import RingfoldError

from ..config import AdaRingConfig
from .base import SiteAdapter
from .registry import Method, register

#: "paired": the batch is two copies of the same inputs; the first half sees every adapter ("full"), the
#: second the coarse ring alone ("coarse"): the generalization-aware objective's two graded passes as one
MODES = ("full", "coarse", "fine", "paired")


class TensorRing(nn.Module):
    """The three TR cores of one adapter; contraction by einsum (``tensorly.tr_to_tensor`` is the reference)."""

    def __init__(self, dim: int, num_layers: int, ranks: tuple[int, int, int], init_std: float) -> None:
        super().__init__()
        r0, r1, r2 = ranks
        # With G_lay ~ N(0,1), A_l[i,j] sums R0·R1·R2 products: pick the shared cores' std so A's std = init_std.
        core_std = math.sqrt(init_std / math.sqrt(r0 * r1 * r2))
        self.g_in = nn.Parameter(torch.randn(r0, dim, r1) * core_std)
        self.g_lay = nn.Parameter(torch.zeros(r1, num_layers, r2))
        self.g_out = nn.Parameter(torch.randn(r2, dim, r0) * core_std)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(U, V): U[l] (d × R0·R2) and V (R0·R2 × d) with y·A_l = (y·U[l])·V, index (a, c) → a·R2 + c."""
        r0, dim, r2 = self.g_out.shape[2], self.g_in.shape[1], self.g_out.shape[0]
        u = torch.einsum("aib,blc->liac", self.g_in, self.g_lay).reshape(self.g_lay.shape[1], dim, r0 * r2)
        v = self.g_out.permute(2, 0, 1).reshape(r0 * r2, dim)
        return u, v

    def dense(self, layer: int | None = None) -> torch.Tensor:
        """A_l (d × d), or the full tensor (d × L × d) when ``layer`` is None."""
        if layer is None:
            return torch.einsum("aib,blc,cja->ilj", self.g_in, self.g_lay, self.g_out)
        return torch.einsum("aib,bc,cja->ij", self.g_in, self.g_lay[:, layer, :], self.g_out)


class AdaRingAdapter(SiteAdapter):
    shared_parameters: ClassVar[tuple[str, ...]] = ("fine.g_in", "fine.g_out", "coarse.g_in", "coarse.g_out", "gate")

    def __init__(
        self, config: AdaRingConfig, *, dim: int, num_layers: int, tower: str, site: str, shared: nn.ModuleDict
    ) -> None:
        super().__init__(dim, num_layers)
        self.fine = TensorRing(dim, num_layers, config.fine_ranks, config.init_std)
        self.coarse = TensorRing(dim, num_layers, config.coarse_ranks, config.init_std)
        self.mix = nn.Parameter(torch.zeros(num_layers, 2))  # combinator logits w_l: starts at 50/50
        self.bias = nn.Parameter(torch.zeros(num_layers, dim)) if config.bias else None
        self.gated = config.combinator == "gated"
        self.gate = nn.Linear(dim, 2, bias=False) if self.gated else None
        if self.gate is not None:
            nn.init.zeros_(self.gate.weight)
        self.mode = "full"
        # begin_step's cache, per mode: {"full" | "paired" | "fine" | "coarse": (U per layer, V), "bias": b per layer}
        self._factors: dict[str, tuple] | None = None
        self._dense: tuple[torch.Tensor, torch.Tensor] | None = None  # export: dense per-layer matrices

    @property
    def foldable(self) -> bool:  # type: ignore[override]
        return not self.gated

    # -- forward -------------------------------------------------------------------------------------
    def begin_step(self) -> None:
        if self._dense is not None:  # exported: nothing to contract
            return
        if torch.is_inference_mode_enabled():  # e.g. the frozen reference pass, adapters off: contract lazily
            self._factors = None
            return
        self._contract()

    def _contract(self) -> None:
        """Fill the per-step factor cache for the current mode (``begin_step``, or lazily from ``delta``).

        Every per-layer tensor is cut into its layers once here (``unbind``: one autograd node for all
        layers, where indexing ``u[layer]`` in every call made one per call), and under autocast cast once to
        the autocast dtype (the value autocast would give each matmul; done per call, it is a copy per layer).
        On a GPU a training step of these small adapters is bound by how many operations the host issues.
        """
        cast = _autocast_dtype(self.mix.device)
        cache: dict[str, tuple] = {}
        rings: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

        def ring(name: str) -> tuple[torch.Tensor, torch.Tensor]:
            if name not in rings:
                rings[name] = getattr(self, name).factors()
            return rings[name]

        for key in self._needs():
            if key in ("fine", "coarse"):
                u, v = ring(key)
                cache[key] = (_layers(u, cast), _to(v, cast))
            else:  # static "full" / "paired": both rings as one factor pair, α_l / β_l folded into U's columns
                (u_f, v_f), (u_c, v_c) = ring("fine"), ring("coarse")
                w = F.softmax(self.mix, dim=-1)  # (L, 2)
                u = torch.cat((u_f * w[:, 0, None, None], u_c * w[:, 1, None, None]), dim=2)  # (L, d, K)
                v = torch.cat((v_f, v_c))  # (K, d), shared by the layers
                if key == "paired":  # rows [n:] see the coarse ring alone: its columns of U, the fine ones zero
                    u = torch.stack((u, torch.cat((torch.zeros_like(u_f), u_c), dim=2)), dim=1)  # (L, 2, d, K)
                cache[key] = (_layers(u, cast), _to(v, cast))
        # the static modes fuse the bias into an addmm, where autocast would cast it; the gated one adds it
        bias_cast = None if self.gated else cast
        cache["bias"] = _layers(self.bias, bias_cast) if self.bias is not None else None
        self._factors = cache

    def _needs(self) -> tuple[str, ...]:
        """The cache entries the current mode reads. Gated: both rings apart (its (α, β) is per image)."""
        if self.mode in ("full", "paired"):
            return ("fine", "coarse") if self.gated else (self.mode,)
        return (self.mode,)

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise RingfoldError(f"AdaRing mode {mode!r} invalid; use one of {', '.join(MODES)}")
        self.mode = mode

    def weights(self, y: torch.Tensor, layer: int) -> torch.Tensor:
        """(α, β) for layer l: static softmax(w_l), or per image from the mean token when gated."""
        logits = self.mix[layer]
        if self.gate is not None:
            pooled = y.mean(dim=-2, keepdim=True)  # (batch, 1, d): one gate per sequence
            logits = logits.to(y.dtype) + self.gate(pooled)
        return F.softmax(logits, dim=-1)

    def delta(self, y: torch.Tensor, layer: int) -> torch.Tensor:
        if self._dense is not None:  # exported graph: dense matrices, no ring contraction on device
            bias = self.bias[layer] if self.bias is not None else None
            w = self.weights(y, layer)
            alpha, beta = w[..., 0:1], w[..., 1:2]
            fine_out = y @ self._dense[0][layer].to(y.dtype)
            coarse_out = y @ self._dense[1][layer].to(y.dtype)
            return alpha * fine_out + beta * coarse_out + (bias.to(y.dtype) if bias is not None else 0.0)
        if self.mode == "paired" and y.shape[0] % 2:  # batch-first (open_clip >= 3): dim 0 is the batch
            raise RingfoldError(f"AdaRing paired mode needs a batch stacked twice, got {y.shape[0]} rows")
        if self._factors is None or any(k not in self._factors for k in self._needs()):
            self._contract()
        factors = self._factors
        bias = factors["bias"][layer] if factors["bias"] is not None else None
        if self.mode == "paired" and not self.gated:  # one batched matmul: rows [:n] full, rows [n:] coarse only
            u, v = factors["paired"]
            t = torch.bmm(y.reshape(2, -1, y.shape[-1]), _match(u[layer], y))
            return _linear(t.reshape(-1, t.shape[-1]), v, bias, y).reshape(y.shape)
        if self.mode == "paired":  # gated: the full half's gates depend on its images, so the halves run apart
            half = y.shape[0] // 2
            return torch.cat((self._gated(y[:half], layer, bias), self._lowrank(y[half:], "coarse", layer, bias)))
        if self.mode == "full" and self.gated:
            return self._gated(y, layer, bias)
        return self._lowrank(y, self.mode, layer, bias)

    def _lowrank(self, y: torch.Tensor, key: str, layer: int, bias: torch.Tensor | None) -> torch.Tensor:
        """(y·U_l)·V + b_l as two matmuls on the flattened tokens, the bias fused into the second."""
        u, v = self._factors[key]
        t = y.reshape(-1, y.shape[-1]) @ _match(u[layer], y)
        return _linear(t, v, bias, y).reshape(y.shape)

    def _gated(self, y: torch.Tensor, layer: int, bias: torch.Tensor | None) -> torch.Tensor:
        """Gated full mode: per-image (α, β) on the two rings' outputs."""
        w = self.weights(y, layer)
        out = w[..., 0:1] * self._lowrank(y, "fine", layer, None) + w[..., 1:2] * self._lowrank(
            y, "coarse", layer, None
        )
        return out + _match(bias, y) if bias is not None else out

    # -- export ----------------------------------------------------------------------------------------
    def dense(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.gated:
            raise RingfoldError("gated AdaRing is input-dependent and cannot be folded into a linear layer")
        alpha, beta = F.softmax(self.mix[layer], dim=-1)
        a = alpha * self.fine.dense(layer) + beta * self.coarse.dense(layer)
        b = self.bias[layer] if self.bias is not None else torch.zeros(self.dim, device=a.device, dtype=a.dtype)
        return a, b

    def extra_macs(self, tokens: int) -> int:
        return tokens * (2 * self.dim * self.dim + 2 * self.dim) if self.gated else 0

    def prepare_export(self) -> None:
        with torch.no_grad():
            self._dense = (
                self.fine.dense().permute(1, 0, 2).contiguous(),
                self.coarse.dense().permute(1, 0, 2).contiguous(),
            )


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The dtype autocast gives matmuls on ``device`` right now, or None when autocast is off there."""
    kind = device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None


def _to(t: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    return t if dtype is None else t.to(dtype)


def _layers(t: torch.Tensor, dtype: torch.dtype | None) -> tuple[torch.Tensor, ...]:
    """A per-layer stack (L, ...) as L tensors, in the autocast dtype where autocast is on."""
    return torch.unbind(_to(t, dtype), dim=0)


def _match(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``t`` in ``y``'s dtype, unless autocast is on (then ``t`` already is what autocast would make it)."""
    if t.dtype == y.dtype or torch.is_autocast_enabled(y.device.type):
        return t
    return t.to(y.dtype)


def _linear(t: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
    v = _match(v, y)
    return t @ v if bias is None else torch.addmm(_match(bias, y), t, v)


register(
    Method(
        "adaring",
        AdaRingConfig,
        AdaRingAdapter,
        "cross-layer tensor-ring adapters, fine + coarse rings, combinator (static: foldable)",
    )
)
