"""``ringfold relabel BUNDLE --classes … --out NEW``: a new, verified bundle whose head holds new classes.

Torch-free and onnx-free, so it runs on the device. Steps:

1. load and verify the bundle; compute the new class embeddings with its
   ``text.onnx`` and tokenizer (:mod:`ringfold.runtime.vocab.text_model`);
2. rewrite the head and the logits dimension of the fp32, fp16 and int8-dynamic
   variants (:mod:`ringfold.runtime.graph.head_rewrite`); the static int8 variant is
   dropped with the reason in the manifest (its head and logits are quantized
   with scales calibrated on the old classes: re-export to get it); TensorRT
   engines and the base model are not carried over (engines are per-head:
   rebuild them);
3. recompute the reference set's PyTorch-side logits from its stored PyTorch
   embeddings in numpy (``ringfold parity`` keeps comparing against numbers
   that never went through ONNX Runtime);
4. write everything with :class:`~ringfold.runtime.bundle.writer.BundleWriter` into a
   temporary folder moved into place at the end (``--overwrite`` replaces only a
   bundle ringfold wrote).
"""

from __future__ import annotations

import copy
import datetime as dt
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import ringfold
from ringfold.atomic import write_bytes, write_text
from ringfold.errors import BundleError, RingfoldError
from ringfold.ownership import check_apart, check_target, owned_directory
from ringfold.runtime.backends.onnxruntime.model import OnnxModel
from ringfold.runtime.bundle.engines import ENGINE_DIR
from ringfold.runtime.bundle.loader import Bundle, load_bundle
from ringfold.runtime.bundle.spec import LABELS_FILE, LOGITS, REFERENCE_FILE
from ringfold.runtime.bundle.writer import BundleWriter
from ringfold.runtime.deploy.deepstream import labels_line
from ringfold.runtime.graph.head_rewrite import HeadNotRewritable, rewrite_head

from .class_list import check_against_bundle
from .relabel_raw import raw_files, relabel_raw_input
from .text_model import open_text_tower

REPORT_FILE = "relabel_report.md"
#: variants whose head the rewrite can replace (float MatMul; quantize_dynamic's MatMulInteger)
REWRITABLE = ("fp32", "fp16", "int8-dynamic")
_QUANTIZED_NOTE = (
    "its head and logits are quantized with scales calibrated on the old classes; "
    "re-export with --precision {name} for the new classes"
)
ENGINE_NOTE = "TensorRT engines are built for one head: rebuild with `ringfold build-engine` on the device"


@dataclass
class RelabelResult:
    bundle: Path
    classes: int
    templates: int
    variants: list[str]
    dropped: dict[str, str] = field(default_factory=dict)
    max_abs_logit: float = 0.0  # ONNX Runtime fp32 vs the numpy reference, on the reference set
    seconds: float = 0.0

    def summary(self) -> str:
        dropped = f"; dropped {', '.join(self.dropped)}" if self.dropped else ""
        return (
            f"relabelled bundle written to {self.bundle}: {self.classes} classes × {self.templates} templates, "
            f"variants {', '.join(self.variants)}{dropped}; ONNX Runtime vs reference max |Δlogit| "
            f"{self.max_abs_logit:.2g} in {self.seconds:.1f}s"
        )


def _reference_logits(embedding: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """PyTorch-side logits for the new head: the stored PyTorch embedding times the new head, in float64."""
    return (embedding.astype(np.float64) @ weight.astype(np.float64).T).astype(np.float32)


def _carried_files(bundle: Bundle) -> list[str]:
    """Hashed files copied unchanged: everything but models, labels, reference archive, reports, engines."""
    skip = {*(v.file for v in bundle.variants.values()), LABELS_FILE, REFERENCE_FILE, "export_report.md", REPORT_FILE}
    if bundle.manifest.base_model is not None:
        skip.add(bundle.manifest.base_model.file)
    skip |= raw_files(bundle)  # rebuilt for the new head by relabel_raw_input
    return [rel for rel in bundle.manifest.files if rel not in skip and not rel.startswith(f"{ENGINE_DIR}/")]


def relabel_bundle(
    source: str | Path,
    out: str | Path,
    classes: list[str],
    templates: tuple[str, ...] | None = None,
    *,
    overwrite: bool = False,
    provider: str | None = "cpu",
    threads: int | None = None,
) -> RelabelResult:
    """Write a copy of ``source`` whose head classifies ``classes`` (see the module docstring)."""
    import time

    t0 = time.perf_counter()
    source, out = Path(source), Path(out)
    check_apart(out, source, "bundle being relabelled")
    check_target(out, overwrite)
    bundle = load_bundle(source)
    _check_classes(bundle, classes, templates)
    tower = open_text_tower(bundle, provider, threads)
    templates = tuple(templates or tower.info.templates)
    weight = tower.head_for(classes, templates)
    ref = bundle.reference()
    new_index = {name: i for i, name in enumerate(classes)}
    labels = np.array([new_index.get(bundle.labels[i], -1) if i >= 0 else -1 for i in ref.labels], dtype=np.int64)

    with owned_directory(out, "ringfold relabel", overwrite) as tmp:
        raw = copy.deepcopy(dict(bundle.manifest.raw))
        variants, dropped = _rewrite_variants(bundle, tmp, weight, raw)
        for rel in _carried_files(bundle):
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(bundle.file(rel), target)

        reference_logits = _reference_logits(ref.embedding, weight)
        writer = BundleWriter(tmp)
        writer.write_labels(classes)
        writer.write_reference(
            {
                "pixel_values": ref.pixel_values,
                "logits": reference_logits,
                "embedding": ref.embedding,
                "logits_folded": _reference_logits(ref.embedding_folded, weight),
                "embedding_folded": ref.embedding_folded,
                "labels": labels,
                "images": np.array(ref.images),
            }
        )
        checks = {
            name: _check_variant(tmp / entry["file"], entry, ref.pixel_values, reference_logits)
            for name, entry in variants.items()
        }
        max_abs = checks["fp32"]
        manifest = _manifest(raw, bundle, classes, templates, variants, dropped, labels, checks)
        for note in relabel_raw_input(bundle, tmp, weight, classes, manifest):
            dropped["deepstream int8"] = note
            manifest["relabel"]["dropped_variants"] = dropped
        write_text(tmp / REPORT_FILE, _report(bundle, classes, templates, variants, dropped, max_abs))
        writer.finish(manifest)
    return RelabelResult(out, len(classes), len(templates), list(variants), dropped, max_abs, time.perf_counter() - t0)


def _rewrite_variants(
    bundle: Bundle, tmp: Path, weight: np.ndarray, raw: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Each variant's model with the new head written into ``tmp``: (manifest entries, dropped variant -> why)."""
    variants: dict[str, Any] = {}
    dropped: dict[str, str] = {}
    for name, variant in bundle.variants.items():
        if name not in REWRITABLE:
            dropped[name] = _QUANTIZED_NOTE.format(name=name)
            continue
        try:
            data = rewrite_head(bundle.model_path(name).read_bytes(), weight)
        except HeadNotRewritable as exc:
            if name == "fp32":
                raise BundleError(f"{bundle.model_path(name)}: {exc}; re-export the bundle") from None
            dropped[name] = str(exc)
            continue
        target = tmp / variant.file
        target.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(target, data)
        variants[name] = raw["variants"][name]
        if name == "int8-dynamic":
            variants[name]["head"] = "requantized by ringfold relabel: int8 symmetric per column, zero point 0"
    return variants, dropped


def _check_classes(bundle: Bundle, classes: list[str], templates: tuple[str, ...] | None) -> None:
    """Every refusal the class list can cause, before the text tower loads: the list itself (ties, characters)
    and, for a bundle with a DeepStream folder, what nvinfer's label file cannot carry."""
    check_against_bundle(bundle, classes, templates, "--classes")
    if bundle.manifest.deepstream_files:
        labels_line(classes)


def _check_variant(path: Path, entry: dict, pixels: np.ndarray, want: np.ndarray) -> float:
    """ONNX Runtime's logits of a rewritten model vs the numpy reference ``want``; refuses a broken rewrite."""
    got = OnnxModel(path, provider="cpu", optimization=entry.get("ort_optimization", "all")).run(pixels)[LOGITS]
    if got.shape != want.shape:
        raise RingfoldError(f"internal: relabelled model gives logits {got.shape}, expected {want.shape}")
    return float(np.abs(got - want).max())


def _manifest(raw, bundle, classes, templates, variants, dropped, labels, checks) -> dict[str, Any]:
    raw.pop("files", None)
    raw.pop("base_model", None)
    raw["num_classes"] = len(classes)
    raw["templates"] = list(templates)
    raw["variants"] = variants
    for output in raw["onnx"]["outputs"]:
        if output.get("name") == LOGITS:
            output["shape"] = ["batch", len(classes)]
    raw["reference"]["labelled"] = bool((labels >= 0).any())
    raw["text"]["templates"] = list(templates)
    raw["relabel"] = {
        "from": {
            "path": str(bundle.path),
            "fp32_sha256": bundle.model_sha256("fp32"),
            "num_classes": len(bundle.labels),
        },
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "ringfold_version": ringfold.__version__,
        "classes": len(classes),
        "templates": len(templates),
        "dropped_variants": dropped,
        "engines": ENGINE_NOTE,
        "base_model": "not carried over (its head holds the old classes)",
        "onnx_vs_reference_max_abs_logit": checks,
    }
    return raw


def _report(
    bundle: Bundle, classes: list[str], templates: tuple[str, ...], variants: dict, dropped: dict, max_abs: float
) -> str:
    lines = [
        f"# Relabel report — {bundle.manifest.model_name}",
        "",
        f"- from {bundle.path} ({len(bundle.labels)} classes) to {len(classes)} classes × {len(templates)} templates",
        f"- rewritten variants: {', '.join(variants)}",
        *(f"- dropped {name}: {why}" for name, why in dropped.items()),
        f"- {ENGINE_NOTE}",
        f"- ONNX Runtime (CPU) fp32 vs numpy reference on the reference set: max |Δlogit| = {max_abs:.3g}",
    ]
    if bundle.random_weights:
        lines.append("- random weights: the new head's predictions are not meaningful")
    return "\n".join(lines) + "\n"
