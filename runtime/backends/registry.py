"""Which backends exist and how each is opened: a name → a module imported only when that backend is asked for.

Polygraphy's way with optional dependencies: nothing is imported until it is used, so asking for
ONNX Runtime never loads the TensorRT runner (nor Polygraphy) nor OpenVINO; each backend is one row
of the table. Every opener returns a :class:`.base.Backend` whose
graph inputs and outputs it has already checked against the bundle's manifest.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from ringfold.errors import RingfoldError
from ringfold.runtime.bundle.loader import Bundle

from .base import Backend


@dataclass(frozen=True)
class BackendEntry:
    """One backend: the module that runs it and its ``open(bundle, precision, **options)`` function."""

    module: str
    opener: str
    #: the options of :func:`open_model` it takes (TensorRT has no execution providers)
    options: tuple[str, ...] = ()
    #: the module's ``lister(bundle)`` naming the precisions it runs here, when not simply the bundle's variants
    lister: str = ""


REGISTRY: dict[str, BackendEntry] = {
    "onnxruntime": BackendEntry(
        "ringfold.runtime.backends.onnxruntime.model", "open_bundle_model", ("provider", "threads")
    ),
    "tensorrt": BackendEntry("ringfold.runtime.backends.tensorrt.runner", "open_trt_model"),
    "openvino": BackendEntry(
        "ringfold.runtime.backends.openvino.model", "open_openvino_model", ("threads",), "openvino_precisions"
    ),
}
#: the backend names, in the order help texts list them
BACKENDS = tuple(REGISTRY)


def open_model(
    bundle: Bundle,
    precision: str = "fp32",
    backend: str = "onnxruntime",
    provider: str | None = None,
    threads: int | None = None,
) -> Backend:
    """The bundle's ``precision`` model on ``backend``, its I/O checked against the manifest."""
    entry = REGISTRY.get(backend)
    if entry is None:
        raise RingfoldError(f"--backend {backend!r} invalid; use {' or '.join(BACKENDS)}")
    opener = getattr(importlib.import_module(entry.module), entry.opener)
    given = {"provider": provider, "threads": threads}
    return opener(bundle, precision, **{name: given[name] for name in entry.options})


def backend_precisions(bundle: Bundle, backend: str = "onnxruntime") -> list[str]:
    """What ``--precision all`` means on ``backend``: the bundle's variants, or the backend's own list
    (OpenVINO: its precisions that the bundle's files and this CPU allow, bf16 among them)."""
    entry = REGISTRY.get(backend)
    if entry is None:
        raise RingfoldError(f"--backend {backend!r} invalid; use {' or '.join(BACKENDS)}")
    if not entry.lister:
        return list(bundle.variants)
    return getattr(importlib.import_module(entry.module), entry.lister)(bundle)
