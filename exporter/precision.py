"""Reduced-precision variants of a bundle's fp32 ONNX model, with the well-kept tools for each job.

- fp16: ringfold's own float32→float16 graph rewrite (:mod:`ringfold.exporter.fp16`,
  onnx helpers only — the onnxruntime / onnxconverter-common converters changed
  behaviour inside our version range), graph inputs/outputs kept fp32, and
  LayerNormalization, Softmax, reductions and the final L2-normalisation + head
  kept fp32 (a block list), because those overflow or lose the embedding's unit
  norm in half precision.
- int8 (static): onnxruntime.quantization in QDQ format with symmetric
  activations and weights and per-channel weights — the form TensorRT
  consumes — calibrated on the user's images through the runtime's own
  preprocessing; calibration method minmax, entropy or percentile.
- int8-dynamic: weights int8, activations quantized at run time; for
  CPU-only targets (TensorRT does not take it).

A variant whose conversion fails is left out with a one-line reason (the
export still writes the bundle with the others); what the libraries log while
converting is summarised in the variant's entry instead of printed.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ringfold.atomic import atomic_path
from ringfold.errors import FieldError, RingfoldError
from ringfold.runtime.fields import one_line
from ringfold.runtime.precision_policy import FP32_OPS, final_normalisation_nodes

from .library_log import captured_library_log

PRECISIONS = ("fp32", "fp16", "int8", "int8-dynamic")
VARIANT_FILES = {
    "fp32": "model.onnx",
    "fp16": "model_fp16.onnx",
    "int8": "model_int8.onnx",
    "int8-dynamic": "model_int8_dynamic.onnx",
}
#: the ops the fp16 rewrite leaves in fp32: the one list the TensorRT build and the lint also read
FP16_BLOCKED_OPS = FP32_OPS
#: the old private name of the policy's final-normalisation walk (tests/test_fp16_convert.py imports it)
_final_normalisation_nodes = final_normalisation_nodes
#: onnxruntime 1.30 and 1.32's CPU provider crash (SIGSEGV) running these fp16 graphs at ORT_ENABLE_ALL
#: (its NchwcTransformer, an "all"-level layout transform; 1.17 runs them); "extended" keeps every fusion
#: that matters and runs on every version in the range.
FP16_ORT_OPTIMIZATION = "extended"
#: the compute-heavy ops; LayerNorm, Softmax, GELU and the residual adds stay float (as TensorRT prefers)
QUANTIZED_OPS = ("MatMul", "Gemm", "Conv")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


def convert_fp16(src: Path, dst: Path) -> dict[str, Any]:
    """``src`` rewritten to float16 by :mod:`ringfold.exporter.fp16`; the saved file passes the full onnx check."""
    import onnx

    from .fp16 import convert_to_fp16

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


class ImageCalibrationReader:
    """onnxruntime CalibrationDataReader over images, preprocessed exactly as the runtime does."""

    def __init__(self, paths: list[Path], preprocess, input_name: str = "image", batch: int = 8) -> None:
        from ringfold.runtime.images import load_image
        from ringfold.runtime.preprocess import preprocess_batch

        self._batches = [
            {input_name: preprocess_batch([load_image(p) for p in paths[i : i + batch]], preprocess)}
            for i in range(0, len(paths), batch)
        ]
        self._iter = iter(self._batches)

    def get_next(self):
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter(self._batches)


def calibration_images(calib: str | Path, limit: int | None = None) -> tuple[list[Path], str]:
    """Sorted image list and a sha256 over their contents (recorded in the manifest)."""
    from ringfold.runtime.images import list_images

    paths = list_images([calib])
    if limit:
        paths = paths[:limit]
    if not paths:
        raise FieldError("calib", f"{calib} has no images for int8 calibration; give a folder of a few hundred")
    digest = hashlib.sha256()
    for p in paths:
        digest.update(p.name.encode())
        digest.update(hashlib.sha256(p.read_bytes()).digest())
    return paths, digest.hexdigest()


def _calibrate_method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    if name not in methods:
        raise FieldError("calib_method", f"{name!r} is not a calibration method; use {', '.join(CALIBRATION_METHODS)}")
    return methods[name]


def _preprocessed(src: Path, tmpdir: Path) -> Path:
    """onnxruntime's recommended pre-pass (shape inference + graph optimisation) before quantization."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = tmpdir / "pre.onnx"
    try:
        quant_pre_process(str(src), str(out), skip_symbolic_shape=False)
    except Exception:  # symbolic shape inference is best effort; fall back to plain ONNX shapes
        quant_pre_process(str(src), str(out), skip_symbolic_shape=True)
    return out


def quantize_int8_static(
    src: Path, dst: Path, calib: str | Path, preprocess, method: str = "minmax", limit: int | None = None
) -> dict[str, Any]:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    paths, digest = calibration_images(calib, limit)
    reader = ImageCalibrationReader(paths, preprocess)
    with tempfile.TemporaryDirectory() as tmp, atomic_path(dst) as out:
        pre = _preprocessed(src, Path(tmp))
        quantize_static(
            str(pre),
            str(out),
            reader,
            op_types_to_quantize=list(QUANTIZED_OPS),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=_calibrate_method(method),
            # QuantizeBias off: TensorRT rejects DequantizeLinear on int32 biases (float biases are its form)
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
        )
    return {
        "precision": "int8",
        "format": "QDQ",
        "activations": "int8 symmetric",
        "weights": "int8 symmetric per-channel",
        "calibration": {"method": method, "images": len(paths), "sha256": digest, "source": str(calib)},
        "tool": "onnxruntime.quantization.quantize_static",
    }


def quantize_int8_dynamic(src: Path, dst: Path) -> dict[str, Any]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp, atomic_path(dst) as out:
        pre = _preprocessed(src, Path(tmp))
        quantize_dynamic(
            str(pre), str(out), weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul", "Gemm"]
        )
    return {
        "precision": "int8-dynamic",
        "weights": "int8 per-channel",
        "activations": "quantized at run time",
        "target": "CPU (not TensorRT)",
        "tool": "onnxruntime.quantization.quantize_dynamic",
    }


@dataclass
class PrecisionRequest:
    precisions: tuple[str, ...] = ("fp32",)
    calib: str | None = None
    calib_method: str = "minmax"
    calib_limit: int | None = None

    def __post_init__(self) -> None:
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad:
            raise FieldError("precision", f"{bad[0]!r} is not a precision; use any of {', '.join(PRECISIONS)}")
        if "int8" in self.precisions and not self.calib:
            raise FieldError("calib", "is needed for int8: a folder of calibration images (a few hundred)")
        if "int8" in self.precisions:
            _calibrate_method(self.calib_method)  # one-line error for a bad --calib-method, before any work


def failure_reason(stage: str, exc: BaseException) -> str:
    """``stage: <exception in one line>`` — a RingfoldError already reads as a sentence, others get their type."""
    text = one_line(str(exc))
    if not isinstance(exc, RingfoldError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return f"{stage}: {text[:300]}"


def write_variants(
    bundle_dir: Path, request: PrecisionRequest, preprocess
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Create every requested variant next to the fp32 model: (manifest entries, failed variant → reason).

    A variant whose converter raises is left out (no file is left behind) and the
    others are still written; the caller reports the reason. What the libraries
    log meanwhile is summarised under the entry's ``library_log``.
    """
    src = bundle_dir / VARIANT_FILES["fp32"]
    variants: dict[str, dict[str, Any]] = {"fp32": {"file": VARIANT_FILES["fp32"], "precision": "fp32"}}
    failed: dict[str, str] = {}
    for precision in request.precisions:
        if precision == "fp32":
            continue
        dst = bundle_dir / VARIANT_FILES[precision]
        try:
            with captured_library_log() as log:
                if precision == "fp16":
                    info = convert_fp16(src, dst)
                elif precision == "int8":
                    info = quantize_int8_static(
                        src, dst, request.calib, preprocess, request.calib_method, request.calib_limit
                    )
                else:
                    info = quantize_int8_dynamic(src, dst)
        except Exception as exc:  # any converter failure costs this variant only, never the bundle
            dst.unlink(missing_ok=True)
            failed[precision] = failure_reason("conversion failed", exc)
            continue
        if log.summary():
            info["library_log"] = log.summary()
        variants[precision] = {"file": VARIANT_FILES[precision], **info}
    return variants, failed


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
    from ringfold.runtime.onnx_backend import OnnxModel

    return OnnxModel(path, provider="cpu", optimization=optimization).run_batched(pixels)
