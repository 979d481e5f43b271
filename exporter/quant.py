"""The int8 recipe that keeps a ViT's accuracy: which nodes get Q/DQ, and NNCF's quantizer as the measured peer.

The recipe (NVIDIA ModelOpt's ONNX PTQ and NNCF's ``ModelType.TRANSFORMER`` both follow it): Q/DQ only
on the inputs of the *weight-bearing* MatMul/Gemm/Conv (:func:`weight_bearing_nodes`); LayerNorm, GELU,
Softmax, the residual adds and the attention core (Q·Kᵀ, softmax·V: :func:`attention_core_matmuls`) stay
float. The int8 variant applies it with :mod:`ringfold.exporter.qdq`, which writes the graph onnxruntime's
``quantize_static`` writes for this placement (held to it by tests/test_qdq.py), 4–4.5× faster.

Why not NNCF (:func:`quantize_transformer_int8`, kept for ``benchmarks/bench_precision.py --nncf``):
measured on ViT-B/16 as the export writes it now (separate Q/K/V projections), ONNX Runtime CPU,
interleaved in one run (two runs), onnxruntime's graph (the one ringfold writes) runs 1.15–1.16×
(batch 1) and 1.73–1.77× (batch 8) fp32's speed, NNCF's 0.97–1.13× and 1.66–1.81× (a tie within
noise); onnxruntime's is closer to fp32 on 60 real photos (min cosine 0.99968 vs 0.99909, both pass the
margin-aware gate) and calibrates faster (58 s vs 71 s side by side, same 64 images, loaded machine).
On the earlier packed-in_proj graph NNCF's was the fast one (1.92× vs 1.04× at batch 1): the ranking
follows the graph, so docs/benchmarks.md keeps both runs. NVIDIA ModelOpt's ONNX PTQ was not
installable beside the export: ``nvidia-modelopt[onnx]`` pins onnx 1.21, swaps onnxruntime for
onnxruntime-gpu 1.24 and pulls cupy-cuda12x.

NNCF, when run: the attention core in its ignored scope, the PERFORMANCE preset (symmetric int8, zero
points 0), SmoothQuant on (its transformer default), one calibration pass of at most
:data:`MAX_CALIBRATION_IMAGES` images, no bias correction, telemetry off.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ringfold.atomic import atomic_path
from ringfold.errors import FieldError

from .calibration import image_batches

#: the compute-heavy ops whose weight input and activation input are quantized
QUANTIZED_OPS = ("MatMul", "Gemm", "Conv")
#: what the int8 variant quantizes and what it keeps float (written into the manifest)
RECIPE = (
    "transformer: weight-bearing MatMul/Gemm/Conv quantized; LayerNorm, GELU, Softmax, residual adds and the "
    "attention core (Q·Kᵀ, softmax·V) kept float"
)
#: calibration never reads more images than this (one pass; a few hundred is the usual advice)
MAX_CALIBRATION_IMAGES = 300
#: ``--calib-method`` → NNCF's activation range estimator (entropy is onnxruntime's; NNCF has none)
RANGE_ESTIMATORS = {"minmax": "MINMAX", "percentile": "MEAN_QUANTILE"}


def constant_tensors(model: onnx.ModelProto) -> set[str]:
    """Tensors that are weights: initializers, Constant outputs and whatever nodes compute from those alone."""
    graph = model.graph
    known = {i.name for i in graph.initializer} - {i.name for i in graph.input}
    for node in graph.node:
        inputs = [i for i in node.input if i]
        if node.op_type == "Constant" or (inputs and all(i in known for i in inputs)):
            known.update(o for o in node.output if o)
    return known


def attention_core_matmuls(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMuls whose inputs are both activations (Q·Kᵀ, softmax·V): they stay float."""
    weights = constant_tensors(model)
    weights |= {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights}
    return [
        n.name
        for n in model.graph.node
        if n.op_type == "MatMul" and not any(i in weights for i in n.input if i) and n.name
    ]


def weight_bearing_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMul/Gemm/Conv nodes that read a weight: the only nodes the int8 recipe quantizes."""
    weights = constant_tensors(model)
    return [
        n.name
        for n in model.graph.node
        if n.op_type in QUANTIZED_OPS and n.name and any(i in weights for i in n.input[:2] if i)
    ]


def _batches(paths: list[Path], preprocess, input_name: str) -> list[dict[str, np.ndarray]]:
    """The calibration images (at most MAX_CALIBRATION_IMAGES) as NNCF's dataset items: one dict per batch."""
    return [{input_name: batch} for batch in image_batches(paths[:MAX_CALIBRATION_IMAGES], preprocess)]


def _advanced(method: str):
    """NNCF's settings beyond its preset: the method's range estimator, no overflow fix, no bias-correction pass."""
    _nncf()  # telemetry off before any nncf module loads
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    if method not in RANGE_ESTIMATORS:
        raise FieldError("calib_method", f"{method!r} is not a calibration method; use {', '.join(RANGE_ESTIMATORS)}")
    return AdvancedQuantizationParameters(
        overflow_fix=OverflowFix.DISABLE,  # the overflow fix halves weight ranges for old AVX2 kernels only
        activations_range_estimator_params=getattr(RangeEstimatorParametersSet, RANGE_ESTIMATORS[method]),
        disable_bias_correction=True,
    )


def _nncf():
    """NNCF, imported with its telemetry off: it sends usage events to Google Analytics without asking unless
    ``NNCF_CI`` is set when it is first imported (the only thing that variable switches); an export sends nothing."""
    os.environ.setdefault("NNCF_CI", "1")
    import nncf

    return nncf


def quantize_transformer_int8(
    src: Path, dst: Path, paths: list[Path], preprocess, method: str = "minmax"
) -> dict[str, Any]:
    """``src`` quantized by NNCF's transformer recipe into a Q/DQ model at ``dst``; returns what it did."""
    nncf = _nncf()

    advanced = _advanced(method)
    model = onnx.load(str(src))
    core = attention_core_matmuls(model)
    batches = _batches(paths, preprocess, model.graph.input[0].name)
    with contextlib.redirect_stdout(io.StringIO()):  # NNCF's progress bars; its warnings go to the log summary
        quantized = nncf.quantize(
            model,
            nncf.Dataset(batches),
            preset=nncf.QuantizationPreset.PERFORMANCE,
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(batches),  # NNCF counts dataset items: batches
            fast_bias_correction=True,
            ignored_scope=nncf.IgnoredScope(names=core, validate=False),
            advanced_parameters=advanced,
        )
    with atomic_path(dst) as out:
        onnx.save(quantized, str(out))
        onnx.checker.check_model(str(out))
    return {
        "precision": "int8",
        "format": "QDQ",
        "recipe": RECIPE,
        "activations": "int8 symmetric (signed, zero point 0)",
        "weights": "int8 symmetric per-channel",
        "attention_core_float": len(core),
        # SmoothQuant (NNCF's default for transformers): per-channel Mul nodes that move activation outliers into
        # the weights before the quantized MatMuls
        "smooth_quant_muls": sum(n.op_type == "Mul" and "smooth_quant" in n.name for n in quantized.graph.node),
        "calibration_images_used": min(len(paths), MAX_CALIBRATION_IMAGES),
        "tool": f"nncf.quantize {nncf.__version__} (ModelType.TRANSFORMER)",
    }
