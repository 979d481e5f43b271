"""``ringfold build-engine``: a TensorRT engine from the bundle's ONNX, built on the target device.

TensorRT Python API end to end: Builder → network from the ONNX via
OnnxParser (parser errors printed with ONNX node names) → BuilderConfig
(workspace pool, FP16 / INT8 flags, optional fp32 pinning of LayerNorm and
Softmax) → one optimisation profile for the batch axis → serialized engine,
written atomically into ``BUNDLE/engines/`` with its key (see trt_engine).

Versions: 8.6 (JetPack 6.0) and 10.x (JetPack 6.1/6.2, desktop). Both use
explicit-batch networks (8.6 needs the EXPLICIT_BATCH flag, 10 has no
other kind), ``set_memory_pool_limit``, ``build_serialized_network`` and
tensor-name I/O. INT8 comes from the bundle's QDQ ONNX (explicit
quantization, any version); the legacy entropy calibrator (implicit
quantization) is offered for 8.6 only, where it still exists un-deprecated.
Strongly typed networks (10.x) are used with ``--strongly-typed``: the
ONNX types then decide every layer's precision.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ringfold.atomic import write_bytes
from ringfold.errors import RingfoldError
from ringfold.runtime.trt_engine import (
    CALIBRATION_CACHE,
    FP32_LAYER_OPS,
    LiveTrtEnvironment,
    current_key,
    engine_dir,
    import_cudart,
    import_tensorrt,
    parse_version,
    record_engine,
)


@dataclass
class BuildOptions:
    precision: str = "fp16"
    batch: tuple[int, int, int] = (1, 8, 16)
    workspace_mib: int = 1024
    timing_cache: Path | None = None
    fp32_layers: bool = False
    strongly_typed: bool = False
    calibrator: str | None = None  # "entropy": implicit INT8 calibration (TensorRT 8.6 only)
    calib: str | None = None
    calib_cache: Path | None = None


def source_onnx(bundle, precision: str, calibrator: str | None) -> tuple[str, Path]:
    """Which ONNX the engine is built from: the QDQ variant for int8, else the fp32 graph (+ FP16 flag)."""
    if precision == "int8" and calibrator is None:
        if "int8" not in bundle.variants:
            raise RingfoldError(
                f"{bundle.path}: no int8 (QDQ) model; re-export with --precision int8 --calib DIR, "
                "or pass --calibrator entropy --calib DIR (TensorRT 8.6)"
            )
        return "int8", bundle.model_path("int8")
    return "fp32", bundle.model_path("fp32")


def _parse(trt, network, logger, onnx_path: Path) -> None:
    parser = trt.OnnxParser(network, logger)
    if parser.parse_from_file(str(onnx_path)):
        return
    names = _onnx_node_names(onnx_path)
    problems = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        node = err.node()
        name = names[node] if 0 <= node < len(names) else "?"
        problems.append(f"node {node} ({name}): {err.desc()}")
    raise RingfoldError(
        f"{onnx_path}: TensorRT's ONNX parser failed — "
        + "; ".join(problems[:3])
        + "; run `ringfold check BUNDLE --target trt-…` for fixes"
    )


def _onnx_node_names(onnx_path: Path) -> list[str]:
    try:
        import onnx

        return [n.name for n in onnx.load(str(onnx_path), load_external_data=False).graph.node]
    except Exception:
        return []


def _pin_fp32(trt, network) -> int:
    """Keep normalisation, softmax and reductions in fp32 (fp16 LayerNorm after attention can overflow)."""
    kinds = {trt.LayerType.SOFTMAX, trt.LayerType.REDUCE}
    if hasattr(trt.LayerType, "NORMALIZATION"):
        kinds.add(trt.LayerType.NORMALIZATION)
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type in kinds or any(op in layer.name for op in FP32_LAYER_OPS):
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)
            pinned += 1
    return pinned


class EntropyCalibrator:
    """IInt8EntropyCalibrator2 over images preprocessed by the runtime; device buffer via cuda-python."""

    def __new__(cls, *args, **kwargs):  # subclass the TensorRT base lazily: tensorrt is optional
        trt = import_tensorrt()

        class _Calibrator(trt.IInt8EntropyCalibrator2):
            def __init__(self, batches: list[np.ndarray], cache: Path) -> None:
                super().__init__()
                self.cudart = import_cudart()
                self.batches, self.cache, self.index = batches, cache, 0
                err, self.device = self.cudart.cudaMalloc(batches[0].nbytes)
                if int(err) != 0:
                    raise RingfoldError("cudaMalloc failed for the calibration buffer")

            def get_batch_size(self) -> int:
                return len(self.batches[0])

            def get_batch(self, names):
                if self.index >= len(self.batches):
                    return None
                batch = np.ascontiguousarray(self.batches[self.index])
                self.index += 1
                kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
                self.cudart.cudaMemcpy(self.device, batch.ctypes.data, batch.nbytes, kind)
                return [int(self.device)]

            def read_calibration_cache(self):
                return self.cache.read_bytes() if self.cache.is_file() else None

            def write_calibration_cache(self, cache) -> None:
                write_bytes(self.cache, bytes(cache))

        return _Calibrator(*args, **kwargs)


def _calibration_batches(bundle, calib: str, batch: int) -> list[np.ndarray]:
    from ringfold.runtime.images import list_images, load_image
    from ringfold.runtime.preprocess import preprocess_batch

    paths = list_images([calib])
    if len(paths) < batch:
        raise RingfoldError(f"{calib}: {len(paths)} images; INT8 calibration needs at least one batch of {batch}")
    usable = len(paths) // batch * batch
    return [
        preprocess_batch([load_image(p) for p in paths[i : i + batch]], bundle.preprocess)
        for i in range(0, usable, batch)
    ]


def build_engine(bundle, options: BuildOptions, env=None, log=print) -> Path:
    trt = import_tensorrt()
    env = env or LiveTrtEnvironment()
    version = parse_version(trt.__version__)
    kind, onnx_path = source_onnx(bundle, options.precision, options.calibrator)
    onnx_sha = bundle.model_sha256(kind)
    lo, opt, hi = options.batch
    if not 1 <= lo <= opt <= hi:
        raise RingfoldError(f"--batch {lo},{opt},{hi} invalid; need 1 <= min <= opt <= max")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if version < (10,):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if options.strongly_typed:
        if not hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
            raise RingfoldError(f"--strongly-typed needs TensorRT 10 (this is {trt.__version__})")
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    _parse(trt, network, logger, onnx_path)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    if not options.strongly_typed:
        if options.precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
        if options.precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
    if options.fp32_layers and not options.strongly_typed:
        pinned = _pin_fp32(trt, network)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        log(f"pinned {pinned} LayerNorm/Softmax/reduce layers to fp32")
    if options.calibrator:
        if options.precision != "int8" or version >= (10,):
            raise RingfoldError("--calibrator is for --precision int8 on TensorRT 8.6; on 10.x use the QDQ int8 model")
        if not options.calib:
            raise RingfoldError("--calibrator entropy needs --calib DIR (images)")
        cache = options.calib_cache or engine_dir(bundle.path) / CALIBRATION_CACHE
        config.int8_calibrator = EntropyCalibrator(_calibration_batches(bundle, options.calib, opt), cache)

    input_tensor = network.get_input(0)
    chw = tuple(input_tensor.shape[1:])
    profile = builder.create_optimization_profile()
    profile.set_shape(input_tensor.name, (lo, *chw), (opt, *chw), (hi, *chw))
    config.add_optimization_profile(profile)
    if options.timing_cache is not None:
        blob = options.timing_cache.read_bytes() if options.timing_cache.is_file() else b""
        config.set_timing_cache(config.create_timing_cache(blob), ignore_mismatch=False)

    t0 = time.time()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RingfoldError(f"{onnx_path}: TensorRT could not build an engine (see the TensorRT log above)")
    key = current_key(onnx_sha, options.precision, (lo, opt, hi), env)
    out = engine_dir(bundle.path) / key.file_name()
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(out, bytes(serialized))
    if options.timing_cache is not None:
        write_bytes(options.timing_cache, bytes(config.get_timing_cache().serialize()))
    record_engine(
        out,
        key,
        {
            "source_onnx": onnx_path.name,
            "source_kind": kind,
            "build_seconds": time.time() - t0,
            "fp32_layers": options.fp32_layers,
            "strongly_typed": options.strongly_typed,
        },
    )
    return out
