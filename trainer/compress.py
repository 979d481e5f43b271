"""``ringfold compress``: turn dense per-layer adapters into AdaRing tensor-ring cores (DESIGN §4.5).

For each tower × site kind, the dense matrices A_l of a foldable run (ARC
composed to ``D diag(λ_l) Dᵀ``, or a static AdaRing) are stacked into
``𝒜 ∈ R^{d × L × d}`` and fitted with ringfold's tensor-ring solver
(``tensor_ring.py``: TR-SVD and seeded starts, ALS on small Gram matrices) at
the fine ranks, and the residual at the coarse ranks. With the combinator at
its 50/50 start, ``A_l ≈ ½·(2·fine) + ½·(2·coarse)``, so the result is an
ordinary AdaRing run that trains further, exports and folds like any other.

``ranks="auto"`` fits a few candidate fine ranks (``SWEEP_RANKS``), reports
relative error against parameter count (``rank_sweep.{json,png}`` in the
output run) and keeps the smallest candidate whose worst site error is at most
``max_error`` — or the most accurate one, with a warning.
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

from ringfold.atomic import atomic_directory, atomic_path, write_json, write_text
from ringfold.errors import FieldError, RingfoldError

from .adapters import inject
from .adapters.adaring import TensorRing
from .config import AdaRingConfig, ring_ranks
from .run import RunRecord, load_adapted_model, save_run
from .tensor_ring import Prepared, fit_tensor_ring, ring_parameters, tr_to_tensor

#: fine ranks tried by ``--ranks auto``, smallest first
SWEEP_RANKS: tuple[tuple[int, int, int], ...] = ((1, 1, 1), (2, 2, 2), (2, 4, 2), (4, 4, 4), (4, 8, 4), (8, 8, 8))
#: a site whose relative error is above this gets a warning
HIGH_ERROR = 0.5
#: ALS sweeps each start runs before the best one goes on alone
PROBE_SWEEPS = 6
#: at most one progress line per this many seconds of ALS sweeps (a site still ends with its summary line)
PROGRESS_EVERY_S = 2.0

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
    """Fit every candidate fine ranks on every site; return the sweep record and the chosen candidate's fits.

    The choice is the candidate with the fewest parameters whose worst site error (fine + coarse) is at most
    ``max_error``; if none is, the one with the lowest worst-site error, and the record says so (``warning``).
    """
    shapes = {k: (t.shape[0], t.shape[1]) for k, t in tensors.items()}
    points, fits = [], []
    for n, ranks in enumerate(candidates, 1):
        t0 = time.perf_counter()
        site_fits = {}
        for key, tensor in tensors.items():
            site_fits[key] = fit_site(tensor, ranks, coarse_ranks, n_iter, log, f"[{n}/{len(candidates)}] {key} ")
        total = sum(f.norm_sq for f in site_fits.values())
        points.append(
            {
                "fine_ranks": list(ranks),
                "parameters": adaring_parameters(shapes, ranks, coarse_ranks, bias),
                "max_error": max(f.final_error for f in site_fits.values()),
                "overall_error": float(np.sqrt(sum(f.residual_sq for f in site_fits.values()) / total))
                if total
                else 0.0,
                "site_errors": {k: f.final_error for k, f in site_fits.items()},
                "seconds": time.perf_counter() - t0,
            }
        )
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
        "chosen": points[pick]["fine_ranks"],
        "warning": warning,
        "source_parameters": source_parameters,
    }
    return record, fits[pick]


def format_sweep(sweep: dict[str, Any], with_warning: bool = True) -> str:
    chosen = sweep["chosen"]
    lines = [
        f"Rank sweep (coarse {_r(sweep['coarse_ranks'])}; pick: fewest parameters with worst site error "
        f"<= {sweep['max_error']:g})",
        "",
        "| fine ranks | AdaRing params | worst site rel. error | overall rel. error | seconds | |",
        "|---|---|---|---|---|---|",
    ]
    for p in sweep["points"]:
        mark = "chosen" if p["fine_ranks"] == chosen else ""
        lines.append(
            f"| {_r(p['fine_ranks'])} | {p['parameters']:,} | {p['max_error']:.4f} | {p['overall_error']:.4f} | "
            f"{p['seconds']:.1f} | {mark} |"
        )
    if sweep.get("source_parameters"):
        lines += ["", f"(the source run has {sweep['source_parameters']:,} parameters)"]
    if with_warning and sweep.get("warning"):
        lines += ["", f"warning: {sweep['warning']}"]
    return "\n".join(lines) + "\n"


def plot_sweep(sweep: dict[str, Any], path: Path, title: str) -> None:
    """Relative error against AdaRing parameter count, one labelled point per candidate ranks."""
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
    if sweep.get("source_parameters"):
        ax.axvline(sweep["source_parameters"], color="tab:red", linewidth=0.8, linestyle=":", label="source run")
    ax.set_xscale("log")
    ax.set_ylim(0, max(1.0, max(p["max_error"] for p in pts) * 1.05))
    ax.set_xlabel("AdaRing parameters (fine ranks R0,R1,R2; coarse fixed)")
    ax.set_ylabel("relative reconstruction error")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _set_ring(ring: TensorRing, cores: list[np.ndarray], factor: float) -> None:
    with torch.no_grad():
        dtype = ring.g_in.dtype
        ring.g_in.copy_(torch.from_numpy(np.asarray(cores[0]) * factor).to(dtype))
        ring.g_lay.copy_(torch.from_numpy(np.asarray(cores[1])).to(dtype))
        ring.g_out.copy_(torch.from_numpy(np.asarray(cores[2])).to(dtype))


def compress_run(
    run_dir: str | Path,
    out: str | Path,
    fine_ranks: tuple[int, int, int] | str,
    coarse_ranks: tuple[int, int, int] | str = (1, 1, 1),
    n_iter: int = 100,
    ref_count: int = 16,
    max_error: float = 0.2,
    log: Log | None = stderr_log,
) -> dict[str, Any]:
    """Write an AdaRing run at ``out`` approximating ``run_dir``'s adapters; return the report.

    The ranks are three positive integers each, as a sequence or as the command line's "R0,R1,R2";
    ``fine_ranks="auto"`` sweeps ``SWEEP_RANKS`` and keeps the smallest within ``max_error`` (see
    ``rank_sweep``). Progress goes to ``log`` (stderr by default; None for silence). ``out`` appears
    whole or not at all.
    """
    auto = isinstance(fine_ranks, str) and fine_ranks.strip().lower() == "auto"
    try:
        fine_ranks = None if auto else ring_ranks(fine_ranks, "ranks")
    except FieldError as exc:
        raise FieldError("ranks", exc.problem.replace(" (e.g. 2,4,2)", " (e.g. 2,4,2) or auto")) from None
    coarse_ranks = ring_ranks(coarse_ranks, "coarse_ranks")
    out = Path(out)
    if out.exists():
        raise RingfoldError(f"{out}: already exists; choose another --out")
    record, loaded, source = load_adapted_model(run_dir)
    if not source.foldable:
        raise RingfoldError(
            f"{run_dir}: method {record.adapter.method!r} is not linear, so it has no dense A_l to compress; "
            "compress ARC or static AdaRing runs"
        )
    tensors, biases = {}, {}
    for key, adapter in source.adapters.items():
        with torch.no_grad():
            mats, bias = zip(*(adapter.dense(i) for i in range(len(source.placements[key].blocks))), strict=True)
            tensors[key] = torch.stack(mats, dim=1).double().numpy()  # (d, L, d)
            biases[key] = torch.stack(bias)
    t0 = time.perf_counter()
    sweep = None
    if auto:
        if log:
            log(f"compress: sweeping fine ranks {', '.join(_r(r) for r in SWEEP_RANKS)} on {len(tensors)} sites")
        sweep, fits = rank_sweep(
            tensors, coarse_ranks, SWEEP_RANKS, max_error, n_iter, log=log, source_parameters=source.num_parameters()
        )
        fine_ranks = tuple(sweep["chosen"])
        if log:
            log(format_sweep(sweep, with_warning=False).rstrip())
    else:
        fits = {}
        for n, (key, tensor) in enumerate(tensors.items(), 1):
            fits[key] = fit_site(tensor, fine_ranks, coarse_ranks, n_iter, log, f"[{n}/{len(tensors)}] {key} ")
    seconds = time.perf_counter() - t0
    cfg = AdaRingConfig(
        towers=record.adapter.towers,
        layers=record.adapter.layers,
        sites=record.adapter.sites,
        scale=record.adapter.scale,
        fine_ranks=fine_ranks,
        coarse_ranks=coarse_ranks,
    )
    from .models import reload_clip

    target_loaded = reload_clip(record.model_name, record.weights, record.weights_fingerprint)
    target = inject(target_loaded.model, cfg)
    sites: list[SiteCompression] = []
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
    worst = max(sites, key=lambda s: s.final_error, default=None)
    warnings = []
    if worst is not None and worst.final_error > HIGH_ERROR:
        warnings.append(
            f"warning: the ring keeps only {max(0.0, 1 - worst.final_error**2):.0%} of the adapter's energy "
            f"at {worst.key} (rel. error {worst.final_error:.2f}); try larger --ranks or `--ranks auto`"
        )
    if sweep and sweep["warning"]:
        warnings.append(f"warning: {sweep['warning']}")
    if log:
        for line in warnings:
            log(line)
        log("compress: checking parity against the source run")
    parity = _parity(record, loaded.model, target_loaded.model, loaded.tokenizer, ref_count)
    report = {
        "source_run": str(Path(run_dir).resolve()),
        "source_method": record.adapter.method,
        "fine_ranks": list(cfg.fine_ranks),
        "coarse_ranks": list(cfg.coarse_ranks),
        "ranks_chosen_by": "sweep" if auto else "user",
        "sites": [asdict(s) for s in sites],
        "source_parameters": source.num_parameters(),
        "adaring_parameters": target.num_parameters(),
        "parameter_ratio": target.num_parameters() / max(1, source.num_parameters()),
        "parity_vs_source": parity,
        "fit_seconds": seconds,
        "warnings": warnings,
        "weights": record.weights.describe(),
    }
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
    with atomic_directory(out) as tmp:
        save_run(tmp, new_record, target)
        write_json(tmp / "compress_report.json", report)
        write_text(tmp / "compress_report.md", format_report(report, sweep))
        if sweep is not None:
            write_json(tmp / "rank_sweep.json", sweep)
            plot_sweep(sweep, tmp / "rank_sweep.png", f"{record.model_name}: AdaRing ranks vs relative error")
    if sweep is not None:
        report["rank_sweep"] = sweep
    return report


@torch.no_grad()
def _parity(record: RunRecord, source_model, target_model, tokenizer, count: int) -> dict[str, Any]:
    """Compressed vs source model on a deterministic reference set (synthetic images, open_clip transform)."""
    from ringfold.demo_data import smooth_noise_images
    from ringfold.runtime.parity import compare

    from .head import build_classifier, classifier_outputs
    from .models import openclip_transform
    from .text import class_embeddings

    transform = openclip_transform(record.preprocess)
    pixels = torch.stack([transform(img) for img in smooth_noise_images(count, record.preprocess.size)])
    outputs = []
    for model in (source_model, target_model):
        emb = class_embeddings(model, tokenizer, record.classnames, record.templates)
        outputs.append(classifier_outputs(build_classifier(model, emb), pixels))
    comp = compare("AdaRing (compressed) vs source run", "fp32", *outputs[1], *outputs[0])
    return {k: v for k, v in comp.to_dict().items() if k not in ("tolerance", "passed", "failures")}


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
    p = report["parity_vs_source"]
    lines += [
        "",
        f"Parity vs the source run on {p['n']} reference images: max |Δlogit| {p['max_abs_logit']:.3g}, "
        f"min embedding cosine {p['cosine_min']:.6f}, top-1 agreement {p['top1_agreement']:.1%}.",
    ]
    lines += ["", *report.get("warnings", [])] if report.get("warnings") else []
    sweep = sweep if sweep is not None else report.get("rank_sweep")
    if sweep:
        lines += ["", format_sweep(sweep).rstrip()]
    return "\n".join(lines) + "\n"
