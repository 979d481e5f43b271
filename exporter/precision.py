"""Reduced-precision variants of a bundle's fp32 ONNX model, with the well-kept tools for each job.

- fp16: ringfold's own float32→float16 graph rewrite (:mod:`ringfold.exporter.fp16`,
  onnx helpers only — the onnxruntime / onnxconverter-common converters changed
  behaviour inside our version range), graph inputs/outputs kept fp32, and
  LayerNormalization, Softmax, reductions and the final L2-normalisation + head
  kept fp32 (a block list), because those overflow or lose the embedding's unit
  norm in half precision.
- int8 (static): QDQ with symmetric activations and weights and per-channel
  weights — the form TensorRT consumes — written by :mod:`ringfold.exporter.qdq`
  (onnxruntime's graph, made 4–4.5× faster; :mod:`ringfold.exporter.int8`),
  calibrated on the user's images through the runtime's own preprocessing;
  calibration method minmax (ranges read on the int8-dynamic graph), entropy
  or percentile. The transformer recipe (:mod:`ringfold.exporter.quant`): only
  the weight-bearing MatMul/Gemm/Conv are quantized; LayerNorm, GELU, Softmax,
  the residual adds and the attention core (Q·Kᵀ, softmax·V) stay fp32.
- int8-fp16: the int8 graph with every float part in fp16 but the precision
  policy's fp32 islands (:mod:`ringfold.exporter.quant_fp16`): the graph
  TensorRT's strongly typed int8 build reads.
- int8-dynamic: weights int8, activations quantized at run time; for
  CPU-only targets (TensorRT does not take it).

A variant whose conversion fails is left out with a one-line reason (the
export still writes the bundle with the others); what the libraries log while
converting is summarised in the variant's entry instead of printed.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ringfold.atomic import atomic_path
from ringfold.errors import FieldError, ImageError, RingfoldError
from ringfold.runtime.backends.onnxruntime.model import OnnxModel
from ringfold.runtime.base.fields import one_line
from ringfold.runtime.bundle.precisions import PRECISIONS, TABLE
from ringfold.runtime.graph.precision_policy import FP32_OPS, final_normalisation_nodes
from ringfold.runtime.pixels.images import list_images, load_image, open_regular

from .fp16 import convert_to_fp16
from .int8 import Int8Graphs
from .library_log import captured_library_log
from .quant import MAX_CALIBRATION_IMAGES
from .quant_fp16 import write_int8_fp16

#: the variant files, one per precision of the runtime's precision table
VARIANT_FILES = {name: precision.file for name, precision in TABLE.items()}
#: the ops the fp16 rewrite leaves in fp32: the one list the TensorRT build and the lint also read
FP16_BLOCKED_OPS = FP32_OPS
#: onnxruntime 1.30 and 1.32's CPU provider crash (SIGSEGV) running these fp16 graphs at ORT_ENABLE_ALL
#: (its NchwcTransformer, an "all"-level layout transform; 1.17 runs them); "extended" keeps every fusion
#: that matters and runs on every version in the range.
FP16_ORT_OPTIMIZATION = "extended"
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


def convert_fp16(src: Path, dst: Path) -> dict[str, Any]:
    """``src`` rewritten to float16 by :mod:`ringfold.exporter.fp16`; the saved file passes the full onnx check."""
    import onnx

    model = onnx.load(str(src))
    blocked_nodes = final_normalisation_nodes(model)  # the L2-normalisation and the head, by name
    converted, stats = convert_to_fp16(model, FP16_BLOCKED_OPS, blocked_nodes)
    with atomic_path(dst) as tmp:
        onnx.save(converted, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)
    return {
        "precision": "fp16",
        "keep_io_types": True,
        "ort_optimization": FP16_ORT_OPTIMIZATION,
        "fp32_ops": list(FP16_BLOCKED_OPS),
        "fp32_nodes": len(blocked_nodes),
        **stats.to_dict(),
        "tool": "ringfold.exporter.fp16",
    }


#: the fewest decodable calibration images static int8 accepts unless ``--calib-min`` says otherwise:
#: activation ranges from a handful of pictures do not hold on real inputs (a few hundred is the usual advice)
DEFAULT_CALIB_MIN = 32


@dataclass(frozen=True)
class CalibrationSet:
    """The checked calibration images (regular, decodable files) and a sha256 over their contents."""

    paths: tuple[Path, ...]
    sha256: str
    source: str


def _calibration_folder(calib: str | Path) -> Path:
    """``calib`` as a readable folder, or a one-line FieldError naming it."""
    root = Path(calib)
    if not root.exists():
        raise FieldError("calib", f"{calib}: no such folder; check the path (a folder of calibration images)")
    if not root.is_dir():
        raise FieldError("calib", f"{calib} is not a folder; pass a folder of calibration images")
    try:
        with os.scandir(root):
            pass
    except OSError as exc:
        raise FieldError("calib", f"{calib} cannot be read ({exc.strerror or exc}); fix its permissions") from None
    return root


def _file_sha256(path: Path) -> bytes:
    digest = hashlib.sha256()
    with open_regular(path) as fh:  # never blocks: a FIFO or device is refused before a read
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.digest()


def calibration_images(calib: str | Path, limit: int | None = None, minimum: int = 1) -> tuple[list[Path], str]:
    """Sorted image list and a sha256 over their contents (recorded in the manifest).

    Every image is checked here, before the export loads its model: the folder exists and is
    readable, each file is regular (a FIFO or device is named, never opened) and decodes, and at
    least ``minimum`` remain — a typo or an empty folder costs a second, not a whole export.
    """
    paths = list_images([_calibration_folder(calib)])
    cut = bool(limit) and len(paths) > limit
    paths = paths[:limit] if limit else paths
    if not paths:
        raise FieldError("calib", f"{calib} has no images for int8 calibration; give a folder of a few hundred")
    if len(paths) < minimum:
        kept = f"--calib-limit {limit} keeps {len(paths)} of its images" if cut else f"has {len(paths)} image(s)"
        raise FieldError(
            "calib",
            f"{calib} {kept}, fewer than the {minimum} int8 calibration needs (ranges from a few pictures do "
            f"not hold on real inputs); add images (a few hundred is typical), or pass --calib-min {len(paths)} "
            "to use them",
        )
    digest = hashlib.sha256()
    for p in paths:
        try:
            load_image(p)  # regular file, decodable: found now, not after the fp32 export
            digest.update(p.name.encode())
            digest.update(_file_sha256(p))
        except ImageError as exc:
            raise FieldError("calib", f"holds an image that cannot be used: {exc}") from None
    return paths, digest.hexdigest()


#: the variants calibrated on the user's images (int8-fp16 is the int8 graph with fp16 float parts)
CALIBRATED = ("int8", "int8-fp16")


def _calibrated(precisions) -> bool:
    return any(p in CALIBRATED for p in precisions)


def check_calibration(request: PrecisionRequest) -> CalibrationSet | None:
    """The request's calibration images, checked (None when no static int8 variant is asked for)."""
    if not _calibrated(request.precisions):
        return None
    # one calibration pass over at most MAX_CALIBRATION_IMAGES (a few hundred): more costs export time, not accuracy
    limit = min(request.calib_limit or MAX_CALIBRATION_IMAGES, MAX_CALIBRATION_IMAGES)
    paths, digest = calibration_images(request.calib, limit, request.calib_min)
    return CalibrationSet(tuple(paths), digest, str(request.calib))


def _calibrate_method(name: str) -> str:
    """``name`` if it is a calibration method, else a one-line FieldError (checked before any work)."""
    if name not in CALIBRATION_METHODS:
        raise FieldError("calib_method", f"{name!r} is not a calibration method; use {', '.join(CALIBRATION_METHODS)}")
    return name


@dataclass
class PrecisionRequest:
    precisions: tuple[str, ...] = ("fp32",)
    calib: str | None = None
    calib_method: str = "minmax"
    calib_limit: int | None = None
    calib_min: int = DEFAULT_CALIB_MIN

    def __post_init__(self) -> None:
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad:
            raise FieldError("precision", f"{bad[0]!r} is not a precision; use any of {', '.join(PRECISIONS)}")
        if _calibrated(self.precisions) and not self.calib:
            which = next(p for p in self.precisions if p in CALIBRATED)
            raise FieldError("calib", f"is needed for {which}: a folder of calibration images (a few hundred)")
        if self.calib and not _calibrated(self.precisions):
            raise FieldError("calib", "is only used by the int8 variant; add int8 to --precision or leave it out")
        if isinstance(self.calib_min, bool) or not isinstance(self.calib_min, int) or self.calib_min < 1:
            raise FieldError("calib_min", f"must be a positive integer, got {self.calib_min!r}")
        if _calibrated(self.precisions):
            _calibrate_method(self.calib_method)  # one-line error for a bad --calib-method, before any work


def failure_reason(stage: str, exc: BaseException) -> str:
    """``stage: <exception in one line>`` — a RingfoldError already reads as a sentence, others get their type."""
    text = one_line(str(exc))
    if not isinstance(exc, RingfoldError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return f"{stage}: {text[:300]}"


def write_variants(
    bundle_dir: Path, request: PrecisionRequest, preprocess, calibration: CalibrationSet | None = None
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Create every requested variant next to the fp32 model: (manifest entries, failed variant → reason).

    A variant whose converter raises is left out (no file is left behind) and the
    others are still written; the caller reports the reason. What the libraries
    log meanwhile is summarised under the entry's ``library_log``. ``calibration``:
    the images :func:`check_calibration` checked before the export (checked here if None).
    """
    if calibration is None:
        calibration = check_calibration(request)
    src = bundle_dir / VARIANT_FILES["fp32"]
    variants: dict[str, dict[str, Any]] = {"fp32": {"file": VARIANT_FILES["fp32"], "precision": "fp32"}}
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as scratch:
        int8 = Int8Graphs(src, Path(scratch))
        for precision in _in_order(request.precisions):
            dst = bundle_dir / VARIANT_FILES[precision]
            start = time.perf_counter()
            try:
                with captured_library_log() as log:
                    info = _convert(precision, dst, request, preprocess, calibration, int8)
            except Exception as exc:  # any converter failure costs this variant only, never the bundle
                dst.unlink(missing_ok=True)
                failed[precision] = failure_reason("conversion failed", exc)
                continue
            info["seconds"] = round(time.perf_counter() - start, 2)  # where the export's time goes, per variant
            if log.summary():
                info["library_log"] = log.summary()
            variants[precision] = {"file": VARIANT_FILES[precision], **info, "for": list(TABLE[precision].targets)}
    return variants, failed


#: the order variants are made in: int8-dynamic before int8 (calibrated on it), int8 before int8-fp16 (made from it)
_ORDER = ("fp16", "int8-dynamic", "int8", "int8-fp16")


def _in_order(precisions) -> list[str]:
    """The requested variants but fp32 (already written), in :data:`_ORDER`."""
    rest = [p for p in dict.fromkeys(precisions) if p != "fp32"]
    return sorted(rest, key=lambda p: _ORDER.index(p) if p in _ORDER else len(_ORDER))


def _convert(precision: str, dst: Path, request, preprocess, calibration, int8: Int8Graphs) -> dict:
    """Write one variant; int8-fp16 is made from the int8 file (quantized into scratch if int8 was not asked)."""
    if precision == "fp16":
        return convert_fp16(int8.src, dst)
    if precision == "int8-dynamic":
        return int8.write_dynamic(dst)
    if precision == "int8":
        return quantize_int8_static(int8, dst, calibration, preprocess, request.calib_method)
    static = dst.with_name(VARIANT_FILES["int8"])
    if "int8" not in request.precisions or not static.is_file():
        static = int8.scratch / VARIANT_FILES["int8"]
        quantize_int8_static(int8, static, calibration, preprocess, request.calib_method)
    return write_int8_fp16(static, dst)


def quantize_int8_static(
    int8: Int8Graphs, dst: Path, calib: CalibrationSet, preprocess, method: str = "minmax"
) -> dict[str, Any]:
    """Static Q/DQ int8 by the transformer recipe, calibrated on ``calib``; the manifest entry."""
    record = {"method": method, "images": len(calib.paths), "sha256": calib.sha256, "source": calib.source}
    return {**int8.write_static(dst, list(calib.paths), preprocess, method), "calibration": record}


def variant_messages(manifest: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(errors, notes) for the export's stderr: one line per variant left out, one per variant whose converter
    logged warnings (the full list is in the manifest and export report)."""
    export = manifest.get("export", {})
    variants = manifest.get("variants", {})
    errors = [
        f"{name}: {reason}; the bundle was written without it (has {', '.join(variants)}); "
        f"re-export with --precision {' '.join(variants)} to skip it, or report this error"
        for name, reason in export.get("failed_variants", {}).items()
    ]
    notes = []
    for name, entry in variants.items():
        logged = entry.get("library_log", {}).get("warnings", {})
        if logged:
            first = next(iter(logged))
            notes.append(
                f"{name}: the converter logged {sum(logged.values())} warning(s) of {len(logged)} kind(s), "
                f"most often {first!r}; listed in export_report.md"
            )
    return errors, notes


def variant_report(manifest: dict[str, Any]) -> str:
    """Markdown for the export report: variants left out and the warnings each converter logged
    (its printed progress lines stay in the manifest only)."""
    lines = []
    for name, reason in manifest.get("export", {}).get("failed_variants", {}).items():
        lines.append(f"- **{name} not written** — {reason}")
    for name, entry in manifest.get("variants", {}).items():
        for text, count in entry.get("library_log", {}).get("warnings", {}).items():
            lines.append(f"- {name} converter warning ×{count}: `{text}`")
    return "\n".join(["", "## Variant conversion", "", *lines]) + "\n" if lines else ""


def run_variant(path: Path, pixels: np.ndarray, optimization: str = "all") -> dict[str, np.ndarray]:
    return OnnxModel(path, provider="cpu", optimization=optimization).run_batched(pixels)
