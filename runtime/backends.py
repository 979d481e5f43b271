"""One door to a bundle's model, whatever runs it: ONNX Runtime (any provider) or a TensorRT engine."""

from __future__ import annotations

from ringfold.errors import RingfoldError

BACKENDS = ("onnxruntime", "tensorrt")


def open_model(bundle, precision: str = "fp32", backend: str = "onnxruntime", provider=None, threads=None):
    if backend == "onnxruntime":
        from .onnx_backend import open_bundle_model

        return open_bundle_model(bundle, precision, provider=provider, threads=threads)
    if backend == "tensorrt":
        from .trt_backend import open_trt_model

        return open_trt_model(bundle, precision)
    raise RingfoldError(f"--backend {backend!r} invalid; use {' or '.join(BACKENDS)}")
