"""``ringfold compress``: turn dense per-layer adapters into AdaRing tensor-ring cores (DESIGN §4).

For each tower × site kind, the dense matrices A_l of a foldable run (ARC
composed to ``D diag(λ_l) Dᵀ``, or a static AdaRing) are stacked into
``𝒜 ∈ R^{d × L × d}``, decomposed with tensorly's tensor-ring ALS at the
fine ranks, and the residual at the coarse ranks. With the combinator at its
50/50 start, ``A_l ≈ ½·(2·fine) + ½·(2·coarse)``, so the result is an ordinary
AdaRing run that trains further, exports and folds like any other.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ringfold.atomic import write_json, write_text
from ringfold.errors import RingfoldError

from .adapters import inject
from .adapters.adaring import TensorRing
from .config import AdaRingConfig, ring_ranks
from .run import RunRecord, load_adapted_model, save_run


def tr_decompose(tensor: np.ndarray, ranks: tuple[int, int, int], n_iter: int = 100, restarts: int = 3, seed: int = 0):
    """Best of a few tensor-ring ALS runs: three cores (R0×d×R1, R1×L×R2, R2×d×R0) and the relative error."""
    import tensorly as tl
    from tensorly.decomposition import tensor_ring_als

    r0, r1, r2 = ranks
    norm = float(np.linalg.norm(tensor))
    if norm == 0.0:
        d, num_layers, _ = tensor.shape
        return [np.zeros((r0, d, r1)), np.zeros((r1, num_layers, r2)), np.zeros((r2, d, r0))], 0.0
    best, best_err = None, np.inf
    for k in range(restarts):
        cores = tensor_ring_als(tensor, rank=[r0, r1, r2, r0], n_iter_max=n_iter, tol=1e-10, random_state=seed + k)
        cores = list(cores.factors if hasattr(cores, "factors") else cores)
        err = float(np.linalg.norm(tensor - tl.tr_to_tensor(cores)) / norm)
        if err < best_err:
            best, best_err = cores, err
        if best_err < 1e-9:
            break
    return best, best_err


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
        ring.g_in.copy_(torch.from_numpy(np.asarray(cores[0]) * factor))
        ring.g_lay.copy_(torch.from_numpy(np.asarray(cores[1])))
        ring.g_out.copy_(torch.from_numpy(np.asarray(cores[2])))


def compress_run(
    run_dir: str | Path,
    out: str | Path,
    fine_ranks: tuple[int, int, int] | str,
    coarse_ranks: tuple[int, int, int] | str = (1, 1, 1),
    n_iter: int = 100,
    ref_count: int = 16,
) -> dict[str, Any]:
    """Write an AdaRing run at ``out`` approximating ``run_dir``'s adapters; return the report.

    The ranks are three positive integers each, as a sequence or as the command line's "R0,R1,R2".
    """
    fine_ranks, coarse_ranks = ring_ranks(fine_ranks, "ranks"), ring_ranks(coarse_ranks, "coarse_ranks")
    out = Path(out)
    if out.exists():
        raise RingfoldError(f"{out}: already exists; choose another --out")
    record, loaded, source = load_adapted_model(run_dir)
    if not source.foldable:
        raise RingfoldError(
            f"{run_dir}: method {record.adapter.method!r} is not linear, so it has no dense A_l to compress; "
            "compress ARC or static AdaRing runs"
        )
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
        placement = source.placements[key]
        with torch.no_grad():
            mats, biases = zip(*(adapter.dense(i) for i in range(len(placement.blocks))), strict=True)
            tensor = torch.stack(mats, dim=1).double().numpy()  # (d, L, d)
            bias = torch.stack(biases)
        fine, fine_err = tr_decompose(tensor, cfg.fine_ranks, n_iter)
        import tensorly as tl

        residual = tensor - tl.tr_to_tensor(fine)
        coarse, _ = tr_decompose(residual, cfg.coarse_ranks, n_iter)
        approx = tl.tr_to_tensor(fine) + tl.tr_to_tensor(coarse)
        final_err = float(np.linalg.norm(tensor - approx) / max(np.linalg.norm(tensor), 1e-30))
        new = target.adapters[key]
        _set_ring(new.fine, fine, 2.0)  # static combinator starts at α = β = ½
        _set_ring(new.coarse, coarse, 2.0)
        with torch.no_grad():
            new.mix.zero_()
            new.bias.copy_(bias)
        d, num_layers, _ = tensor.shape
        sites.append(
            SiteCompression(
                key,
                d,
                num_layers,
                dense_parameters=num_layers * d * d,
                source_parameters=sum(p.numel() for p in adapter.parameters()),
                ring_parameters=sum(p.numel() for p in new.parameters()),
                fine_error=fine_err,
                final_error=final_err,
            )
        )
    parity = _parity(record, loaded.model, target_loaded.model, loaded.tokenizer, ref_count)
    report = {
        "source_run": str(Path(run_dir).resolve()),
        "source_method": record.adapter.method,
        "fine_ranks": list(cfg.fine_ranks),
        "coarse_ranks": list(cfg.coarse_ranks),
        "sites": [asdict(s) for s in sites],
        "source_parameters": source.num_parameters(),
        "adaring_parameters": target.num_parameters(),
        "parameter_ratio": target.num_parameters() / max(1, source.num_parameters()),
        "parity_vs_source": parity,
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
    save_run(out, new_record, target)
    write_json(out / "compress_report.json", report)
    write_text(out / "compress_report.md", format_report(report))
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


def format_report(report: dict[str, Any]) -> str:
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
    return "\n".join(lines) + "\n"
