"""Run a TensorRT engine from a bundle: numpy in, numpy out, no torch.

The engine is deserialized and run through Polygraphy (``EngineFromBytes``,
``TrtRunner``), which does the device memory, the stream and the TensorRT
8.6/10.x API differences with its own CUDA-runtime wrapper — no CUDA Python
bindings. What stays here is ringfold's: the engine is checked against its
key and sha256 before TensorRT sees it, the batch must lie in the engine's
optimisation profile (else a one-line refusal with the rebuild command),
and outputs are returned as float32 arrays the caller owns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ringfold.errors import RingfoldError
from ringfold.runtime.bundle.engines import read_sidecar, sidecar
from ringfold.runtime.bundle.loader import Bundle
from ringfold.runtime.bundle.manifest import check_model_io

from ..base import Backend, IoSpec
from .engines import LiveTrtEnvironment, check_engine, find_engine
from .plan import engine_sources
from .stack import require_trt_stack, run_polygraphy


def load_engine(data: bytes, path: Path):
    """Deserialize engine bytes with Polygraphy's ``EngineFromBytes``; a refusal by TensorRT is one line."""
    from polygraphy.backend.trt import EngineFromBytes

    trt = require_trt_stack()
    return run_polygraphy(
        EngineFromBytes(data),
        f"{path}: TensorRT {trt.__version__} could not deserialize it",
        "built by another TensorRT version or for another GPU? rebuild it here with `ringfold build-engine BUNDLE`",
        severity="ERROR",
    )


def engine_io(engine) -> tuple[list[IoSpec], list[IoSpec], tuple[int, int, int]]:
    """(inputs, outputs, batch profile) of a deserialized engine; I/O as (name, dtype, shape), -1 dims as None.

    The profile is (min, opt, max) of the first input's batch axis in optimisation profile 0.
    """
    trt = require_trt_stack()

    def describe(name: str) -> IoSpec:
        dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name
        shape = [None if d < 0 else int(d) for d in engine.get_tensor_shape(name)]
        return name, dtype, shape

    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    is_input = [engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names]
    inputs = [describe(n) for n, i in zip(names, is_input, strict=True) if i]
    outputs = [describe(n) for n, i in zip(names, is_input, strict=True) if not i]
    if not inputs:
        raise RingfoldError("the TensorRT engine has no input; rebuild it with `ringfold build-engine BUNDLE`")
    lo, opt, hi = engine.get_tensor_profile_shape(inputs[0][0], 0)
    return inputs, outputs, (int(lo[0]), int(opt[0]), int(hi[0]))


class TensorRTModel(Backend):
    """A checked engine behind Polygraphy's ``TrtRunner``; ``run`` takes a batch inside the engine's profile.

    ``run_batched`` splits by the profile's max; a last slice below its min is refused like any other batch.
    """

    backend = "tensorrt"

    def __init__(self, engine_path: Path, onnx_sha256: str | None = None, env=None) -> None:
        from polygraphy.backend.trt import TrtRunner

        self.trt = trt = require_trt_stack()
        env = env or LiveTrtEnvironment()
        self.path = Path(engine_path)
        self.key = check_engine(self.path, env, onnx_sha256)  # refuse before deserializing
        engine = load_engine(self.path.read_bytes(), self.path)
        self._inputs, self._outputs, (lo, _, hi) = engine_io(engine)
        if len(self._inputs) != 1:
            raise RingfoldError(f"{self.path}: {len(self._inputs)} inputs, a bundle model has one; rebuild it")
        self.input_name, dtype, shape = self._inputs[0]
        self._input_dtype = np.dtype(dtype)
        self._sample_shape = tuple(shape[1:])
        self.output_names = [name for name, _, _ in self._outputs]
        self.min_batch, self.max_batch = lo, hi
        self.provider = f"TensorRT {trt.__version__} on {self.key.device}"
        self._runner = TrtRunner(engine)
        run_polygraphy(
            self._runner.activate,
            f"{self.path}: TensorRT could not create an execution context",
            "free GPU memory (other processes?) or rebuild with a smaller --batch max",
            "ERROR",
        )

    def run(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        batch = len(pixels)
        if not self.min_batch <= batch <= self.max_batch:
            lo, hi = min(batch, self.min_batch), max(batch, self.max_batch)
            raise RingfoldError(
                f"batch {batch} is outside this engine's profile {self.min_batch}..{self.max_batch}; "
                f"rebuild with `ringfold build-engine BUNDLE --batch {lo},{batch},{hi}`"
            )
        if tuple(pixels.shape[1:]) != self._sample_shape:
            raise RingfoldError(
                f"input of shape {list(pixels.shape)} does not fit {self.path.name} (batch x "
                f"{'x'.join(str(d) for d in self._sample_shape)}); preprocess with the bundle's preprocess.json"
            )
        feed = {self.input_name: np.ascontiguousarray(pixels, dtype=self._input_dtype)}
        # batch and shape are checked above, so Polygraphy's own per-call input check is skipped
        outputs = run_polygraphy(
            lambda: self._runner.infer(feed, check_inputs=False),
            f"{self.path}: TensorRT inference failed",
            "see the TensorRT log above; rebuild the engine with `ringfold build-engine BUNDLE` if it persists",
            "ERROR",
        )
        # copies: the runner reuses its output buffers on the next call
        return {name: np.array(outputs[name], dtype=np.float32) for name in self.output_names}

    def io(self) -> tuple[list[IoSpec], list[IoSpec]]:
        """(name, dtype, shape) of the engine's inputs and outputs; dynamic dims (-1) are None."""
        return list(self._inputs), list(self._outputs)

    def close(self) -> None:
        """Free the runner's device memory and stream (also done when the model is garbage-collected)."""
        runner = getattr(self, "_runner", None)
        if runner is not None and runner.is_active:
            try:
                runner.deactivate()
            except Exception:  # interpreter shutdown: CUDA may already be gone
                pass

    def __del__(self) -> None:
        self.close()


def open_trt_model(bundle: Bundle, precision: str) -> TensorRTModel:
    """The cached engine for ``precision`` that matches this TensorRT and GPU, loaded."""
    kinds = engine_sources(bundle, precision)
    require_trt_stack()
    env = LiveTrtEnvironment()
    shas = [bundle.model_sha256(kind) for kind in kinds]
    path = find_engine(bundle.path, precision, env, shas)
    key, _ = read_sidecar(sidecar(path))
    model = TensorRTModel(path, key.onnx_sha256, env)
    check_model_io(bundle.manifest, path, *model.io())
    return model
