"""A bundle's models on ONNX Runtime: the normalised image model (:class:`OnnxModel`) and the raw-pixel ones."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ringfold.errors import RingfoldError
from ringfold.runtime.bundle.loader import Bundle
from ringfold.runtime.bundle.manifest import check_model_io

from ..base import Backend, IoSpec
from .session import create_session

_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8"}


def open_bundle_model(
    bundle: Bundle, precision: str = "fp32", provider: str | None = None, threads: int | None = None
) -> OnnxModel:
    """The bundle's model of ``precision``, its graph I/O checked against the manifest before it runs."""
    path = bundle.model_path(precision)
    optimization = bundle.variants[precision].ort_optimization
    model = OnnxModel(path, provider=provider, threads=threads, optimization=optimization)
    check_model_io(bundle.manifest, path, *model.io())
    return model


class OnnxModel(Backend):
    """A bundle model in an ONNX Runtime session; ``run`` takes any batch, ``run_batched`` splits by 16."""

    backend = "onnxruntime"

    def __init__(
        self, path: str | Path, provider: str | None = None, threads: int | None = None, optimization: str = "all"
    ) -> None:
        self.path = Path(path)
        self.session = create_session(path, provider, threads, optimization)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def io(self) -> tuple[list[IoSpec], list[IoSpec]]:
        """(name, dtype, shape) of the graph's inputs and outputs; unknown dims are None or a symbol."""

        def describe(args) -> list[IoSpec]:
            return [(a.name, _ORT_DTYPES.get(a.type, a.type), list(a.shape)) for a in args]

        return describe(self.session.get_inputs()), describe(self.session.get_outputs())

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def run(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self.session.run(None, {self.input_name: np.ascontiguousarray(pixels, dtype=np.float32)})
        return {
            name: np.asarray(value, dtype=np.float32) for name, value in zip(self.output_names, outputs, strict=True)
        }


# ------------------------------------------------------------------------------------------- raw input
def open_raw_model(
    bundle: Bundle, dtype: str = "float32", provider: str | None = None, threads: int | None = None
) -> RawOnnxModel:
    """The raw model in ONNX Runtime, its graph I/O checked against the manifest's raw section first."""
    spec = bundle.raw_model(dtype)
    path = bundle.file(spec.file)
    model = RawOnnxModel(path, provider=provider, threads=threads, input_dtype=dtype)
    check_model_io(dataclasses.replace(bundle.manifest, input=spec.input), path, *model.io())
    return model


class RawOnnxModel(OnnxModel):
    """An :class:`OnnxModel` whose input is raw pixels in the model's own dtype (float32 or uint8)."""

    def __init__(self, path, provider=None, threads=None, input_dtype: str = "float32") -> None:
        super().__init__(path, provider=provider, threads=threads)
        self.input_dtype = np.dtype(input_dtype)

    def run(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        if self.input_dtype == np.uint8 and not np.array_equal(pixels, np.clip(np.rint(pixels), 0, 255)):
            raise RingfoldError("the uint8 raw model takes whole pixel values 0..255; round or use the float32 model")
        feed = np.ascontiguousarray(pixels, dtype=self.input_dtype)
        outputs = self.session.run(None, {self.input_name: feed})
        return {n: np.asarray(v, dtype=np.float32) for n, v in zip(self.output_names, outputs, strict=True)}
