"""The ring fits of ``ringfold compress`` and the choice of ranks (DESIGN §4.5), without any model.

Each site's dense adapter stack 𝒜 (d × L × d) is fitted with ``tensor_ring.py``'s solver: the best of a
few starts (:func:`tr_decompose`), a fine ring on 𝒜 and a coarse ring on the residual (:func:`fit_site`).
The rank arithmetic (:func:`rank_problem`, :func:`adaring_parameters`, :func:`partition_candidates`) checks
ranks against the sites' widths and the source's size before anything is allocated, and
:func:`rank_sweep` fits the candidates of ``--ranks auto`` and picks one. ``compress.py`` runs these on a run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ringfold.errors import FieldError, RingfoldError

from .tensor_ring import Prepared, fit_tensor_ring, ring_parameters, tr_to_tensor

#: fine ranks tried by ``--ranks auto``, smallest first
SWEEP_RANKS: tuple[tuple[int, int, int], ...] = ((1, 1, 1), (2, 2, 2), (2, 4, 2), (4, 4, 4), (4, 8, 4), (8, 8, 8))
#: ALS sweeps each start runs before the best one goes on alone
PROBE_SWEEPS = 6
#: at most one progress line per this many seconds of ALS sweeps (a site still ends with its summary line)
PROGRESS_EVERY_S = 2.0
#: each rank-pair product R·R' at most this: every ALS sweep solves an (R·R')² system per core
MAX_RANK_PAIR = 4096
#: the most trainable numbers a compressed run may hold (the dense stacks of a ViT-L/14 run hold ~64 M)
MAX_RING_PARAMETERS = 2**26

Log = Callable[[str], None]


def stderr_log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def tr_decompose(
    tensor: np.ndarray,
    ranks: tuple[int, int, int],
    n_iter: int = 100,
    restarts: int = 6,
    seed: int = 0,
    tol: float = 1e-5,
    time_budget: float | None = 20.0,
    log: Log | None = None,
    label: str = "",
):
    """Ring cores (R0×d×R1, R1×L×R2, R2×d×R0) and their relative error: the best of a few starts.

    The starts are the TR-SVD and ``restarts − 1`` seeded Gaussian ones; each runs ``PROBE_SWEEPS``
    ALS sweeps, then the best goes on until a sweep improves the error by less than ``tol`` (relative),
    ``n_iter`` sweeps in all, or ``time_budget`` seconds. Deterministic for a given ``seed``.
    """
    t0 = time.perf_counter()
    starts: list[str | int] = ["svd", *(seed + k for k in range(max(restarts, 1) - 1))]
    probe = min(PROBE_SWEEPS, n_iter) if len(starts) > 1 else n_iter
    target, fits = Prepared(tensor), []
    for start in starts:
        fits.append(fit_tensor_ring(target, ranks, max_sweeps=probe, tol=tol, init=start, measure=False))
        if fits[-1].error < 1e-9:
            break
    index = min(range(len(fits)), key=lambda i: fits[i].error)
    best, name = fits[index], starts[index]
    if log:
        tried = ", ".join(
            f"{s if s == 'svd' else f'seed {s}'} {f.error:.4f}" for s, f in zip(starts, fits, strict=False)
        )
        log(f"{label}starts after {probe} sweeps: {tried}")
    if best.stopped == "max_sweeps" and n_iter > probe:
        budget = None if time_budget is None else max(time_budget - (time.perf_counter() - t0), 0.0)

        last_shown = [time.perf_counter()]

        def show(sweep: int, error: float) -> None:
            # a heartbeat, not a transcript: one line per PROGRESS_EVERY_S seconds of sweeping
            now = time.perf_counter()
            if log and sweep > 0 and now - last_shown[0] >= PROGRESS_EVERY_S:
                last_shown[0] = now
                log(f"{label}sweep {probe + sweep}: rel. error {error:.4f}")

        best = fit_tensor_ring(
            target, ranks, max_sweeps=n_iter - probe, tol=tol, init=best.cores, time_budget=budget, progress=show
        )
    else:
        best.error = target.error(best.cores)
    if log:
        start = name if name == "svd" else f"seed {name}"
        log(f"{label}rel. error {best.error:.4f} ({start} start, {best.stopped}, {time.perf_counter() - t0:.1f} s)")
    return best.cores, best.error


@dataclass
class SiteFit:
    """One site's fine + coarse rings at one choice of fine ranks."""

    fine: list[np.ndarray]
    coarse: list[np.ndarray]
    fine_error: float
    final_error: float
    residual_sq: float  # ‖𝒜 − TR(fine) − TR(coarse)‖²
    norm_sq: float  # ‖𝒜‖²


def fit_site(
    tensor: np.ndarray,
    fine_ranks: tuple[int, int, int],
    coarse_ranks: tuple[int, int, int],
    n_iter: int = 100,
    log: Log | None = None,
    label: str = "",
) -> SiteFit:
    """Fine ring on 𝒜, coarse ring on the residual."""
    fine, fine_err = tr_decompose(tensor, fine_ranks, n_iter, log=log, label=f"{label}fine {ranks_text(fine_ranks)}: ")
    residual = tensor - tr_to_tensor(fine)
    coarse, _ = tr_decompose(
        residual, coarse_ranks, n_iter, log=log, label=f"{label}coarse {ranks_text(coarse_ranks)}: "
    )
    rest = residual - tr_to_tensor(coarse)
    norm_sq, rest_sq = float(np.sum(tensor * tensor)), float(np.sum(rest * rest))
    final_err = float(np.sqrt(rest_sq / max(norm_sq, 1e-300))) if norm_sq > 0 else 0.0
    return SiteFit(fine, coarse, fine_err, final_err, rest_sq, norm_sq)


def ranks_text(ranks: Sequence[int]) -> str:
    """Ranks as the command line writes them: "2,4,2"."""
    return ",".join(str(r) for r in ranks)


def adaring_parameters(
    shapes: dict[str, tuple[int, int]],
    fine: tuple[int, int, int],
    coarse: tuple[int, int, int],
    bias: bool = True,
) -> int:
    """Trainable numbers of a static AdaRing with these ranks on sites of these (d, L) (DESIGN §4.4)."""
    return sum(
        ring_parameters(d, layers, fine) + ring_parameters(d, layers, coarse) + 2 * layers + (layers * d if bias else 0)
        for d, layers in shapes.values()
    )


def rank_problem(shapes: dict[str, tuple[int, int]], ranks: Sequence[int]) -> str | None:
    """Why a ring at ``ranks`` is no use on sites of these (d, L), or None — by arithmetic, before any allocation.

    A ring's d-mode unfoldings have rank at most R0·R1 and R2·R0, the stack's at most d, and R0 = 1,
    R1 = R2 = d already represents any stack exactly: so R0·R1 and R2·R0 above d only add numbers.
    R1·R2 is capped because every sweep solves an (R1·R2)² system for the layer core; and a ring
    holding more numbers than the dense L·d² stack it replaces is no compression.
    """
    r0, r1, r2 = ranks
    for key, (d, layers) in shapes.items():
        if max(r0 * r1, r2 * r0) > d:
            return (
                f"R0·R1 = {r0 * r1:,} and R2·R0 = {r2 * r0:,} must be at most the adapter width d = {d} of {key} "
                "(R0 = 1, R1 = R2 = d is already exact)"
            )
        if r1 * r2 > MAX_RANK_PAIR:
            return f"R1·R2 = {r1 * r2:,} is above {MAX_RANK_PAIR:,} (each sweep solves an (R1·R2)² system)"
        ring, dense = ring_parameters(d, layers, (r0, r1, r2)), layers * d * d
        if ring > dense:
            return f"the ring holds {ring:,} numbers at {key}, more than the dense L·d² = {dense:,} it replaces"
    return None


def check_ranks(shapes: dict[str, tuple[int, int]], ranks: tuple[int, int, int], field: str) -> None:
    """A one-line FieldError (the CLI names ``--ranks`` / ``--coarse-ranks``) for ranks the sites cannot use."""
    problem = rank_problem(shapes, ranks)
    if problem:
        raise FieldError(field, f"{ranks_text(ranks)}: {problem}; pick smaller ranks")


def partition_candidates(
    shapes: dict[str, tuple[int, int]],
    coarse_ranks: tuple[int, int, int],
    candidates: Sequence[tuple[int, int, int]],
    source_parameters: int | None = None,
    bias: bool = True,
) -> tuple[list[tuple[int, int, int]], list[dict[str, Any]]]:
    """The candidates worth fitting, and the others with why not (too wide for the sites, or not smaller
    than the source: a sweep that may pick a larger ring can grow the adapter it was asked to shrink)."""
    keep, skipped = [], []
    for ranks in candidates:
        params = adaring_parameters(shapes, ranks, coarse_ranks, bias)
        problem = rank_problem(shapes, ranks)
        if problem:
            skipped.append({"fine_ranks": list(ranks), "parameters": params, "reason": "too wide", "detail": problem})
        elif source_parameters is not None and params >= source_parameters:
            skipped.append({"fine_ranks": list(ranks), "parameters": params, "reason": "not smaller than the source"})
        else:
            keep.append(tuple(ranks))
    return keep, skipped


def rank_sweep(
    tensors: dict[str, np.ndarray],
    coarse_ranks: tuple[int, int, int] = (1, 1, 1),
    candidates: Sequence[tuple[int, int, int]] = SWEEP_RANKS,
    max_error: float = 0.2,
    n_iter: int = 100,
    bias: bool = True,
    log: Log | None = None,
    source_parameters: int | None = None,
) -> tuple[dict[str, Any], dict[str, SiteFit]]:
    """Fit the usable candidate fine ranks on every site; return the sweep record and the chosen candidate's fits.

    Only candidates that fit the sites' widths and, given ``source_parameters``, are smaller than the source
    are fitted (the rest are listed under ``skipped``). The choice is the candidate with the fewest
    parameters whose worst site error (fine + coarse) is at most ``max_error``; if none is, the one with
    the lowest worst-site error, and the record says so (``warning``; ``compress_run`` then refuses).
    """
    shapes = {k: (t.shape[0], t.shape[1]) for k, t in tensors.items()}
    candidates, skipped = partition_candidates(shapes, coarse_ranks, candidates, source_parameters, bias)
    if not candidates:
        why = "; ".join(f"{ranks_text(s['fine_ranks'])} {s['reason']}" for s in skipped)
        raise RingfoldError(f"no candidate ranks to fit: {why}")
    points, fits = [], []
    for n, ranks in enumerate(candidates, 1):
        t0 = time.perf_counter()
        site_fits = {}
        for key, tensor in tensors.items():
            site_fits[key] = fit_site(tensor, ranks, coarse_ranks, n_iter, log, f"[{n}/{len(candidates)}] {key} ")
        points.append(_sweep_point(ranks, site_fits, adaring_parameters(shapes, ranks, coarse_ranks, bias), t0))
        fits.append(site_fits)
        if log:
            p = points[-1]
            log(
                f"[{n}/{len(candidates)}] ranks {ranks_text(ranks)}: {p['parameters']:,} parameters, "
                f"worst site error {p['max_error']:.4f}"
            )
    ok = [i for i, p in enumerate(points) if p["max_error"] <= max_error]
    if ok:
        pick, warning = min(ok, key=lambda i: (points[i]["parameters"], points[i]["max_error"])), None
    else:
        pick = min(range(len(points)), key=lambda i: (points[i]["max_error"], points[i]["parameters"]))
        warning = (
            f"no candidate ranks reach a relative error of {max_error:g}; kept the most accurate, "
            f"{ranks_text(points[pick]['fine_ranks'])} ({points[pick]['max_error']:.3f})"
        )
    record = {
        "coarse_ranks": list(coarse_ranks),
        "max_error": max_error,
        "points": points,
        "skipped": skipped,
        "chosen": points[pick]["fine_ranks"],
        "warning": warning,
        "source_parameters": source_parameters,
    }
    return record, fits[pick]


def _sweep_point(ranks: Sequence[int], site_fits: dict[str, SiteFit], parameters: int, t0: float) -> dict[str, Any]:
    total = sum(f.norm_sq for f in site_fits.values())
    return {
        "fine_ranks": list(ranks),
        "parameters": parameters,
        "max_error": max(f.final_error for f in site_fits.values()),
        "overall_error": float(np.sqrt(sum(f.residual_sq for f in site_fits.values()) / total)) if total else 0.0,
        "site_errors": {k: f.final_error for k, f in site_fits.items()},
        "seconds": time.perf_counter() - t0,
    }
