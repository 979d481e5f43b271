"""ONNX Runtime execution of a bundle model, with the best provider this machine has."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ringfold.errors import RingfoldError

from .backends import Backend, IoSpec

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
PROVIDER_ALIASES = {"trt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}


def choose_providers(requested: str | None = None) -> list[str]:
    """``requested``: None/"auto" (TensorRT → CUDA → CPU, as available) or one of trt/cuda/cpu."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if requested in (None, "auto"):
        return [p for p in PREFERRED_PROVIDERS if p in available] or ["CPUExecutionProvider"]
    name = PROVIDER_ALIASES.get(requested, requested)
    if name not in available:
        raise RingfoldError(
            f"--provider {requested}: not available in this onnxruntime build (has {', '.join(available)}); "
            "install onnxruntime-gpu or pick --provider cpu"
        )
    return [name] if name == "CPUExecutionProvider" else [name, "CPUExecutionProvider"]


OPTIMIZATION_LEVELS = {
    "all": lambda ort: ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "extended": lambda ort: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "basic": lambda ort: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
}


def available_provider_names() -> list[str]:
    """Short names (trt, cuda, cpu) of the providers this onnxruntime build offers."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [short for short, name in PROVIDER_ALIASES.items() if name in available]


_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8"}


def open_bundle_model(bundle, precision: str = "fp32", provider: str | None = None, threads: int | None = None):
    """The bundle's model of ``precision``, its graph I/O checked against the manifest before it runs."""
    from .bundle import check_model_io

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
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = OPTIMIZATION_LEVELS[optimization](ort)
        if threads:
            options.intra_op_num_threads = threads
        self.path = Path(path)
        self.providers = choose_providers(provider)
        try:
            self.session = ort.InferenceSession(os.fspath(path), sess_options=options, providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            msg = " ".join(str(exc).split())[:200]
            raise RingfoldError(f"{path}: ONNX Runtime cannot load it ({msg}); re-export the bundle") from None
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
