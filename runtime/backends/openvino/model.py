"""A bundle's model on OpenVINO's CPU plugin, its inference precision pinned and read back from the compiled model.

The ONNX file is read after :func:`~ringfold.runtime.bundle.loader.load_bundle` verified its sha256, and
OpenVINO reads it as it is (a QDQ model becomes FakeQuantize, i.e. int8 kernels). The batch dimension is
dynamic in the bundle; OpenVINO's CPU plugin runs a static shape faster than a dynamic one (measured in
docs/benchmarks.md), so by default the model is reshaped and compiled once per batch size it meets
(:data:`SHAPES`), keeping a few compiled shapes. ``shapes="dynamic"`` compiles one dynamic-batch model.

With static shapes, an even batch of two or more images runs as two halves on two OpenVINO streams at once
(``PERFORMANCE_HINT=THROUGHPUT``, ``NUM_STREAMS=2``: each half on its share of the cores) instead of one
request on every core (``LATENCY``): on a 2-core Xeon (AMX) ViT-B/16 int8-bf16 at batch 8 took 107.6 ms
against 111.3 ms as one request, interleaved (docs/benchmarks.md). A single image, an odd batch, or one thread
runs as one latency request; the outputs are the same model's, only scheduled differently.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ringfold.errors import RingfoldError
from ringfold.extras import pip_install_extra
from ringfold.runtime.bundle.loader import Bundle
from ringfold.runtime.bundle.manifest import check_model_io

from ..base import Backend, IoSpec
from .cache import cache_folder, cache_key, check_folder, record
from .modes import OpenVinoPrecision, available_openvino_precisions, openvino_precision

#: the extra that brings OpenVINO, and the one line without it
EXTRA = "openvino"
MISSING = (
    "--backend openvino needs the openvino package, which is not installed: `pip install openvino`, or ringfold's "
    f"[openvino] extra: {pip_install_extra('openvino')}; or use --backend onnxruntime"
)
#: "static" (reshape + compile per batch size) or "dynamic" (one model for every batch)
SHAPES = "static"
#: compiled batch sizes kept per model (each holds the model's weights once more)
MAX_SHAPES = 4
_OV_DTYPES = {"f32": "float32", "f16": "float16", "u8": "uint8"}
#: streams an even batch is split over (see the module docstring); 1 turns the split off
STREAMS = 2
#: where compiled models are cached when the caller names no folder (unset: no cache)
CACHE_ENV = "RINGFOLD_OPENVINO_CACHE"


def import_openvino():
    """The ``openvino`` module, or the one-line refusal naming the extra."""
    try:
        import openvino  # optional: the [openvino] extra
    except ModuleNotFoundError:
        raise RingfoldError(MISSING) from None
    return openvino


def cpu_capabilities(core) -> list[str]:
    """What OpenVINO says this CPU computes natively (FP32, BF16, FP16, INT8, ...)."""
    return list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def open_openvino_model(
    bundle: Bundle,
    precision: str = "fp32",
    threads: int | None = None,
    shapes: str = SHAPES,
    cache_dir: str | Path | None = None,
) -> OpenVinoModel:
    """The bundle's model at OpenVINO ``precision`` (see :mod:`.modes`), its graph I/O checked against the manifest.

    ``cache_dir`` (default: ``$RINGFOLD_OPENVINO_CACHE``; unset: no cache) keeps compiled models keyed and
    verified outside the bundle (:mod:`.cache`).
    """
    ov = import_openvino()
    core = ov.Core()
    mode = openvino_precision(precision, bundle.variants, cpu_capabilities(core))
    path = bundle.model_path(mode.variant)
    cache_dir = cache_dir or os.environ.get(CACHE_ENV) or None
    cache = None
    if cache_dir:
        sha, version = bundle.model_sha256(mode.variant), ov.__version__
        cache_folder(cache_dir, bundle.path, "")  # a folder inside the bundle is refused before any compile

        def cache(batch: int | None, streams: int = 1) -> Path:
            key = cache_key(sha, version, mode.hint, batch, threads, streams)
            return cache_folder(cache_dir, bundle.path, key)

    model = OpenVinoModel(core, path, mode, threads=threads, shapes=shapes, cache=cache)
    check_model_io(bundle.manifest, path, *model.io())
    return model


def openvino_precisions(bundle: Bundle) -> list[str]:
    """The OpenVINO precisions this bundle's files and this CPU allow (``--precision all``)."""
    return available_openvino_precisions(bundle.variants, cpu_capabilities(import_openvino().Core()))


class OpenVinoModel(Backend):
    """A bundle model on OpenVINO's CPU plugin; ``run`` takes any batch, each size compiled once (static shapes)."""

    backend = "openvino"

    def __init__(
        self,
        core,
        path: str | Path,
        mode: OpenVinoPrecision,
        threads: int | None = None,
        shapes: str = SHAPES,
        cache=None,
    ) -> None:
        if shapes not in ("static", "dynamic"):
            raise RingfoldError(f"shapes {shapes!r} invalid; use static or dynamic")
        self.core, self.path, self.mode, self.shapes = core, Path(path), mode, shapes
        try:
            self.model = core.read_model(str(path))
        except Exception as exc:  # OpenVINO raises its own exception types
            msg = " ".join(str(exc).split())[:200]
            raise RingfoldError(f"{path}: OpenVINO cannot read it ({msg}); re-export the bundle") from None
        self.input_name = self.model.inputs[0].any_name
        self.config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": mode.hint, "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = int(threads)
        self._compiled: OrderedDict[int | None, Any] = OrderedDict()
        #: batch → the verified cache folder of that compiled shape (None: no cache)
        self.cache = cache

    @property
    def provider(self) -> str:
        return f"CPU, inference precision {self.mode.hint} ({self.shapes} shapes)"

    def io(self) -> tuple[list[IoSpec], list[IoSpec]]:
        """(name, dtype, shape) of the ONNX graph's inputs and outputs as OpenVINO read them; dynamic dims None."""

        def describe(ports) -> list[IoSpec]:
            out = []
            for port in ports:
                dims = [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
                dtype = port.get_element_type().get_type_name()
                out.append((port.any_name, _OV_DTYPES.get(dtype, dtype), dims))
            return out

        return describe(self.model.inputs), describe(self.model.outputs)

    def compiled(self, batch: int | None, streams: int = 1):
        """(compiled model, its first infer request) for ``batch`` images (static) or any batch (dynamic:
        ``batch`` ignored); ``streams`` > 1 compiles for OpenVINO's throughput streams instead."""
        compiled, requests = self._compiled_requests(batch, streams)
        return compiled, requests[0]

    def _compiled_requests(self, batch: int | None, streams: int = 1):
        key = (batch if self.shapes == "static" else None, streams)
        if key in self._compiled:
            self._compiled.move_to_end(key)
            return self._compiled[key]
        model = self.model
        if key[0] is not None:
            model = self.model.clone()
            dims = [key[0], *[d.get_length() for d in list(self.model.inputs[0].get_partial_shape())[1:]]]
            model.reshape({self.input_name: dims})
        compiled = self._compile(model, key[0], streams)
        self.check_precision(compiled)
        self._compiled[key] = (compiled, [compiled.create_infer_request() for _ in range(streams)])
        while len(self._compiled) > MAX_SHAPES:
            self._compiled.popitem(last=False)
        return self._compiled[key]

    def _compile(self, model, batch: int | None, streams: int = 1):
        """Compile ``model``; with a cache, in its keyed folder, checked against ringfold's record first."""
        config = dict(self.config)
        if streams > 1:
            config.update({"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": streams})
        if self.cache is None:
            return self.core.compile_model(model, "CPU", config)
        folder = self.cache(batch, streams)
        check_folder(folder)
        folder.mkdir(parents=True, exist_ok=True)
        compiled = self.core.compile_model(model, "CPU", {**config, "CACHE_DIR": str(folder)})
        record(folder)  # what OpenVINO wrote (or imported, verified above) now
        return compiled

    def split(self, batch: int) -> int:
        """How many streams a batch of ``batch`` images runs on: :data:`STREAMS` when it halves evenly, else 1."""
        threads = self.config.get("INFERENCE_NUM_THREADS")
        if self.shapes != "static" or batch < STREAMS or batch % STREAMS or (threads and threads < STREAMS):
            return 1
        return STREAMS

    def check_precision(self, compiled) -> None:
        """Refuse a compiled model whose inference precision is not the pinned one (an OpenVINO that ignored it)."""
        got = inference_precision(compiled)
        if got != self.mode.hint:
            raise RingfoldError(
                f"{self.path}: OpenVINO compiled it with inference precision {got}, not the pinned "
                f"{self.mode.hint}; use --precision fp32 or upgrade openvino"
            )

    def run(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """One request per stream, each on its share of the batch (one request: the whole batch)."""
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        streams = self.split(len(pixels))
        compiled, requests = self._compiled_requests(len(pixels) // streams, streams)
        for request, part in zip(requests, np.split(pixels, streams), strict=True):
            request.start_async({0: part})
        for request in requests:
            request.wait()
        return {
            port.any_name: np.concatenate([np.array(r.get_tensor(port).data, dtype=np.float32) for r in requests])
            for port in compiled.outputs
        }


def inference_precision(compiled) -> str:
    """The compiled model's INFERENCE_PRECISION_HINT as OpenVINO's short type name (f32, bf16, f16)."""
    value = compiled.get_property("INFERENCE_PRECISION_HINT")
    return value.get_type_name() if hasattr(value, "get_type_name") else str(value)
