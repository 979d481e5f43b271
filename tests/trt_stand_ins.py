"""Stand-ins for the TensorRT side, shared by the TensorRT tests that run without TensorRT or a GPU."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np

from ringfold.runtime.backends.tensorrt import runner as trt_backend
from ringfold.runtime.bundle.spec import TensorSpec


class FakeEnv:
    """What ``LiveTrtEnvironment`` reports (TensorRT version, GPU name, compute capability), chosen by the test."""

    def __init__(self, version: str = "10.3.0", device: str = "Orin", cc: str = "8.7") -> None:
        self.version, self.device, self.cc = version, device, cc

    def trt_version(self) -> str:
        return self.version

    def device_name(self) -> str:
        return self.device

    def compute_capability(self) -> str:
        return self.cc


def stand_in_trt_model(lo: int, hi: int, runner, sample_shape: tuple[int, ...] = (3, 2, 2)):
    """A ``TensorRTModel`` with batch profile ``lo..hi`` whose Polygraphy runner is ``runner`` (no engine loaded)."""
    model = trt_backend.TensorRTModel.__new__(trt_backend.TensorRTModel)
    model.path = Path("engines/model.engine")
    model.min_batch, model.max_batch = lo, hi
    model.input_name, model._input_dtype, model._sample_shape = "image", np.dtype("float32"), sample_shape
    model.output_names = ["logits", "embedding"]
    model._runner = runner
    return model


SHAS = {"fp32": "a" * 64, "fp16": "b" * 64, "int8": "c" * 64, "int8-fp16": "d" * 64}
LN = "/visual/transformer/resblocks.0/ln_1/LayerNormalization"


class FakeBundle:
    """The parts of a Bundle the plan reads; every variant is the tiny model's ONNX under its own name.

    ``real``: the loaded tiny bundle (its preprocessing and fp32 ONNX); ``variants``: what the bundle claims to have.
    """

    def __init__(self, real, root: Path, variants=("fp32",)) -> None:
        self.path = root
        self.variants = {v: object() for v in variants}
        self.manifest = types.SimpleNamespace(input=TensorSpec("image", "float32", ("batch", 3, 64, 64)))
        self.preprocess = real.preprocess
        self._onnx = real.model_path("fp32")

    def model_path(self, kind: str) -> Path:
        return self._onnx

    def model_sha256(self, kind: str) -> str:
        return SHAS[kind]
