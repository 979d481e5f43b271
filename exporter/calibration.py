"""Activation ranges for static int8, read where they are cheapest: on the int8-dynamic graph.

The static int8 variant needs ``max|x|`` of every tensor a weight-bearing node reads, over the calibration
images. Running the fp32 graph for that was the export's slowest step (onnxruntime's calibrator runs an
unoptimised copy with two reductions per tensor). The int8-dynamic graph computes the same tensors from
int8 weights at 2–3.5× fp32's speed on CPUs with VNNI/AMX, and the ranges it sees are the fp32 ones to
within int8's own resolution: on ViT-B/16 (random weights, 96 images) every ``max|x|`` lay within 0.55 %
(median 0.12 %) of fp32's, under one int8 step (1/127 = 0.79 %) — and they are the ranges the deployed int8
graph meets, whose upstream layers are int8 too. The export's own check then holds the static graph to
fp32 on the reference images, as every variant.

``--calib-method entropy`` / ``percentile`` need histograms, not ranges: onnxruntime's calibrators compute
those on the fp32 graph (slower; what ``quantize_static`` did).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx

from ringfold.runtime.pixels.images import load_image
from ringfold.runtime.pixels.preprocess import preprocess_batch

#: onnxruntime's calibrator for each histogram method (minmax is :func:`activation_ranges`)
HISTOGRAM_METHODS = ("entropy", "percentile")
#: images per calibration batch (onnxruntime's CPU GEMMs gain little beyond 8 on 2 cores)
CALIBRATION_BATCH = 8


def image_batches(paths: list[Path], preprocess) -> Iterator[np.ndarray]:
    """The calibration images in batches of :data:`CALIBRATION_BATCH` (the last may be smaller), decoded one
    batch at a time and preprocessed exactly as the runtime does."""
    for start in range(0, len(paths), CALIBRATION_BATCH):
        chunk = paths[start : start + CALIBRATION_BATCH]
        yield preprocess_batch([load_image(p) for p in chunk], preprocess)


def activation_ranges(graph: Path, tensors: list[str], batches: Iterable[np.ndarray]) -> dict[str, float]:
    """``max|x|`` of each of ``tensors`` over ``batches``, running ``graph`` with them as extra outputs.

    A tensor that is a graph input (the first Conv reads the image itself) is measured on the batch.
    """
    import onnxruntime as ort

    model = onnx.load(str(graph))
    input_name = model.graph.input[0].name
    known = {o.name for o in model.graph.output}
    inner = [t for t in tensors if t != input_name]
    model.graph.output.extend(onnx.ValueInfoProto(name=t) for t in inner if t not in known)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    del model
    ranges = dict.fromkeys(tensors, 0.0)
    for batch in batches:
        values = dict(zip(inner, session.run(inner, {input_name: batch}), strict=True))
        if input_name in ranges:
            values[input_name] = batch
        for name, value in values.items():
            ranges[name] = max(ranges[name], float(np.abs(value).max()))
    return ranges


def histogram_ranges(graph: Path, tensors: list[str], reader, method: str, scratch: Path) -> dict[str, float]:
    """``max|x|`` after onnxruntime's ``method`` calibrator (entropy or percentile) on the fp32 ``graph``."""
    from onnxruntime.quantization import CalibrationMethod, create_calibrator

    calibrator = create_calibrator(
        graph,
        ["MatMul", "Gemm", "Conv"],
        augmented_model_path=str(scratch / "augmented.onnx"),
        calibrate_method={"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}[method],
    )
    calibrator.collect_data(reader)
    data = calibrator.compute_data()
    out = {}
    for name in tensors:
        low, high = (np.asarray(v, dtype=np.float64) for v in data[name].range_value)
        out[name] = float(max(np.abs(low).max(), np.abs(high).max()))
    return out
