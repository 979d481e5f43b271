"""At export: the bundle's ``deepstream/`` folder, with an INT8 calibration cache computed here.

The cache's per-tensor scales come from ONNX Runtime's MinMax calibrator run on the raw
model with the bundle's reference images, resized the way nvinfer resizes (stretched to
the network size): scale = max |activation| / 127, TensorRT's symmetric int8 range.
TensorRT reads such a cache instead of calibrating; no TensorRT ran here to validate it,
and the manifest says so (``deepstream.calibration.validated: false``).
"""

from __future__ import annotations

import inspect
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ringfold.runtime.backends.tensorrt.calibration import calibration_cache
from ringfold.runtime.bundle.sections.deepstream import FOLDER, deepstream_section
from ringfold.runtime.bundle.sections.raw_input import RAW_INPUT_NAME
from ringfold.runtime.deploy.deepstream import DeepStreamTarget, deepstream_files, write_folder
from ringfold.runtime.pixels.images import load_image
from ringfold.runtime.pixels.preprocess import PreprocessConfig
from ringfold.runtime.pixels.raw import raw_pixels

CALIBRATION_NOTE = "ONNX Runtime MinMax on the reference images (nvinfer-style stretch), scale = max|x|/127"


def activation_scales(raw_model: Path, inputs: np.ndarray) -> dict[str, float]:
    """max |x| / 127 of the raw model's input and of every float tensor its nodes produce, over ``inputs``."""
    from onnxruntime.quantization.calibrate import CalibrationDataReader, CalibrationMethod, create_calibrator

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.rows = iter(inputs[i : i + 1] for i in range(len(inputs)))

        def get_next(self):
            row = next(self.rows, None)
            return None if row is None else {RAW_INPUT_NAME: row}

    options = {}
    if "providers" in inspect.signature(create_calibrator).parameters:  # ONNX Runtime < 1.18: CPU, no such argument
        options["providers"] = ["CPUExecutionProvider"]
    with tempfile.TemporaryDirectory() as scratch:
        calibrator = create_calibrator(
            raw_model,
            None,
            augmented_model_path=Path(scratch) / "augmented.onnx",
            calibrate_method=CalibrationMethod.MinMax,
            **options,
        )
        calibrator.collect_data(Reader())
        ranges = calibrator.compute_data()
    scales = {RAW_INPUT_NAME: float(np.abs(inputs).max()) / 127.0}
    for name, value in ranges.data.items():
        low, high = (float(np.asarray(v).max()) for v in value.range_value)
        scales[name] = max(abs(low), abs(high)) / 127.0
    return scales


def write_deepstream_folder(
    bundle_dir: Path,
    raw_file: str,
    labels: Sequence[str],
    cfg: PreprocessConfig,
    reference_images: Sequence[str],
    with_int8: bool,
    title: str,
    qdq_file: str | None = None,
) -> dict:
    """Write ``BUNDLE/deepstream/`` (configs relative to the folder) and return the manifest section.

    ``qdq_file``: the raw-input Q/DQ model; the int8 configs name it (any TensorRT builds from it), and the
    cache is still written for ``ringfold deepstream`` on TensorRT up to 10.x when the bundle has int8."""
    calibration = None
    if with_int8:
        raw = np.stack([raw_pixels(load_image(bundle_dir / name), cfg, "deepstream") for name in reference_images])
        calibration = calibration_cache(activation_scales(bundle_dir / raw_file, raw))
    target = DeepStreamTarget(
        onnx_file=f"../{raw_file}",
        labels=labels,
        size=cfg.size,
        precisions=("fp32", "fp16", "int8") if with_int8 or qdq_file else ("fp32", "fp16"),
        calibration=calibration,
        int8_onnx_file=f"../{qdq_file}" if qdq_file else None,
        title=title,
    )
    files = deepstream_files(target)
    (bundle_dir / FOLDER).mkdir(exist_ok=True)
    write_folder(bundle_dir / FOLDER, files)
    return deepstream_section(list(files), CALIBRATION_NOTE if with_int8 else None)
