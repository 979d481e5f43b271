"""Tensor-ring fit of a third-order tensor 𝒜 ∈ R^{d×L×d}: TR-SVD start, then ALS on small Gram matrices (DESIGN §4.5).

Three cores ``G0 (R0×d×R1)``, ``G1 (R1×L×R2)``, ``G2 (R2×d×R0)`` with
``𝒜[i, l, j] ≈ Σ G0[a, i, b] · G1[b, l, c] · G2[c, j, a]``.

Why not ``tensorly.decomposition.tensor_ring_als``: from a random start it
needs many sweeps (and restarts) to leave a poor basin, its tolerance is
absolute, and every core update copies a transposed unfolding of 𝒜 and runs
``lstsq`` on it (for the layer core a ``d²×R1R2`` design matrix). Here:

- the start is the TR-SVD (two truncated SVDs, Zhao et al. 2016), which is
  already exact when 𝒜 has the ring's ranks;
- each core solves its normal equations. The Gram matrix is contracted from
  the other two cores' own ``(r·r)²`` Grams, and the right-hand side is one
  matrix product of 𝒜 (a reshape, never a copy) with a thin ``L·d × r·r``
  factor, so a sweep reads 𝒜 three times and allocates nothing of its size;
- the sweep error comes from those same small products (no reconstruction),
  and the fit stops when the error improves by less than ``tol`` (relative),
  after ``max_sweeps``, or past ``time_budget`` seconds;
- the big products run in ``dtype`` (float32 by default: 𝒜 is read in half
  the bytes), everything small in float64, and the final error is measured
  exactly on a float64 reconstruction.

Deterministic: no random numbers at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass(eq=False)
class RingFit:
    cores: list[np.ndarray]  # float64: (R0, d, R1), (R1, L, R2), (R2, d, R0)
    error: float  # ‖𝒜 − TR(cores)‖ / ‖𝒜‖, measured on the reconstruction
    sweeps: int
    seconds: float
    init_error: float  # after the TR-SVD start, before any ALS sweep
    stopped: str  # "converged", "max_sweeps", "time_budget", "exact" or "zero"
    history: list[float] = field(default_factory=list)  # error after each sweep (from the small products)


def ring_parameters(dim: int, layers: int, ranks: tuple[int, int, int]) -> int:
    """Numbers in one ring: ``R0·d·R1 + R1·L·R2 + R2·d·R0``."""
    r0, r1, r2 = ranks
    return r0 * dim * r1 + r1 * layers * r2 + r2 * dim * r0


def tr_to_tensor(cores: list[np.ndarray]) -> np.ndarray:
    """The full tensor of three ring cores (float64), by two matrix products."""
    g0, g1, g2 = (np.asarray(c, dtype=np.float64) for c in cores)
    r0, d_in, r1 = g0.shape
    _, layers, _ = g1.shape
    _, d_out, _ = g2.shape
    chain = np.einsum("blc,cja->ablj", g1, g2).reshape(r0 * r1, layers * d_out)
    left = g0.transpose(1, 0, 2).reshape(d_in, r0 * r1)
    return (left @ chain).reshape(d_in, layers, d_out)


def _gram(core: np.ndarray) -> np.ndarray:
    """W[a, b, a', b'] = Σ_n core[a, n, b] · core[a', n, b']."""
    return np.einsum("anb,cnd->abcd", core, core, optimize=True)


def _top_left_singular(mat: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` left singular vectors of a wide matrix and their values (float64).

    Exactly from the row Gram when the matrix has few rows; otherwise by a seeded randomized range finder
    (``k + 10`` columns, two power iterations: a few thin products instead of a ``d×d`` eigensolve).
    """
    rows = mat.shape[0]
    if k + 10 >= rows // 2:
        basis, small = np.eye(rows), mat.astype(np.float64)
    else:
        omega = np.random.default_rng(0).standard_normal((mat.shape[1], k + 10)).astype(mat.dtype)
        basis = np.linalg.qr((mat @ omega).astype(np.float64))[0]
        for _ in range(2):
            basis = np.linalg.qr((mat @ (mat.T @ basis.astype(mat.dtype))).astype(np.float64))[0]
        small = (basis.T.astype(mat.dtype) @ mat).astype(np.float64)
    gram = small @ small.T
    vals, vecs = np.linalg.eigh((gram + gram.T) / 2)
    order = np.argsort(vals)[::-1][:k]
    vecs = basis @ vecs[:, order]
    signs = np.sign(vecs[np.abs(vecs).argmax(axis=0), range(vecs.shape[1])])  # a fixed sign per vector
    return vecs * np.where(signs == 0, 1.0, signs), np.sqrt(np.clip(vals[order], 0.0, None))


class Prepared:
    """A tensor, its norm and its unit-norm copies, made once for several fits of the same tensor."""

    def __init__(self, tensor: np.ndarray) -> None:
        self.tensor64 = np.asarray(tensor, dtype=np.float64)
        self.norm = float(np.linalg.norm(self.tensor64))
        self._unit: dict[np.dtype, np.ndarray] = {}

    def unit(self, dtype) -> np.ndarray:
        key = np.dtype(dtype)
        if key not in self._unit:
            self._unit[key] = np.ascontiguousarray(self.tensor64 / self.norm, dtype=key)
        return self._unit[key]

    def error(self, cores: list[np.ndarray]) -> float:
        """Relative error of ring cores, on a float64 reconstruction."""
        if self.norm == 0.0:
            return float(np.linalg.norm(tr_to_tensor(cores)) > 0)
        return float(np.linalg.norm(self.tensor64 - tr_to_tensor(cores)) / self.norm)


def tr_svd(tensor: np.ndarray, ranks: tuple[int, int, int]) -> list[np.ndarray]:
    """TR-SVD start: ``𝒜_(1) ≈ U·C`` at rank R0·R1 (U → G0), then C regrouped to ``(R1·L) × (d·R0)`` at rank R2."""
    r0, r1, r2 = ranks
    d_in, layers, d_out = tensor.shape
    unfold = tensor.reshape(d_in, layers * d_out)
    k = r0 * r1
    u, _ = _top_left_singular(unfold, min(k, d_in))
    if u.shape[1] < k:  # more ring than rows: pad with zero columns
        u = np.concatenate([u, np.zeros((d_in, k - u.shape[1]))], axis=1)
    rest = (u.T.astype(tensor.dtype) @ unfold).astype(np.float64)  # (R0·R1, L·d)
    g0 = u.reshape(d_in, r0, r1).transpose(1, 0, 2)  # (R0, d, R1)
    regroup = rest.reshape(r0, r1, layers, d_out).transpose(1, 2, 3, 0).reshape(r1 * layers, d_out * r0)
    u2, s2 = _top_left_singular(regroup, min(r2, r1 * layers))
    if u2.shape[1] < r2:
        u2 = np.concatenate([u2, np.zeros((r1 * layers, r2 - u2.shape[1]))], axis=1)
    g1 = u2.reshape(r1, layers, r2)
    g2 = (u2.T @ regroup).reshape(r2, d_out, r0)
    # balance the scale between the three cores (the ring is invariant to it; ALS is better conditioned)
    norms = [np.linalg.norm(g) for g in (g0, g1, g2)]
    if all(n > 0 for n in norms):
        target = np.prod(norms) ** (1 / 3)
        g0, g1, g2 = (g * (target / n) for g, n in zip((g0, g1, g2), norms, strict=True))
    return [g0, g1, g2]


#: below this sweep error, products in that precision no longer measure the fit
_FLOOR = {np.dtype(np.float32): 3e-3, np.dtype(np.float64): 0.0}


def _solve(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """``X · gram = rhs`` for a symmetric PSD ``gram``, tolerant of rank deficiency (eigen pseudo-inverse)."""
    vals, vecs = np.linalg.eigh((gram + gram.T) / 2)
    cutoff = max(vals.max(), 0.0) * 1e-13
    inv = np.where(vals > cutoff, 1.0 / np.where(vals > cutoff, vals, 1.0), 0.0)
    return ((rhs @ vecs) * inv) @ vecs.T


def fit_tensor_ring(
    tensor: np.ndarray | Prepared,
    ranks: tuple[int, int, int],
    *,
    max_sweeps: int = 50,
    tol: float = 1e-4,
    time_budget: float | None = None,
    dtype: type = np.float32,
    progress: Callable[[int, float], None] | None = None,
    init: str | int | list[np.ndarray] = "svd",
    measure: bool = True,
) -> RingFit:
    """Fit ring cores at ``ranks`` to ``tensor`` (d_in × L × d_out): TR-SVD start, then ALS sweeps.

    Stops when a sweep improves the relative error by less than ``tol`` times the error itself
    (or the error is below 1e-12), after ``max_sweeps`` sweeps, or once ``time_budget`` seconds are spent.
    ``progress(sweep, error)`` is called after the start (sweep 0) and after every sweep.
    ``init``: "svd" (TR-SVD), a seed (Gaussian cores) or cores to go on from. With ``measure=False``
    the returned error is the last sweep's estimate (no reconstruction).
    """
    start = time.perf_counter()
    r0, r1, r2 = (int(r) for r in ranks)
    target = tensor if isinstance(tensor, Prepared) else Prepared(tensor)
    d_in, layers, d_out = target.tensor64.shape
    norm = target.norm
    if norm == 0.0:
        cores = [np.zeros((r0, d_in, r1)), np.zeros((r1, layers, r2)), np.zeros((r2, d_out, r0))]
        return RingFit(cores, 0.0, 0, time.perf_counter() - start, 0.0, "zero")
    als = _Als(target, (r0, r1, r2), dtype, init)
    init_error = als.start_error()
    if progress:
        progress(0, init_error)
    error, stopped, sweep = init_error, "max_sweeps", 0
    if init_error < 1e-12 and als.work.dtype == np.float64:
        stopped = "exact"
    while sweep < max_sweeps and stopped != "exact":
        sweep += 1
        new_error = als.sweep()
        if progress:
            progress(sweep, new_error)
        improvement, error = error - new_error, new_error
        if error < _FLOOR[als.work.dtype] and als.work.dtype != np.float64:
            als.to_float64()  # float32's products cannot see errors this small: go on in float64
            error = np.inf
            continue
        if error < 1e-12:
            stopped = "exact"
            break
        if improvement < tol * error:
            stopped = "converged"
            break
        if time_budget is not None and time.perf_counter() - start > time_budget:
            stopped = "time_budget"
            break
    cores = [g * norm ** (1 / 3) for g in (als.g0, als.g1, als.g2)]
    final = target.error(cores) if measure else (als.history[-1] if als.history else init_error)
    return RingFit(cores, final, sweep, time.perf_counter() - start, init_error, stopped, als.history)


class _Als:
    """The ALS state of one fit: the unit-norm tensor in the working precision, the three cores and their Grams."""

    def __init__(self, target: Prepared, ranks: tuple[int, int, int], dtype: type, init: str | int | list) -> None:
        self.target, self.ranks = target, ranks
        self.d_in, self.layers, self.d_out = target.tensor64.shape
        self._use(target.unit(dtype), dtype)  # unit norm: errors are relative
        r0, r1, r2 = ranks
        if isinstance(init, list):  # continue from given cores (scaled to the unit-norm tensor)
            self.g0, self.g1, self.g2 = (np.asarray(c, dtype=np.float64) / target.norm ** (1 / 3) for c in init)
        elif init == "svd":
            self.g0, self.g1, self.g2 = tr_svd(self.work, ranks)
        else:
            rng = np.random.default_rng(int(init))
            shapes = ((r0, self.d_in, r1), (r1, self.layers, r2), (r2, self.d_out, r0))
            self.g0, self.g1, self.g2 = (rng.standard_normal(s) for s in shapes)
        self.w0, self.w1 = _gram(self.g0), _gram(self.g1)
        self.history: list[float] = []  # error after each sweep (from the small products)

    def _use(self, work: np.ndarray, dtype: type) -> None:
        self.work, self.dtype = work, dtype
        self.by_in = work.reshape(self.d_in, self.layers * self.d_out)
        self.by_out = work.reshape(self.d_in * self.layers, self.d_out)

    def to_float64(self) -> None:
        """Go on in float64: below ``_FLOOR`` float32's products no longer measure the fit."""
        self._use(self.target.unit(np.float64), np.float64)

    @staticmethod
    def rel_error(core: np.ndarray, rhs: np.ndarray, gram: np.ndarray) -> float:
        # ‖𝒜 − TR‖² = 1 − 2⟨𝒜, TR⟩ + ‖TR‖², with ⟨𝒜, TR⟩ = Σ rhs ⊙ core and ‖TR‖² = Σ (core·gram) ⊙ core
        return float(np.sqrt(max(1.0 - 2.0 * np.sum(rhs * core) + np.sum((core @ gram) * core), 0.0)))

    def layer_rhs(self) -> np.ndarray:
        """(L, R1·R2): Σ_{i,j} 𝒜[i,l,j] G0[a,i,b] G2[c,j,a]."""
        r0, r1, r2 = self.ranks
        left = self.g0.transpose(0, 2, 1).reshape(r0 * r1, self.d_in).astype(self.dtype)
        x = (left @ self.by_in).astype(np.float64).reshape(r0, r1, self.layers, self.d_out)
        return np.einsum("ablj,cja->lbc", x, self.g2, optimize=True).reshape(self.layers, r1 * r2)

    def start_error(self) -> float:
        """The error of the start, exactly, on the layer core's products."""
        _, r1, r2 = self.ranks
        w2 = _gram(self.g2)
        gram1 = np.einsum("cxdy,xbye->bced", w2, self.w0, optimize=True).reshape(r1 * r2, r1 * r2)
        layer_core = self.g1.reshape(r1, self.layers, r2).transpose(1, 0, 2).reshape(self.layers, r1 * r2)
        return self.rel_error(layer_core, self.layer_rhs(), gram1)

    def sweep(self) -> float:
        """One ALS sweep (G0, G1, G2 each solved from its normal equations); returns the error after it."""
        r0, r1, r2 = self.ranks
        d_in, layers, d_out = self.d_in, self.layers, self.d_out
        # G0: 𝒜[i, (l, j)] ≈ Σ_{a,b} G0[a,i,b] M[(l,j),(a,b)],  M = Σ_c G1[b,l,c] G2[c,j,a]
        chain = np.einsum("blc,cja->ljab", self.g1, self.g2, optimize=True).reshape(layers * d_out, r0 * r1)
        rhs = (self.by_in @ chain.astype(self.dtype)).astype(np.float64)  # (d_in, R0·R1)
        w2 = _gram(self.g2)
        gram = np.einsum("bxcy,xayd->abdc", self.w1, w2, optimize=True)
        gram = gram.reshape(r0 * r1, r0 * r1)
        sol = _solve(gram, rhs)
        self.g0 = sol.reshape(d_in, r0, r1).transpose(1, 0, 2)
        self.w0 = _gram(self.g0)
        # G1: 𝒜[(i, j), l] ≈ Σ_{b,c} G1[b,l,c] · Σ_a G0[a,i,b] G2[c,j,a]
        rhs = self.layer_rhs()
        gram = np.einsum("cxdy,xbye->bced", w2, self.w0, optimize=True).reshape(r1 * r2, r1 * r2)
        sol = _solve(gram, rhs)
        self.g1 = sol.reshape(layers, r1, r2).transpose(1, 0, 2)
        self.w1 = _gram(self.g1)
        # G2: 𝒜[(i, l), j] ≈ Σ_{c,a} G2[c,j,a] K[(i,l),(c,a)],  K = Σ_b G0[a,i,b] G1[b,l,c]
        chain = np.einsum("aib,blc->ilca", self.g0, self.g1, optimize=True).reshape(d_in * layers, r2 * r0)
        rhs = (self.by_out.T @ chain.astype(self.dtype)).astype(np.float64)  # (d_out, R2·R0)
        gram = np.einsum("axby,xcyd->cadb", self.w0, self.w1, optimize=True).reshape(r2 * r0, r2 * r0)
        sol = _solve(gram, rhs)
        self.g2 = sol.reshape(d_out, r2, r0).transpose(1, 0, 2)
        error = self.rel_error(sol, rhs, gram)
        self.history.append(error)
        return error
