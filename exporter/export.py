"""``ringfold export RUN/ --out BUNDLE/``: rebuild, fold, bake the head, export ONNX, write the bundle.

The bundle is assembled in a temporary sibling directory and renamed into
place at the end, so a killed export never leaves a bundle that loads.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import ringfold
from ringfold.atomic import hashed_once, write_text
from ringfold.errors import RingfoldError
from ringfold.ownership import check_apart, check_target, owned_directory
from ringfold.runtime.backends.onnxruntime.model import OnnxModel
from ringfold.runtime.bundle.spec import (
    BUNDLE_FORMAT,
    BUNDLE_FORMAT_VERSION,
    LABELS_FILE,
    PREPROCESS_FILE,
    REFERENCE_FILE,
)
from ringfold.runtime.bundle.writer import BundleWriter
from ringfold.runtime.deploy.deepstream import labels_line
from ringfold.runtime.infer.bench import measure
from ringfold.runtime.parity.metrics import compare
from ringfold.runtime.pixels.images import load_image
from ringfold.runtime.vocab.class_list import check_class_names
from ringfold.trainer.head import build_classifier, classifier_outputs
from ringfold.trainer.models import openclip_transform, reload_clip
from ringfold.trainer.run import RunRecord, library_versions, load_adapted_model, read_run
from ringfold.trainer.text import class_embeddings

from . import reference as ref_mod
from . import text_export
from .fold import FoldReport, fold_adapters, unfold_is_clean
from .onnx_export import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAMES, export_onnx, op_histogram
from .precision import (
    CalibrationSet,
    PrecisionRequest,
    check_calibration,
    failure_reason,
    run_variant,
    variant_report,
    write_variants,
)
from .raw_input import add_raw_input

MODEL_FILE = "model.onnx"
BASE_MODEL_FILE = "base_model.onnx"
REPORT_FILE = "export_report.md"


@dataclass
class ExportResult:
    bundle: Path
    fold: FoldReport
    seconds: float
    onnx_vs_torch_max_abs: float
    manifest: dict[str, Any]
    reference: str = ""  # what the figures were measured on (ReferencePlan.describe)
    steps_s: dict[str, float] = field(default_factory=dict)  # seconds per step, the last one included

    def summary(self) -> str:
        """One line: where the bundle is, whether the adapters folded, ONNX Runtime vs PyTorch on which images."""
        fold = self.fold
        state = (
            "fully folded (graph = base model + head)"
            if fold.fully_folded
            else f"NOT fully folded: {fold.kept_sites} sites kept in the graph ({', '.join(fold.kept_methods)})"
        )
        return (
            f"bundle written to {self.bundle} in {self.seconds:.1f}s — {state}; "
            f"ONNX Runtime vs PyTorch max |Δlogit| {self.onnx_vs_torch_max_abs:.2g}"
            + (f" on the reference set: {self.reference}" if self.reference else "")
        )


@dataclass
class _Inputs:
    """Everything the export reads besides the model, checked before the model loads."""

    record: RunRecord
    reference: ref_mod.ReferencePlan
    calibration: CalibrationSet | None


def _validate_inputs(
    run_dir: str | Path,
    ref_images: str | None,
    ref_count: int,
    synthetic_ref: bool,
    precision: PrecisionRequest,
    raw_input: Sequence[str] = (),
) -> _Inputs:
    """The run record, the reference images and the calibration folder, each checked now: a typo, a moved
    dataset or an empty folder is a one-line refusal in a second, never found after the fp32 export.

    The run's class names become labels.json (and, with ``raw_input``, DeepStream's label file): a name
    those files cannot carry is refused here, not when the bundle is written."""
    record = read_run(run_dir)
    check_class_names(record.classnames, f"{Path(run_dir) / 'run.json'}: classnames")
    if raw_input:
        labels_line(record.classnames)
    reference = ref_mod.plan_reference(record, ref_images, ref_count, synthetic=synthetic_ref)
    return _Inputs(record, reference, check_calibration(precision))


def export_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    ref_images: str | None = None,
    ref_count: int = 16,
    synthetic_ref: bool = False,
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
    progress: bool = True,
    precision: PrecisionRequest | None = None,
    include_base: bool = False,
    raw_input: Sequence[str] = (),
    text: bool = True,
) -> ExportResult:
    """Export ``run_dir`` as a bundle in ``out``. The reference set is the run's held-out images, or
    ``ref_images``; ``synthetic_ref`` asks for generated images instead (numerics only, no accuracy)."""
    t0 = time.time()
    clock = _StepClock()
    out = Path(out)
    check_apart(out, run_dir, "run being exported", inside_ok=True)
    check_target(out, overwrite)  # before the long work: absent, or --overwrite and wholly ringfold's
    precision = precision or PrecisionRequest()
    inputs = _validate_inputs(run_dir, ref_images, ref_count, synthetic_ref, precision, raw_input)
    steps = _Progress(progress, total=7)
    clock.lap("validate_inputs")
    record, loaded, adapters = load_adapted_model(run_dir)
    steps.advance("rebuilt frozen model + adapters")
    clock.lap("load_model")
    class_emb = class_embeddings(loaded.model, loaded.tokenizer, record.classnames, record.templates).detach()
    size = record.preprocess.size  # (height, width)
    steps.advance("class embeddings from the adapted text tower")
    clock.lap("class_embeddings")

    with (
        hashed_once() as final,
        owned_directory(out, "ringfold export", overwrite) as tmp,
        tempfile.TemporaryDirectory() as scratch,
    ):
        ref = _fold_on_reference(loaded, record, class_emb, inputs.reference, Path(scratch), tmp, ref_count, text)
        steps.advance(f"folded {ref.fold.folded_sites} adapter sites")
        clock.lap("reference_and_fold")

        export_onnx(ref.folded, size, tmp / MODEL_FILE, opset=opset)
        steps.advance("exported ONNX + onnx.checker")
        clock.lap("onnx_export")

        writer = BundleWriter(tmp)
        fp32_out = _write_reference(writer, tmp, record, ref)
        onnx_diff = float(np.abs(fp32_out["logits"] - ref.logits).max())
        steps.advance("reference set + ONNX Runtime check")
        clock.lap("reference_and_ort_fp32")
        variants, failed = write_variants(tmp, precision, record.preprocess, inputs.calibration)
        clock.lap("variants_convert")
        variant_checks = _check_variants(tmp, variants, failed, ref, fp32_out)
        steps.advance(f"{len(variants) - 1} reduced-precision variant(s)")
        clock.lap("variants_check")
        manifest, text_skipped = _bundle_manifest(
            tmp, record, ref, inputs.reference, variants, opset, raw_input, include_base, adapters.num_parameters()
        )
        clock.lap("text_tower_and_extras")
        manifest["export"] = {
            "seconds": round(time.time() - t0, 2),
            "onnx_vs_torch_max_abs_logit": onnx_diff,
            "variants_vs_torch": variant_checks,
            "steps_s": clock.laps,  # where the time went (time.perf_counter), for `export` speed work
        }
        if failed:
            manifest["export"]["failed_variants"] = failed
        if text_skipped:
            manifest["export"]["text_skipped"] = text_skipped
        described = inputs.reference.describe(len(ref.names))
        report = _report(record, ref.fold, manifest, onnx_diff, described) + variant_report(manifest)
        write_text(tmp / REPORT_FILE, report + text_export.report_lines(manifest))
        clock.lap("report")
        final.start()  # the bundle's files are written: manifest, verify and ownership record hash each once
        writer.finish(manifest)  # hashes, validates and re-reads the bundle as a device would
        steps.advance(f"bundle written to {out}")
    steps.close()
    clock.lap("hash_verify_rename")
    return ExportResult(out, ref.fold, time.time() - t0, onnx_diff, manifest, described, clock.laps)


@dataclass
class _Reference:
    """The reference images and the PyTorch outputs on them, unfolded (the truth) and folded, and the fold."""

    refs: list[Any]  # the reference images (path, label)
    names: list[str]  # their file names in the bundle
    pixels: torch.Tensor
    logits: np.ndarray  # unfolded adapted model
    embedding: np.ndarray
    logits_folded: np.ndarray
    embedding_folded: np.ndarray
    fold: FoldReport
    model: torch.nn.Module  # the adapted CLIP model, folded in place
    folded: torch.nn.Module  # the folded classifier, the graph to export
    text_check: Any  # the text tower's unfolded reference, or None
    text_skipped: str | None  # why the text tower is not exported, or None


def _fold_on_reference(
    loaded, record: RunRecord, class_emb, plan: ref_mod.ReferencePlan, scratch: Path, tmp: Path, count: int, text: bool
) -> _Reference:
    """Store the reference images in the bundle, run the unfolded model on them, fold the adapters, run it again."""
    model = loaded.model
    size = record.preprocess.size
    transform = openclip_transform(record.preprocess)
    refs = plan.images(scratch, count, size)
    ref_names = ref_mod.store_reference_images(refs, tmp, max_side=2 * max(size))
    pixels = torch.stack([transform(load_image(tmp / name)) for name in ref_names])
    unfolded = build_classifier(model, class_emb)
    logits_unfolded, emb_unfolded = classifier_outputs(unfolded, pixels)
    text_skipped = text_export.unsupported_reason(model, loaded.tokenizer) if text else "not requested (--no-text)"
    text_check = None if text_skipped else text_export.text_reference(model, loaded.tokenizer, record)
    fold = fold_adapters(model)
    if fold.fully_folded and not unfold_is_clean(model):
        raise RingfoldError("internal: adapter wrappers left after a full fold")
    folded = build_classifier(model, class_emb)
    logits_folded, emb_folded = classifier_outputs(folded, pixels)
    outputs = (logits_unfolded, emb_unfolded, logits_folded, emb_folded)
    return _Reference(refs, ref_names, pixels, *outputs, fold, model, folded, text_check, text_skipped)


def _write_reference(writer: BundleWriter, tmp: Path, record: RunRecord, ref: _Reference) -> dict[str, np.ndarray]:
    """reference.npz, labels.json and preprocess.json; then ONNX Runtime's fp32 outputs on the reference set
    (one pass: the ONNX-vs-PyTorch figure and the fp32 variant check both read it)."""
    writer.write_reference(
        {
            "pixel_values": ref.pixels.numpy().astype(np.float32),
            "logits": ref.logits,
            "embedding": ref.embedding,
            "logits_folded": ref.logits_folded,
            "embedding_folded": ref.embedding_folded,
            "labels": np.array([r.label for r in ref.refs], dtype=np.int64),
            "images": np.array(ref.names),
        },
    )
    writer.write_labels(record.classnames)
    writer.write_preprocess(record.preprocess)
    return run_variant(tmp / MODEL_FILE, ref.pixels.numpy())


def _bundle_manifest(
    tmp: Path,
    record: RunRecord,
    ref: _Reference,
    plan: ref_mod.ReferencePlan,
    variants: dict,
    opset: int,
    raw_input: Sequence[str],
    include_base: bool,
    n_params: int,
) -> tuple[dict[str, Any], str | None]:
    """The manifest (without its export section) and the optional parts written beside it: raw-input models and
    DeepStream files, the text tower, the base model. Also returns why the text tower was skipped, or None."""
    size, fold = record.preprocess.size, ref.fold
    histogram = op_histogram(tmp / MODEL_FILE)
    manifest = _manifest(record, fold, opset, size, len(ref.names), ref.refs, histogram, n_params)
    manifest["variants"] = variants
    manifest["reference"].update(plan.manifest_section())
    if raw_input:  # raw-pixel models (mean/std folded into the first Conv) + deepstream/ (exporter/raw_input.py)
        title = f"{record.model_name} ({record.weights.describe()})"
        add_raw_input(tmp, manifest, record.preprocess, raw_input, record.classnames, ref.names, title)
    text_skipped = ref.text_skipped
    if ref.text_check is not None:  # the folded text tower, checked against the unfolded one
        text_section, text_skipped = text_export.write_text_tower(
            ref.model, tmp, opset, ref.text_check, record.templates
        )
        if text_section:
            manifest["text"] = text_section
    if include_base or not fold.fully_folded:
        manifest["base_model"] = _export_base(record, tmp, size, opset)
    if not fold.fully_folded:
        manifest["fold"]["extra_macs_per_image"] = fold.extra_macs_per_image
        manifest["fold"]["latency_vs_base"] = _latency_cost(tmp / MODEL_FILE, tmp / BASE_MODEL_FILE, size)
    return manifest, text_skipped


def _check_variants(tmp: Path, variants: dict, failed: dict, ref: _Reference, fp32_out: dict) -> dict[str, dict]:
    """Each written variant run by ONNX Runtime on the reference set vs the unfolded PyTorch model; a reduced
    variant ONNX Runtime cannot run is removed and listed in ``failed`` like a failed conversion.
    ``fp32_out``: model.onnx's outputs, already computed for the reference check (not run twice)."""
    checks = {}
    pixels, logits, embedding = ref.pixels.numpy(), ref.logits, ref.embedding
    for name, entry in list(variants.items()):
        try:
            if name == "fp32":
                out_v = fp32_out
            else:
                out_v = run_variant(tmp / entry["file"], pixels, entry.get("ort_optimization", "all"))
        except Exception as exc:  # written but ONNX Runtime cannot run it: left out like a failed conversion
            if name == "fp32":
                raise
            failed[name] = failure_reason("ONNX Runtime could not run it", exc)
            (tmp / entry["file"]).unlink()
            del variants[name]
            continue
        comp = compare(name, name, out_v["logits"], out_v["embedding"], logits, embedding)
        checks[name] = {
            "max_abs_logit": comp.max_abs_logit,
            "cosine_min": comp.cosine_min,
            "top1_agreement": comp.top1_agreement,
        }
    return checks


def _export_base(record: RunRecord, bundle_dir: Path, size, opset: int) -> dict[str, Any]:
    """The same classifier without adapters (base towers, base class embeddings), for latency comparisons."""
    base = reload_clip(record.model_name, record.weights, record.weights_fingerprint)
    with torch.no_grad():
        emb = class_embeddings(base.model, base.tokenizer, record.classnames, record.templates)
    export_onnx(build_classifier(base.model, emb), size, bundle_dir / BASE_MODEL_FILE, opset=opset)
    return {"file": BASE_MODEL_FILE, "precision": "fp32", "note": "base model, no adapters: for benchmarks only"}


def _latency_cost(model_path: Path, base_path: Path, size, runs: int = 20) -> dict[str, float]:
    """Batch-1 ONNX Runtime CPU latency of the bundle and of the base model: what the kept branches cost."""
    shape = (3, *size)
    model, base = OnnxModel(model_path, provider="cpu"), OnnxModel(base_path, provider="cpu")
    # alternate short rounds and keep each side's best median: a busy CPU then hits both sides alike
    model_ms, base_ms = float("inf"), float("inf")
    for _ in range(3):
        model_ms = min(model_ms, measure(model.run, 1, shape, warmup=2, runs=runs // 2)[0])
        base_ms = min(base_ms, measure(base.run, 1, shape, warmup=2, runs=runs // 2)[0])
    return {"bundle_p50_ms": model_ms, "base_p50_ms": base_ms, "ratio": model_ms / base_ms}


def _manifest(record: RunRecord, fold: FoldReport, opset: int, size, n_ref: int, refs, histogram, n_params: int):
    versions = library_versions()
    import onnx
    import onnxruntime

    versions.update(onnx=onnx.__version__, onnxruntime=onnxruntime.__version__)
    num_classes = len(record.classnames)
    return {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_FORMAT_VERSION,
        "ringfold_version": ringfold.__version__,
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "name": record.model_name,
            "weights": record.weights.describe(),
            "random_weights": record.is_random,
            "weights_source": record.weights.to_dict(),
            "weights_fingerprint": record.weights_fingerprint,
        },
        "adapter": {**record.adapter.to_dict(), "trainable_parameters": n_params},
        "fold": {
            "fully_folded": fold.fully_folded,
            "folded_sites": fold.folded_sites,
            "kept_sites": fold.kept_sites,
            "kept_methods": fold.kept_methods,
            "kept_visual_sites": fold.kept_visual_sites,
        },
        "templates": record.templates,
        "num_classes": num_classes,
        "onnx": {
            "opset": opset,
            "inputs": [{"name": INPUT_NAME, "shape": ["batch", 3, *size], "dtype": "float32"}],
            "outputs": [
                {"name": OUTPUT_NAMES[0], "shape": ["batch", num_classes], "dtype": "float32"},
                {"name": OUTPUT_NAMES[1], "shape": ["batch", "embed_dim"], "dtype": "float32"},
            ],
            "op_histogram": histogram,
        },
        "variants": {"fp32": {"file": MODEL_FILE, "precision": "fp32"}},
        "labels": LABELS_FILE,
        "preprocess": PREPROCESS_FILE,
        "reference": {
            "file": REFERENCE_FILE,
            "count": n_ref,
            "labelled": any(r.label >= 0 for r in refs),
            "pytorch_reference": "unfolded adapted model (logits, embedding); folded model (logits_folded, …)",
        },
        "versions": versions,
    }


def _report(record: RunRecord, fold: FoldReport, manifest: dict[str, Any], onnx_diff: float, reference: str) -> str:
    lines = [
        f"# Export report — {record.model_name}",
        "",
        f"- weights: **{record.weights.describe()}**"
        + (" — outputs are not meaningful predictions" if record.is_random else ""),
        f"- adapter method: {record.adapter.method}, "
        f"trainable parameters {manifest['adapter']['trainable_parameters']:,}",
        f"- classes: {len(record.classnames)}; templates: {len(record.templates)}",
        f"- ONNX opset {manifest['onnx']['opset']}, dynamic batch, outputs logits + embedding",
        f"- reference set (every figure below is measured on it): {reference}",
        f"- ONNX Runtime (CPU) vs PyTorch on the reference set: max |Δlogit| = {onnx_diff:.3g}",
        "",
    ]
    lines += ["| variant | file | max abs Δlogit vs PyTorch | min cosine | top-1 agreement |", "|---|---|---|---|---|"]
    for name, check in manifest["export"].get("variants_vs_torch", {}).items():
        lines.append(
            f"| {name} | {manifest['variants'][name]['file']} | {check['max_abs_logit']:.3g} | "
            f"{check['cosine_min']:.6f} | {check['top1_agreement']:.1%} |"
        )
    lines.append("")
    if fold.fully_folded:
        lines += [
            f"**Fully folded**: {fold.folded_sites} adapter sites merged into the frozen linear weights. "
            "The graph is the base open_clip image tower plus the classifier head: same ops, FLOPs and latency "
            "as the base model.",
        ]
    else:
        lines += [
            f"**WARNING — NOT fully folded**: {fold.kept_sites} adapter sites ({', '.join(fold.kept_methods)}) "
            "are not linear/input-independent; the "
            f"{fold.kept_visual_sites} in the image tower stay in the exported graph as extra ops (the text "
            "tower's only shaped the baked class embeddings). "
            f"Extra compute in the image tower: {2 * fold.extra_macs_per_image / 1e9:.4f} GFLOPs per image. "
            "Measured at export (ONNX Runtime CPU, batch 1): bundle "
            f"{manifest['fold']['latency_vs_base']['bundle_p50_ms']:.2f} ms vs base "
            f"{manifest['fold']['latency_vs_base']['base_p50_ms']:.2f} ms "
            f"(×{manifest['fold']['latency_vs_base']['ratio']:.2f}); `ringfold bench` measures more.",
        ]
    return "\n".join(lines) + "\n"


class _StepClock:
    """Seconds per export step (time.perf_counter), recorded in the manifest so a slow export says where."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.laps[step] = round(self.laps.get(step, 0.0) + now - self._last, 3)
        self._last = now


class _Progress:
    def __init__(self, enabled: bool, total: int) -> None:
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="export", unit="step")

    def advance(self, message: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(message[:60])
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
