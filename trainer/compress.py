"""``ringfold compress``: turn dense per-layer adapters into AdaRing tensor-ring cores (DESIGN §4.5).

For each tower × site kind, the dense matrices A_l of a foldable run (ARC
composed to ``D diag(λ_l) Dᵀ``, or a static AdaRing) are stacked into
``𝒜 ∈ R^{d × L × d}`` and fitted with ringfold's tensor-ring solver
(``tensor_ring.py``: TR-SVD and seeded starts, ALS on small Gram matrices) at
the fine ranks, and the residual at the coarse ranks. With the combinator at
its 50/50 start, ``A_l ≈ ½·(2·fine) + ½·(2·coarse)``, so the result is an
ordinary AdaRing run that trains further, exports and folds like any other.

``ranks="auto"`` fits the candidate fine ranks (``SWEEP_RANKS``) whose AdaRing
run would be smaller than the source, reports relative error against parameter
count (``rank_sweep.{json,png}`` in the output run) and keeps the smallest
candidate whose worst site error is at most ``max_error``; when none is, or no
candidate is smaller at all, it refuses: compress never grows the adapter.
Explicit ranks are checked against the sites' widths by arithmetic
(``rank_problem``) before anything is loaded or allocated, and a ring larger
than the source needs ``allow_larger``.

The compressed run is compared with the source on real held-out images
(``compress_images.py``), never on generated ones.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ringfold.atomic import atomic_path, write_json, write_text
from ringfold.errors import FieldError, RingfoldError
from ringfold.ownership import check_apart, check_target, owned_directory

from .adapters import inject
from .adapters.adaring import TensorRing
from .compress_images import DEFAULT_IMAGES_LIMIT, ImageSet, agreement_lines, find_images, measure_agreement
from .config import AdaRingConfig, ring_ranks
from .run import RunRecord, load_adapted_model, read_run, save_run
from .tensor_ring import Prepared, fit_tensor_ring, ring_parameters, tr_to_tensor

#: fine ranks tried by ``--ranks auto``, smallest first
SWEEP_RANKS: tuple[tuple[int, int, int], ...] = ((1, 1, 1), (2, 2, 2), (2, 4, 2), (4, 4, 4), (4, 8, 4), (8, 8, 8))
#: a site whose relative error is above this gets a warning
HIGH_ERROR = 0.5
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
class SiteCompression:
    key: str
    dim: int
    layers: int
    dense_parameters: int
    source_parameters: int
    ring_parameters: int
    fine_error: float
    final_error: float


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
    fine, fine_err = tr_decompose(tensor, fine_ranks, n_iter, log=log, label=f"{label}fine {_r(fine_ranks)}: ")
    residual = tensor - tr_to_tensor(fine)
    coarse, _ = tr_decompose(residual, coarse_ranks, n_iter, log=log, label=f"{label}coarse {_r(coarse_ranks)}: ")
    rest = residual - tr_to_tensor(coarse)
    norm_sq, rest_sq = float(np.sum(tensor * tensor)), float(np.sum(rest * rest))
    final_err = float(np.sqrt(rest_sq / max(norm_sq, 1e-300))) if norm_sq > 0 else 0.0
    return SiteFit(fine, coarse, fine_err, final_err, rest_sq, norm_sq)


def _r(ranks: Sequence[int]) -> str:
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
        raise FieldError(field, f"{_r(ranks)}: {problem}; pick smaller ranks")


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
        why = "; ".join(f"{_r(s['fine_ranks'])} {s['reason']}" for s in skipped)
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
                f"[{n}/{len(candidates)}] ranks {_r(ranks)}: {p['parameters']:,} parameters, "
                f"worst site error {p['max_error']:.4f}"
            )
    ok = [i for i, p in enumerate(points) if p["max_error"] <= max_error]
    if ok:
        pick, warning = min(ok, key=lambda i: (points[i]["parameters"], points[i]["max_error"])), None
    else:
        pick = min(range(len(points)), key=lambda i: (points[i]["max_error"], points[i]["parameters"]))
        warning = (
            f"no candidate ranks reach a relative error of {max_error:g}; kept the most accurate, "
            f"{_r(points[pick]['fine_ranks'])} ({points[pick]['max_error']:.3f})"
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


def format_sweep(sweep: dict[str, Any], with_warning: bool = True) -> str:
    chosen = sweep["chosen"]
    source = sweep.get("source_parameters")
    lines = [
        f"Rank sweep (coarse {_r(sweep['coarse_ranks'])}; pick: fewest parameters with worst site error "
        f"<= {sweep['max_error']:g}"
        + (f", among rings smaller than the source's {source:,} parameters)" if source else ")"),
        "",
        "| fine ranks | AdaRing params | worst site rel. error | overall rel. error | seconds | |",
        "|---|---|---|---|---|---|",
    ]
    for p in sweep["points"]:
        mark = "" if p["fine_ranks"] != chosen else "most accurate, above --max-error" if sweep["warning"] else "chosen"
        lines.append(
            f"| {_r(p['fine_ranks'])} | {p['parameters']:,} | {p['max_error']:.4f} | {p['overall_error']:.4f} | "
            f"{p['seconds']:.1f} | {mark} |"
        )
    for p in sweep.get("skipped", []):
        lines.append(f"| {_r(p['fine_ranks'])} | {p['parameters']:,} | — | — | — | not fitted: {p['reason']} |")
    if source:
        lines += ["", f"(the source run has {source:,} parameters)"]
    if with_warning and sweep.get("warning"):
        lines += ["", f"warning: {sweep['warning']}"]
    return "\n".join(lines) + "\n"


def plot_sweep(sweep: dict[str, Any], path: Path, title: str) -> None:
    """Relative error against AdaRing parameter count, one labelled point per fitted candidate; the source run's
    size as a labelled line, and the candidates not fitted because they are not smaller as grey ticks past it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = sweep["points"]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    xs = [p["parameters"] for p in pts]
    ax.plot(xs, [p["max_error"] for p in pts], marker="o", label="worst site")
    ax.plot(xs, [p["overall_error"] for p in pts], marker=".", linestyle="--", label="all sites (energy)")
    for p in pts:
        chosen = p["fine_ranks"] == sweep["chosen"]
        ax.annotate(
            _r(p["fine_ranks"]) + (" (chosen)" if chosen else ""),
            (p["parameters"], p["max_error"]),
            textcoords="offset points",
            xytext=(4, 6),
            fontsize=8,
            fontweight="bold" if chosen else "normal",
        )
    ax.axhline(
        sweep["max_error"], color="grey", linewidth=0.8, linestyle=":", label=f"--max-error {sweep['max_error']:g}"
    )
    _plot_source(ax, sweep)
    ax.set_xscale("log")
    ax.set_ylim(0, max(1.0, max(p["max_error"] for p in pts) * 1.05))
    ax.set_xlabel("AdaRing parameters (fine ranks R0,R1,R2; coarse fixed)")
    ax.set_ylabel("relative reconstruction error")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _plot_source(ax, sweep: dict[str, Any]) -> None:
    """The source run's size, and grey ticks (ranks, not fitted) for the candidates that are not smaller."""
    source = sweep.get("source_parameters")
    if not source:
        return
    ax.axvline(source, color="tab:red", linewidth=1.0, linestyle=":", label=f"source run: {source:,} parameters")
    larger = [p for p in sweep.get("skipped", []) if p["reason"] == "not smaller than the source"]
    if not larger:
        return
    xs = [p["parameters"] for p in larger]
    on_axis = ax.get_xaxis_transform()  # x in parameters, y in axes fractions: no error value is implied
    ax.plot(xs, [0.04] * len(xs), transform=on_axis, linestyle="none", marker="x", color="grey")
    ax.plot([], [], linestyle="none", marker="x", color="grey", label="not smaller than the source: not fitted")
    for p in larger:
        ax.annotate(
            _r(p["fine_ranks"]),
            (p["parameters"], 0.04),
            xycoords=on_axis,
            xytext=(3, 4),
            textcoords="offset points",
            fontsize=7,
            color="grey",
        )
    left = min([*xs, source, *(p["parameters"] for p in sweep["points"])]) / 1.5
    right = max([*xs, source]) * 1.5
    ax.axvspan(source, right, color="grey", alpha=0.08, linewidth=0)  # the sizes compress does not consider
    ax.set_xlim(left, right)


def _set_ring(ring: TensorRing, cores: list[np.ndarray], factor: float) -> None:
    with torch.no_grad():
        dtype = ring.g_in.dtype
        ring.g_in.copy_(torch.from_numpy(np.asarray(cores[0]) * factor).to(dtype))
        ring.g_lay.copy_(torch.from_numpy(np.asarray(cores[1])).to(dtype))
        ring.g_out.copy_(torch.from_numpy(np.asarray(cores[2])).to(dtype))


@dataclass
class Plan:
    """Everything ``compress_run`` checked before loading a model: the run, its sites, ranks and images."""

    record: RunRecord
    shapes: dict[str, tuple[int, int]]  # site key → (d, L), from the model config
    source_parameters: int
    fine_ranks: tuple[int, int, int] | None  # None: --ranks auto
    coarse_ranks: tuple[int, int, int]
    images: ImageSet
    warnings: list[str]


def site_shapes(record: RunRecord) -> dict[str, tuple[int, int]]:
    """(d, L) of every adapted site, from the open_clip config and the run's adapter settings: no weights loaded."""
    from .adapters.base import Placement, resolve_layers
    from .params import tower_shapes

    towers = tower_shapes(record.model_name)
    shapes = {}
    for tower in record.adapter.towers:
        width, depth = towers[tower]
        layers = resolve_layers(record.adapter.layers, depth)
        for site in record.adapter.site_kinds:
            shapes[Placement(tower, site, layers).key] = (width, len(layers))
    return shapes


def _parse_ranks(fine_ranks, coarse_ranks) -> tuple[tuple[int, int, int] | None, tuple[int, int, int]]:
    auto = isinstance(fine_ranks, str) and fine_ranks.strip().lower() == "auto"
    try:
        fine = None if auto else ring_ranks(fine_ranks, "ranks")
    except FieldError as exc:
        raise FieldError("ranks", exc.problem.replace(" (e.g. 2,4,2)", " (e.g. 2,4,2) or auto")) from None
    return fine, ring_ranks(coarse_ranks, "coarse_ranks")


def plan_compression(
    run_dir: str | Path,
    out: str | Path,
    fine_ranks: tuple[int, int, int] | str,
    coarse_ranks: tuple[int, int, int] | str = (1, 1, 1),
    *,
    images: str | None = None,
    images_limit: int = DEFAULT_IMAGES_LIMIT,
    allow_larger: bool = False,
    overwrite: bool = False,
) -> Plan:
    """Check every input compress needs — ranks against the sites' widths and the source's size, the output
    folder, the images — from run.json and the model config alone, so a mistake costs no load and no fit."""
    fine, coarse = _parse_ranks(fine_ranks, coarse_ranks)
    check_apart(out, run_dir, "run being compressed")
    check_target(out, overwrite)
    record = read_run(run_dir)
    if record.adapter.method != "arc" and getattr(record.adapter, "combinator", None) != "static":
        raise RingfoldError(
            f"{run_dir}: method {record.adapter.method!r} is not linear, so it has no dense A_l to compress; "
            "compress ARC or static AdaRing runs"
        )
    shapes = site_shapes(record)
    source = _source_parameters(record)
    check_ranks(shapes, coarse, "coarse_ranks")
    warnings = _check_fine_ranks(shapes, fine, coarse, source, allow_larger)
    from .models import openclip_transform

    found = find_images(record, images, images_limit, openclip_transform(record.preprocess))
    return Plan(record, shapes, source, fine, coarse, found, warnings)


def _source_parameters(record: RunRecord) -> int:
    """The source run's trainable numbers, counted on freshly built adapter modules (no model weights)."""
    from .params import parameter_rows

    return sum(row.total for row in parameter_rows(record.model_name, record.adapter))


def _check_fine_ranks(shapes, fine, coarse, source: int, allow_larger: bool) -> list[str]:
    """Refuse fine ranks that cannot be used or would grow the adapter; the warnings to keep when allowed."""
    if fine is None:  # auto: at least one candidate must be smaller than the source
        keep, skipped = partition_candidates(shapes, coarse, SWEEP_RANKS, source)
        if not keep:
            smallest = min(skipped, key=lambda p: p["parameters"])
            raise RingfoldError(
                f"--ranks auto: no candidate ring is smaller than the source run's {source:,} parameters (the "
                f"smallest, fine {_r(smallest['fine_ranks'])} + coarse {_r(coarse)}, has {smallest['parameters']:,}); "
                "compress cannot shrink this adapter — keep the source run"
            )
        return []
    check_ranks(shapes, fine, "ranks")
    total = adaring_parameters(shapes, fine, coarse)
    if total > MAX_RING_PARAMETERS:
        raise FieldError(
            "ranks",
            f"{_r(fine)}: the AdaRing run would hold {total:,} parameters, above the cap of "
            f"{MAX_RING_PARAMETERS:,}; pick smaller ranks",
        )
    if total <= source:
        return []
    if not allow_larger:
        raise RingfoldError(
            f"--ranks {_r(fine)} + --coarse-ranks {_r(coarse)}: the AdaRing run would have {total:,} parameters, "
            f"more than the source run's {source:,}; pick smaller ranks, use --ranks auto, or pass --allow-larger"
        )
    return [
        f"warning: the AdaRing run has {total:,} parameters, more than the source run's {source:,} (--allow-larger)"
    ]


def compress_run(
    run_dir: str | Path,
    out: str | Path,
    fine_ranks: tuple[int, int, int] | str,
    coarse_ranks: tuple[int, int, int] | str = (1, 1, 1),
    n_iter: int = 100,
    images_limit: int = DEFAULT_IMAGES_LIMIT,
    max_error: float = 0.2,
    log: Log | None = stderr_log,
    *,
    images: str | None = None,
    allow_larger: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write an AdaRing run at ``out`` approximating ``run_dir``'s adapters; return the report.

    The ranks are three positive integers each, as a sequence or as the command line's "R0,R1,R2";
    ``fine_ranks="auto"`` sweeps the ``SWEEP_RANKS`` smaller than the source and keeps the smallest within
    ``max_error`` (see ``rank_sweep``), or refuses. Agreement and accuracy are measured on up to
    ``images_limit`` real images: ``images`` (a folder) or the run's held-out split. Every input is checked
    first (``plan_compression``). Progress goes to ``log`` (stderr by default; None for silence). ``out``
    appears whole or not at all; an existing one is replaced only with ``overwrite`` and only when
    ringfold wrote it and nothing in it changed (``ringfold.ownership``).
    """
    plan = plan_compression(
        run_dir,
        out,
        fine_ranks,
        coarse_ranks,
        images=images,
        images_limit=images_limit,
        allow_larger=allow_larger,
        overwrite=overwrite,
    )
    record, loaded, source = load_adapted_model(run_dir)
    tensors, biases = _dense_stacks(source)
    if {k: t.shape[:2] for k, t in tensors.items()} != plan.shapes:
        raise RingfoldError(f"{run_dir}: the adapters do not match the sites run.json describes; re-run train")
    t0 = time.perf_counter()
    fine, fits, sweep = _fit_rings(plan, tensors, max_error, n_iter, log)
    seconds = time.perf_counter() - t0
    cfg, target_loaded, target = _new_adaring(record, fine, plan.coarse_ranks)
    sites = _load_rings(source, target, fits, tensors, biases)
    warnings = plan.warnings + _error_warnings(sites)
    if log:
        for line in warnings:
            log(line)
        log(f"compress: measuring agreement with the source run on {_images_phrase(plan.images)}")
    agreement = measure_agreement(plan.images, record, loaded.model, target_loaded.model, loaded.tokenizer)
    report = {
        "source_run": str(Path(run_dir).resolve()),
        "source_method": record.adapter.method,
        "fine_ranks": list(cfg.fine_ranks),
        "coarse_ranks": list(cfg.coarse_ranks),
        "ranks_chosen_by": "sweep" if plan.fine_ranks is None else "user",
        "sites": [asdict(s) for s in sites],
        "source_parameters": source.num_parameters(),
        "adaring_parameters": target.num_parameters(),
        "parameter_ratio": target.num_parameters() / max(1, source.num_parameters()),
        "agreement": agreement,
        "fit_seconds": seconds,
        "warnings": warnings,
        "weights": record.weights.describe(),
    }
    _write_run(out, record, cfg, target, report, sweep, overwrite)
    if sweep is not None:
        report["rank_sweep"] = sweep
    return report


def _new_adaring(record: RunRecord, fine: tuple[int, int, int], coarse: tuple[int, int, int]):
    """(config, frozen model, fresh static AdaRing adapters) at the source's towers, layers, sites and scale."""
    from .models import reload_clip

    cfg = AdaRingConfig(
        towers=record.adapter.towers,
        layers=record.adapter.layers,
        sites=record.adapter.sites,
        scale=record.adapter.scale,
        fine_ranks=fine,
        coarse_ranks=coarse,
    )
    loaded = reload_clip(record.model_name, record.weights, record.weights_fingerprint)
    return cfg, loaded, inject(loaded.model, cfg)


def _images_phrase(images: ImageSet) -> str:
    return images.describe() if images.pixels is not None else "no real images (not measured)"


def _dense_stacks(source) -> tuple[dict[str, np.ndarray], dict[str, torch.Tensor]]:
    """Each site's dense A_l stacked as 𝒜 (d, L, d) in float64, and its per-layer biases."""
    tensors, biases = {}, {}
    for key, adapter in source.adapters.items():
        with torch.no_grad():
            mats, bias = zip(*(adapter.dense(i) for i in range(len(source.placements[key].blocks))), strict=True)
            tensors[key] = torch.stack(mats, dim=1).double().numpy()
            biases[key] = torch.stack(bias)
    return tensors, biases


def _fit_rings(plan: Plan, tensors, max_error: float, n_iter: int, log: Log | None):
    """(fine ranks, fits per site, sweep record or None): the sweep for auto — refused when no ring smaller than
    the source reaches ``max_error`` — or one fit per site at the user's ranks."""
    coarse = plan.coarse_ranks
    if plan.fine_ranks is not None:
        fits = {}
        for n, (key, tensor) in enumerate(tensors.items(), 1):
            fits[key] = fit_site(tensor, plan.fine_ranks, coarse, n_iter, log, f"[{n}/{len(tensors)}] {key} ")
        return plan.fine_ranks, fits, None
    if log:
        fitted, skipped = partition_candidates(plan.shapes, coarse, SWEEP_RANKS, plan.source_parameters)
        why = "; ".join(f"{_r(s['fine_ranks'])} {s['reason']}" for s in skipped)
        log(
            f"compress: sweeping fine ranks {', '.join(_r(r) for r in fitted)} on {len(tensors)} sites; not fitted: "
            f"{why or 'none'} (the source run has {plan.source_parameters:,} parameters)"
        )
    sweep, fits = rank_sweep(
        tensors, coarse, SWEEP_RANKS, max_error, n_iter, log=log, source_parameters=plan.source_parameters
    )
    if log:
        log(format_sweep(sweep, with_warning=False).rstrip())
    if sweep["warning"]:
        best = next(p for p in sweep["points"] if p["fine_ranks"] == sweep["chosen"])
        raise RingfoldError(
            f"--ranks auto: no ring smaller than the source run's {plan.source_parameters:,} parameters reaches "
            f"--max-error {max_error:g}; the best, {_r(best['fine_ranks'])} ({best['parameters']:,} parameters), "
            f"has worst site rel. error {best['max_error']:.3f}; raise --max-error (e.g. to "
            f"{min(1.0, np.ceil(best['max_error'] * 100) / 100):g}) or keep the source run"
        )
    return tuple(sweep["chosen"]), fits, sweep


def _load_rings(source, target, fits, tensors, biases) -> list[SiteCompression]:
    """Copy each site's fitted rings and biases into the new AdaRing adapters; one record per site."""
    sites = []
    for key, adapter in source.adapters.items():
        fit, new = fits[key], target.adapters[key]
        _set_ring(new.fine, fit.fine, 2.0)  # static combinator starts at α = β = ½
        _set_ring(new.coarse, fit.coarse, 2.0)
        with torch.no_grad():
            new.mix.zero_()
            if new.bias is not None:
                new.bias.copy_(biases[key])
        d, num_layers, _ = tensors[key].shape
        sites.append(
            SiteCompression(
                key,
                d,
                num_layers,
                dense_parameters=num_layers * d * d,
                source_parameters=sum(p.numel() for p in adapter.parameters()),
                ring_parameters=sum(p.numel() for p in new.parameters()),
                fine_error=fit.fine_error,
                final_error=fit.final_error,
            )
        )
    return sites


def _error_warnings(sites: list[SiteCompression]) -> list[str]:
    worst = max(sites, key=lambda s: s.final_error, default=None)
    if worst is None or worst.final_error <= HIGH_ERROR:
        return []
    return [
        f"warning: the ring keeps only {max(0.0, 1 - worst.final_error**2):.0%} of the adapter's energy "
        f"at {worst.key} (rel. error {worst.final_error:.2f}); try larger --ranks or `--ranks auto`"
    ]


def _write_run(
    out, record: RunRecord, cfg: AdaRingConfig, target, report: dict[str, Any], sweep, overwrite: bool
) -> None:
    new_record = RunRecord(
        model_name=record.model_name,
        weights=record.weights,
        weights_fingerprint=record.weights_fingerprint,
        preprocess=record.preprocess,
        adapter=cfg,
        classnames=record.classnames,
        templates=record.templates,
        data=record.data,
        train={"compressed_from": report["source_run"]},
        metrics={"compression": report},
    )
    with owned_directory(Path(out), "ringfold compress", overwrite) as tmp:
        save_run(tmp, new_record, target)
        write_json(tmp / "compress_report.json", report)
        write_text(tmp / "compress_report.md", format_report(report, sweep))
        if sweep is not None:
            write_json(tmp / "rank_sweep.json", sweep)
            plot_sweep(sweep, tmp / "rank_sweep.png", f"{record.model_name}: AdaRing ranks vs relative error")


def format_report(report: dict[str, Any], sweep: dict[str, Any] | None = None) -> str:
    lines = [
        f"# Compression report — {report['source_method']} → AdaRing",
        "",
        f"- weights: {report['weights']}",
        f"- ranks: fine {report['fine_ranks']}, coarse {report['coarse_ranks']}",
        f"- parameters: {report['source_parameters']:,} → {report['adaring_parameters']:,} "
        f"(ratio {report['parameter_ratio']:.3f})",
        "",
        "| site | d | L | dense L·d² | source params | AdaRing params | rel. error (fine) | rel. error (fine+coarse) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in report["sites"]:
        lines.append(
            f"| {s['key']} | {s['dim']} | {s['layers']} | {s['dense_parameters']:,} | {s['source_parameters']:,} | "
            f"{s['ring_parameters']:,} | {s['fine_error']:.3g} | {s['final_error']:.3g} |"
        )
    lines += ["", "Reconstruction errors are of the adapter weights; the figures below are of the models' outputs.", ""]
    lines += agreement_lines(report["agreement"])
    lines += ["", *report.get("warnings", [])] if report.get("warnings") else []
    sweep = sweep if sweep is not None else report.get("rank_sweep")
    if sweep:
        lines += ["", format_sweep(sweep).rstrip()]
    return "\n".join(lines) + "\n"
