"""Which of a bundle's engines this machine may run: an engine is refused before TensorRT deserializes it.

A serialized TensorRT engine only runs on the TensorRT version and GPU it was built with. The
bundle's ``engines/`` folder (:mod:`ringfold.runtime.bundle.engines`) records each engine's key;
here that key is held against this machine's TensorRT and GPU *before* TensorRT is asked to
deserialize anything — a mismatch is a one-line "rebuild" error instead of a crash or a silently
wrong engine. The TensorRT/CUDA queries sit behind :class:`TrtEnvironment`, so the refusal logic
is tested without a GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from ringfold.atomic import sha256_file
from ringfold.errors import RingfoldError
from ringfold.runtime.bundle.engines import ENGINE_FIX, EngineKey, list_engines, parse_version, read_sidecar, sidecar

from .cuda import cuda_device
from .stack import import_tensorrt


class TrtEnvironment(Protocol):
    def trt_version(self) -> str: ...

    def device_name(self) -> str: ...

    def compute_capability(self) -> str: ...


class LiveTrtEnvironment:
    """The installed TensorRT and the current CUDA device (asked once, through libcudart)."""

    def __init__(self, device: int = 0) -> None:
        self.device = device
        self._gpu: tuple[str, str] | None = None

    def trt_version(self) -> str:
        trt = import_tensorrt()
        return trt.__version__

    def _query(self) -> tuple[str, str]:
        if self._gpu is None:
            self._gpu = cuda_device(self.device)
        return self._gpu

    def device_name(self) -> str:
        return self._query()[0]

    def compute_capability(self) -> str:
        return self._query()[1]


def current_key(onnx_sha256: str, precision: str, batch: tuple[int, int, int], env: TrtEnvironment) -> EngineKey:
    return EngineKey(onnx_sha256, env.trt_version(), env.device_name(), env.compute_capability(), precision, batch)


def check_engine(engine_path: Path, env: TrtEnvironment, onnx_sha256: str | None = None) -> EngineKey:
    """Refuse an engine built for another TensorRT version, GPU or ONNX file — before deserializing it."""
    meta = sidecar(engine_path)
    if not engine_path.is_file():
        raise RingfoldError(f"{engine_path}: no such engine; build it with `ringfold build-engine BUNDLE`")
    if not meta.is_file():
        raise RingfoldError(
            f"{engine_path}: no {meta.name} recording what it was built for; rebuild it with `ringfold build-engine`"
        )
    key, digest = read_sidecar(meta)
    here_version = env.trt_version()
    if parse_version(key.trt_version)[:3] != parse_version(here_version)[:3]:
        raise RingfoldError(
            f"{engine_path}: built with TensorRT {key.trt_version}, this machine has {here_version}; "
            "rebuild it here with `ringfold build-engine BUNDLE`"
        )
    device, cc = env.device_name(), env.compute_capability()
    if key.device != device or key.compute_capability != cc:
        raise RingfoldError(
            f"{engine_path}: built for {key.device} (sm {key.compute_capability}), this GPU is {device} (sm {cc}); "
            "rebuild it here with `ringfold build-engine BUNDLE`"
        )
    if onnx_sha256 and key.onnx_sha256 != onnx_sha256:
        raise RingfoldError(
            f"{engine_path}: built from a different ONNX file than this bundle's; rebuild with `ringfold build-engine`"
        )
    if sha256_file(engine_path) != digest:
        raise RingfoldError(f"{engine_path}: sha256 differs from {meta.name} (modified or corrupt); {ENGINE_FIX}")
    return key


def find_engine(bundle_path: Path, precision: str, env: TrtEnvironment, onnx_sha256: str | Sequence[str]) -> Path:
    """The cached engine for this bundle, precision, TensorRT version and GPU (any batch profile).

    The candidates are the engines ``engines/index.json`` lists (:func:`~ringfold.runtime.bundle.engines.list_engines`).

    ``onnx_sha256``: the ONNX file(s) such an engine may come from (an fp16 engine is built from
    the fp32 graph with the FP16 flag, or strongly typed from the fp16 graph).
    """
    accepted = {onnx_sha256} if isinstance(onnx_sha256, str) else set(onnx_sha256)
    entries, _ = list_engines(bundle_path)  # an engine whose file or sidecar is gone is no candidate
    candidates = [e for e in entries if e.key.precision == precision and e.key.onnx_sha256 in accepted]
    if not candidates:
        raise RingfoldError(
            f"{bundle_path}: no {precision} TensorRT engine built yet; run "
            f"`ringfold build-engine {bundle_path} --precision {precision}` on this device"
        )
    errors = []
    for entry in candidates:
        try:
            check_engine(entry.path, env, entry.key.onnx_sha256)
            return entry.path
        except RingfoldError as exc:
            errors.append(str(exc))
    raise RingfoldError(errors[0])
