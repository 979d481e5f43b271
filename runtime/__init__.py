"""ringfold's torch-free runtime: load and verify a bundle, run its model, classify, check parity, benchmark.

The supported Python API is :data:`__all__`, importable from here (``from ringfold.runtime import
load_bundle``); docs/python-api.md shows it at work. Everything else under ``ringfold.runtime`` is
internal and may move between releases. The runtime imports neither torch nor ringfold's trainer
or exporter: it is what a device installs.

Its layers, each a subpackage that imports only the ones before it: ``base`` (typed JSON reads,
caps, the character rule), ``pixels`` (images → model inputs), ``bundle`` (the bundle format),
``graph`` (ONNX graph knowledge), ``backends`` (ONNX Runtime, TensorRT), ``infer`` (classify,
bench), ``parity``, ``deploy`` (DeepStream, Triton) and ``vocab`` (open vocabulary).

The names below are imported on first use (as Polygraphy imports its optional parts), so importing
one runtime module does not load them all.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> the module that defines it
_API = {
    # load and verify a bundle
    "Bundle": "ringfold.runtime.bundle.loader",
    "load_bundle": "ringfold.runtime.bundle.loader",
    # open its model on a backend
    "BACKENDS": "ringfold.runtime.backends.registry",
    "Backend": "ringfold.runtime.backends.base",
    "open_model": "ringfold.runtime.backends.registry",
    # classify images
    "IMAGE_EXTENSIONS": "ringfold.runtime.pixels.images",
    "Prediction": "ringfold.runtime.infer.classify",
    "iter_predictions": "ringfold.runtime.infer.classify",
    "load_image": "ringfold.runtime.pixels.images",
    "preprocess_image": "ringfold.runtime.pixels.preprocess",
    "softmax": "ringfold.runtime.infer.classify",
    # check parity against the bundle's stored PyTorch reference
    "ParityReport": "ringfold.runtime.parity.report",
    "bundle_parity": "ringfold.runtime.parity.stored",
    "tolerance_for": "ringfold.runtime.parity.metrics",
    # benchmark
    "BenchReport": "ringfold.runtime.infer.bench",
    "run_bench": "ringfold.runtime.infer.bench",
    "write_bench": "ringfold.runtime.infer.bench",
}

__all__ = [
    "BACKENDS",
    "Backend",
    "BenchReport",
    "Bundle",
    "IMAGE_EXTENSIONS",
    "ParityReport",
    "Prediction",
    "bundle_parity",
    "iter_predictions",
    "load_bundle",
    "load_image",
    "open_model",
    "preprocess_image",
    "run_bench",
    "softmax",
    "tolerance_for",
    "write_bench",
]

if TYPE_CHECKING:  # what the names are, for type checkers and IDEs; at run time __getattr__ imports them
    from ringfold.runtime.backends.base import Backend
    from ringfold.runtime.backends.registry import BACKENDS, open_model
    from ringfold.runtime.bundle.loader import Bundle, load_bundle
    from ringfold.runtime.infer.bench import BenchReport, run_bench, write_bench
    from ringfold.runtime.infer.classify import Prediction, iter_predictions, softmax
    from ringfold.runtime.parity.metrics import tolerance_for
    from ringfold.runtime.parity.report import ParityReport
    from ringfold.runtime.parity.stored import bundle_parity
    from ringfold.runtime.pixels.images import IMAGE_EXTENSIONS, load_image
    from ringfold.runtime.pixels.preprocess import preprocess_image


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'ringfold.runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
