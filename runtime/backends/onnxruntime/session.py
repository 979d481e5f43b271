"""ONNX Runtime sessions, created in one place: the provider choice, the options, and the one-line refusal.

Every ONNX Runtime session the runtime opens (a bundle's image model, its raw-pixel models, the
text tower) comes from :func:`create_session`, so the provider order (TensorRT → CUDA → CPU, as
this build offers them), the thread count and the error a model ONNX Runtime cannot load gives
are the same everywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

from ringfold.errors import RingfoldError

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
PROVIDER_ALIASES = {"trt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
OPTIMIZATION_LEVELS = {
    "all": lambda ort: ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "extended": lambda ort: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "basic": lambda ort: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
}


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


def available_provider_names() -> list[str]:
    """Short names (trt, cuda, cpu) of the providers this onnxruntime build offers."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [short for short, name in PROVIDER_ALIASES.items() if name in available]


def create_session(
    path: str | Path,
    provider: str | None = None,
    threads: int | None = None,
    optimization: str | None = None,
    error: type[RingfoldError] = RingfoldError,
):
    """An ``onnxruntime.InferenceSession`` for the model at ``path``; a model it cannot load is one ``error`` line.

    ``provider``: as :func:`choose_providers`; ``threads``: intra-op threads (None: ONNX Runtime's
    default); ``optimization``: a level of :data:`OPTIMIZATION_LEVELS` (None: ONNX Runtime's default).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if optimization is not None:
        options.graph_optimization_level = OPTIMIZATION_LEVELS[optimization](ort)
    if threads:
        options.intra_op_num_threads = threads
    providers = choose_providers(provider)
    try:
        return ort.InferenceSession(os.fspath(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types
        msg = " ".join(str(exc).split())[:200]
        raise error(f"{path}: ONNX Runtime cannot load it ({msg}); re-export the bundle") from None
