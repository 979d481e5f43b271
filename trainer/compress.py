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

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ringfold.atomic import write_json, write_text
from ringfold.errors import FieldError, RingfoldError
from ringfold.ownership import check_apart, check_target, owned_directory

from .adapters import inject
from .adapters.adaring import TensorRing
from .adapters.base import Placement, resolve_layers
from .compress_fit import (
    MAX_RING_PARAMETERS,
    SWEEP_RANKS,
    Log,
    adaring_parameters,
    check_ranks,
    fit_site,
    partition_candidates,
    rank_sweep,
    ranks_text,
    stderr_log,
)
from .compress_images import DEFAULT_IMAGES_LIMIT, ImageSet, find_images, measure_agreement
from .compress_report import format_report, format_sweep, plot_sweep
from .config import AdaRingConfig, ring_ranks
from .models import openclip_transform, reload_clip
from .params import parameter_rows, tower_shapes
from .run import RunRecord, load_adapted_model, read_run, save_run

#: a site whose relative error is above this gets a warning
HIGH_ERROR = 0.5


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
    check_apart(out, run_dir, "run being compressed", inside_ok=True)
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

    found = find_images(record, images, images_limit, openclip_transform(record.preprocess))
    return Plan(record, shapes, source, fine, coarse, found, warnings)


def _source_parameters(record: RunRecord) -> int:
    """The source run's trainable numbers, counted on freshly built adapter modules (no model weights)."""
    return sum(row.total for row in parameter_rows(record.model_name, record.adapter))


def _check_fine_ranks(shapes, fine, coarse, source: int, allow_larger: bool) -> list[str]:
    """Refuse fine ranks that cannot be used or would grow the adapter; the warnings to keep when allowed."""
    if fine is None:  # auto: at least one candidate must be smaller than the source
        keep, skipped = partition_candidates(shapes, coarse, SWEEP_RANKS, source)
        if not keep:
            smallest = min(skipped, key=lambda p: p["parameters"])
            raise RingfoldError(
                f"--ranks auto: no candidate ring is smaller than the source run's {source:,} parameters (the "
                f"smallest, fine {ranks_text(smallest['fine_ranks'])} + coarse {ranks_text(coarse)}, "
                f"has {smallest['parameters']:,}); compress cannot shrink this adapter — keep the source run"
            )
        return []
    check_ranks(shapes, fine, "ranks")
    total = adaring_parameters(shapes, fine, coarse)
    if total > MAX_RING_PARAMETERS:
        raise FieldError(
            "ranks",
            f"{ranks_text(fine)}: the AdaRing run would hold {total:,} parameters, above the cap of "
            f"{MAX_RING_PARAMETERS:,}; pick smaller ranks",
        )
    if total <= source:
        return []
    if not allow_larger:
        raise RingfoldError(
            f"--ranks {ranks_text(fine)} + --coarse-ranks {ranks_text(coarse)}: the AdaRing run would have "
            f"{total:,} parameters, more than the source run's {source:,}; "
            "pick smaller ranks, use --ranks auto, or pass --allow-larger"
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
        why = "; ".join(f"{ranks_text(s['fine_ranks'])} {s['reason']}" for s in skipped)
        log(
            f"compress: sweeping fine ranks {', '.join(ranks_text(r) for r in fitted)} on {len(tensors)} sites; "
            f"not fitted: {why or 'none'} (the source run has {plan.source_parameters:,} parameters)"
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
            f"--max-error {max_error:g}; the best, {ranks_text(best['fine_ranks'])} "
            f"({best['parameters']:,} parameters), has worst site rel. error {best['max_error']:.3f}; "
            f"raise --max-error (e.g. to "
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
