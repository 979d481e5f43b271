"""Run a TensorRT engine from a bundle: numpy in, numpy out, no torch.

Tensor-name I/O and ``execute_async_v3`` (TensorRT 8.6 and 10.x both have
them; the bindings API is gone in 10). Device memory and the stream come
from cuda-python. The batch may vary within the engine's optimisation
profile; a batch above it is split, and one outside it is refused with the
rebuild command.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ringfold.errors import RingfoldError
from ringfold.runtime.trt_engine import LiveTrtEnvironment, check_cuda, check_engine, import_cudart, import_tensorrt


class TensorRTModel:
    backend = "tensorrt"

    def __init__(self, engine_path: Path, onnx_sha256: str | None = None, env=None) -> None:
        self.trt = trt = import_tensorrt()
        self.cudart = import_cudart()
        env = env or LiveTrtEnvironment()
        self.key = check_engine(engine_path, env, onnx_sha256)  # refuse before deserializing
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise RingfoldError(
                f"{engine_path}: TensorRT could not deserialize it; rebuild with `ringfold build-engine`"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == mode)
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) != mode]
        lo, _, hi = self.engine.get_tensor_profile_shape(self.input_name, 0)
        self.min_batch, self.max_batch = int(lo[0]), int(hi[0])
        err, self.stream = self.cudart.cudaStreamCreate()
        check_cuda(err, "cudaStreamCreate")
        self.provider = f"TensorRT {trt.__version__} on {self.key.device}"
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)

    def _device_buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                self.cudart.cudaFree(ptr)
            err, ptr = self.cudart.cudaMalloc(nbytes)
            check_cuda(err, "cudaMalloc")
            self._buffers[name] = (ptr, nbytes)
        return self._buffers[name][0]

    def run(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        batch = len(pixels)
        if not self.min_batch <= batch <= self.max_batch:
            lo, hi = min(batch, self.min_batch), max(batch, self.max_batch)
            raise RingfoldError(
                f"batch {batch} is outside this engine's profile {self.min_batch}..{self.max_batch}; "
                f"rebuild with `ringfold build-engine BUNDLE --batch {lo},{batch},{hi}`"
            )
        cudart, trt = self.cudart, self.trt
        host_in = np.ascontiguousarray(pixels, dtype=np.float32)
        self.context.set_input_shape(self.input_name, host_in.shape)
        d_in = self._device_buffer(self.input_name, host_in.nbytes)
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check_cuda(cudart.cudaMemcpyAsync(d_in, host_in.ctypes.data, host_in.nbytes, h2d, self.stream), "memcpy")
        self.context.set_tensor_address(self.input_name, d_in)
        outputs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            host = np.empty(shape, dtype=dtype)
            self.context.set_tensor_address(name, self._device_buffer(name, host.nbytes))
            outputs[name] = host
        if not self.context.execute_async_v3(self.stream):
            raise RingfoldError("TensorRT execution failed (execute_async_v3 returned False)")
        for name, host in outputs.items():
            ptr = self._buffers[name][0]
            check_cuda(cudart.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes, d2h, self.stream), "memcpy")
        check_cuda(cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return {name: host.astype(np.float32, copy=False) for name, host in outputs.items()}

    def run_batched(self, pixels: np.ndarray, batch: int | None = None) -> dict[str, np.ndarray]:
        step = min(batch or self.max_batch, self.max_batch)
        parts = [self.run(pixels[i : i + step]) for i in range(0, len(pixels), step)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}

    def io(self) -> tuple[list[tuple[str, str, list]], list[tuple[str, str, list]]]:
        """(name, dtype, shape) of the engine's inputs and outputs; dynamic dims (-1) are None."""

        def describe(name: str) -> tuple[str, str, list]:
            dtype = np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name))).name
            shape = [None if d < 0 else int(d) for d in self.engine.get_tensor_shape(name)]
            return name, dtype, shape

        return [describe(self.input_name)], [describe(n) for n in self.output_names]

    def __del__(self) -> None:
        cudart = getattr(self, "cudart", None)
        for ptr, _ in getattr(self, "_buffers", {}).values():
            if cudart is not None and ptr:
                cudart.cudaFree(ptr)


def open_trt_model(bundle, precision: str):
    """The cached engine for ``precision`` that matches this TensorRT and GPU, loaded."""
    from ringfold.runtime.trt_engine import find_engine

    env = LiveTrtEnvironment()
    # int8 engines come from the QDQ model, or (calibrator path) from the fp32 one
    source = "int8" if precision == "int8" and "int8" in bundle.variants else "fp32"
    from ringfold.runtime.bundle import check_model_io

    onnx_sha = bundle.model_sha256(source)
    path = find_engine(bundle.path, precision, env, onnx_sha)
    model = TensorRTModel(path, onnx_sha, env)
    check_model_io(bundle.manifest, path, *model.io())
    return model
