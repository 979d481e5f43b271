"""The export's two int8 variants, made together so that each piece of work is done once.

One cleaned fp32 graph (onnxruntime's basic-level optimisation: constants folded, Identity/Cast no-ops gone —
the graph onnxruntime's ``quant_pre_process`` used to write, without its symbolic shape inference, which
neither writer needs), each weight quantized once for both graphs (:mod:`ringfold.exporter.qdq`), and the
int8-dynamic graph written first because the static one is calibrated on it
(:mod:`ringfold.exporter.calibration`). Measured on ViT-B/16, 96 calibration images, 2 cores:
``benchmarks/bench_export.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx

from ringfold.atomic import atomic_path

from .calibration import HISTOGRAM_METHODS, activation_ranges, histogram_ranges, image_batches
from .qdq import weight_sites, write_dynamic_int8, write_static_qdq
from .quant import RECIPE, attention_core_matmuls

TOOL = "ringfold.exporter.qdq (onnxruntime's int8 conventions)"


def basic_optimised(src: Path, dst: Path) -> Path:
    """``src`` after onnxruntime's basic graph optimisations (standard ONNX ops only), saved at ``dst``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(dst)
    ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
    return dst


def drop_unused_opsets(model: onnx.ModelProto) -> None:
    """Keep only the opset imports some node uses: onnxruntime's optimiser declares every domain it knows
    (ai.onnx.ml 5 among them), which the oldest ONNX Runtime ringfold supports (1.17) refuses to load."""
    used = {node.domain or "" for node in model.graph.node} | {""}
    kept = [o for o in model.opset_import if (o.domain or "") in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)


def save_checked(model: onnx.ModelProto, dst: Path) -> None:
    drop_unused_opsets(model)
    with atomic_path(dst) as out:
        onnx.save(model, str(out))
        onnx.checker.check_model(str(out))


class Int8Graphs:
    """The int8 and int8-dynamic graphs of one fp32 model, sharing the cleaned graph and the weights."""

    def __init__(self, src: Path, scratch: Path) -> None:
        self.src, self.scratch = src, scratch
        self.weights: dict = {}
        self._basic: Path | None = None
        self._dynamic: Path | None = None

    def basic(self) -> Path:
        if self._basic is None:
            self._basic = basic_optimised(self.src, self.scratch / "basic.onnx")
        return self._basic

    def write_dynamic(self, dst: Path | None = None) -> dict[str, Any]:
        """The int8-dynamic graph at ``dst`` (a scratch file when only the static variant was asked for)."""
        model = onnx.load(str(self.basic()))
        counts = write_dynamic_int8(model, self.weights)
        self._dynamic = dst or self.scratch / "dynamic.onnx"
        save_checked(model, self._dynamic)
        return {
            "precision": "int8-dynamic",
            "weights": "int8 per-channel",
            "activations": "quantized at run time",
            "target": "CPU (not TensorRT)",
            **counts,
            "tool": TOOL,
        }

    def write_static(self, dst: Path, paths: list[Path], preprocess, method: str) -> dict[str, Any]:
        """The recipe's Q/DQ graph at ``dst``, calibrated on ``paths`` (``method``: minmax, entropy, percentile)."""
        model = onnx.load(str(self.basic()))
        tensors = sorted({site.activation for site in weight_sites(model)})
        ranges, source = self._ranges(tensors, paths, preprocess, method, model.graph.input[0].name)
        core = attention_core_matmuls(model)
        counts = write_static_qdq(model, ranges, self.weights)
        save_checked(model, dst)
        return {
            "precision": "int8",
            "format": "QDQ",
            "activations": "int8 symmetric",
            "weights": "int8 symmetric per-channel",
            "recipe": RECIPE,
            "attention_core_float": len(core),
            **counts,
            "ranges_from": source,
            "tool": TOOL,
        }

    def _ranges(
        self, tensors: list[str], paths: list[Path], preprocess, method: str, input_name: str
    ) -> tuple[dict, str]:
        if method in HISTOGRAM_METHODS:
            reader = CalibrationReader(paths, preprocess, input_name)
            return histogram_ranges(self.basic(), tensors, reader, method, self.scratch), f"fp32 graph ({method})"
        if self._dynamic is None:
            self.write_dynamic()
        return activation_ranges(
            self._dynamic, tensors, image_batches(paths, preprocess)
        ), "int8-dynamic graph (max |x|)"


class CalibrationReader:
    """onnxruntime CalibrationDataReader over :func:`~.calibration.image_batches`, rewindable."""

    def __init__(self, paths: list[Path], preprocess, input_name: str) -> None:
        self._paths, self._preprocess, self._input = paths, preprocess, input_name
        self.rewind()

    def get_next(self):
        batch = next(self._batches, None)
        return None if batch is None else {self._input: batch}

    def rewind(self) -> None:
        self._batches = image_batches(self._paths, self._preprocess)
