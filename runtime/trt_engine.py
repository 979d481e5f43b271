"""TensorRT engine identity: what an engine was built for, where it lives, and when to refuse it.

A serialized TensorRT engine only runs on the TensorRT version and GPU it
was built with. ringfold names every engine by the ONNX file's sha256, the
TensorRT version, the GPU (name + compute capability), the precision and
the batch profile, keeps that key in a sidecar JSON, and checks it *before*
TensorRT is asked to deserialize anything — a mismatch is a one-line
"rebuild" error instead of a crash or a silently wrong engine.

The TensorRT/CUDA queries sit behind :class:`TrtEnvironment`, so the
naming and refusal logic is tested without a GPU.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from ringfold.atomic import sha256_file, write_json
from ringfold.errors import RingfoldError
from ringfold.runtime.fields import Fields, confined, read_json, relative_member_problem
from ringfold.runtime.limits import limits

ENGINE_DIR = "engines"
INDEX_FILE = "index.json"
CALIBRATION_CACHE = "calibration.cache"
#: fp16 LayerNorm after attention overflows on some TensorRT versions; these stay fp32 with --fp32-layers
FP32_LAYER_OPS = ("LayerNormalization", "Softmax", "ReduceL2", "ReduceMean")
MIN_TRT = (8, 6)


class TrtEnvironment(Protocol):
    def trt_version(self) -> str: ...

    def device_name(self) -> str: ...

    def compute_capability(self) -> str: ...


class LiveTrtEnvironment:
    """The installed TensorRT and the current CUDA device (cuda-python, as JetPack ships it)."""

    def __init__(self, device: int = 0) -> None:
        self.device = device

    def trt_version(self) -> str:
        trt = import_tensorrt()
        return trt.__version__

    def _props(self):
        cudart = import_cudart()
        err, props = cudart.cudaGetDeviceProperties(self.device)
        check_cuda(err, "cudaGetDeviceProperties")
        return props

    def device_name(self) -> str:
        name = self._props().name
        return name.decode(errors="replace").rstrip("\x00") if isinstance(name, bytes) else str(name)

    def compute_capability(self) -> str:
        props = self._props()
        return f"{props.major}.{props.minor}"


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise RingfoldError(
            "TensorRT is not installed: on Jetson it comes with JetPack (python3-libnvinfer); on a desktop "
            "`pip install ringfold[trt]`"
        ) from None
    if parse_version(trt.__version__) < MIN_TRT:
        raise RingfoldError(
            f"TensorRT {trt.__version__} is too old: ringfold needs 8.6 (JetPack 6.0) or 10.x; upgrade JetPack/TensorRT"
        )
    return trt


def import_cudart():
    """cuda-python's runtime bindings; the module moved in cuda-python 12.6+/13."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            raise RingfoldError(
                "cuda-python is not installed: `pip install cuda-python` matching your CUDA (JetPack 6: 12.x)"
            ) from None
    return cudart


def check_cuda(err, what: str) -> None:
    code = err[0] if isinstance(err, tuple) else err
    if int(code) != 0:
        raise RingfoldError(f"CUDA call {what} failed ({code}); is a CUDA device visible (nvidia-smi / tegrastats)?")


def parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


@dataclass(frozen=True)
class EngineKey:
    onnx_sha256: str
    trt_version: str
    device: str
    compute_capability: str
    precision: str
    batch: tuple[int, int, int]  # min, opt, max

    def file_name(self) -> str:
        major_minor = ".".join(str(v) for v in parse_version(self.trt_version)[:2])
        b = "-".join(str(x) for x in self.batch)
        return (
            f"model-{self.precision}-trt{major_minor}-{_slug(self.device)}-sm{self.compute_capability.replace('.', '')}"
            f"-b{b}-{self.onnx_sha256[:12]}.engine"
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["batch"] = list(self.batch)
        return d

    @classmethod
    def parse(cls, f: Fields) -> EngineKey:
        """A key from an engine sidecar or index entry, every field type-checked."""
        batch = f.raw("batch")
        if not isinstance(batch, list) or len(batch) != 3:
            raise f.fail("must be [min, opt, max]", "batch")
        lo, opt, hi = (f.check_integer(b, f"batch[{i}]", 1, 1 << 16) for i, b in enumerate(batch))
        if not lo <= opt <= hi:
            raise f.fail(f"is {batch}, needs min <= opt <= max", "batch")
        capability = f.string("compute_capability", max_len=16)
        if not re.fullmatch(r"\d+\.\d+", capability):
            raise f.fail(f"is {capability!r}, not MAJOR.MINOR", "compute_capability")
        return cls(
            onnx_sha256=f.sha256(f.raw("onnx_sha256"), "onnx_sha256"),
            trt_version=f.string("trt_version", max_len=64),
            device=f.string("device", max_len=256),
            compute_capability=capability,
            precision=f.string("precision", choices=("fp32", "fp16", "int8")),
            batch=(lo, opt, hi),
        )


ENGINE_FIX = "rebuild it with `ringfold build-engine BUNDLE`"


def engine_dir(bundle_path: Path) -> Path:
    """``BUNDLE/engines``, refused when it (a symlink) leads out of the bundle."""
    if confined(bundle_path, ENGINE_DIR) is None:
        raise RingfoldError(f"{bundle_path / ENGINE_DIR}: resolves outside the bundle (symlink?); remove the link")
    return bundle_path / ENGINE_DIR


def sidecar(engine_path: Path) -> Path:
    return engine_path.with_suffix(".json")


def read_sidecar(meta: Path) -> tuple[EngineKey, str]:
    """(key, engine sha256) recorded when the engine was built."""
    f = Fields(read_json(meta, ENGINE_FIX, limits().max_json_bytes), meta, ENGINE_FIX)
    return EngineKey.parse(f.section("key")), f.sha256(f.raw("sha256"), "sha256")


def record_engine(engine_path: Path, key: EngineKey, extra: dict | None = None) -> None:
    """Write the engine's key and sha256 next to it and into the bundle's engines/index.json."""
    digest = sha256_file(engine_path)
    write_json(sidecar(engine_path), {"key": key.to_dict(), "sha256": digest, **(extra or {})})
    index_path = engine_path.parent / INDEX_FILE
    engines = dict(read_index(index_path)) if index_path.is_file() else {}
    engines[engine_path.name] = {**key.to_dict(), "sha256": digest}
    write_json(index_path, {"format": "ringfold-engines", "engines": engines})


def read_index(index_path: Path) -> dict[str, dict]:
    """engines/index.json: engine file name -> its key and sha256, each entry type-checked."""
    f = Fields(read_json(index_path, ENGINE_FIX, limits().max_json_bytes), index_path, ENGINE_FIX)
    engines = f.section("engines")
    for name in engines.data:
        if relative_member_problem(name) or "/" in name or not name.endswith(".engine"):
            raise engines.fail("must name .engine files inside engines/", name)
        entry = engines.section(name)
        EngineKey.parse(entry)
        entry.sha256(entry.raw("sha256"), "sha256")
    return dict(engines.data)


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


def find_engine(bundle_path: Path, precision: str, env: TrtEnvironment, onnx_sha256: str) -> Path:
    """The cached engine for this bundle, precision, TensorRT version and GPU (any batch profile)."""
    directory = engine_dir(bundle_path)
    candidates = []
    for meta in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        if meta.name == INDEX_FILE:
            continue
        for path in (meta, meta.with_suffix(".engine")):
            if confined(bundle_path, f"{ENGINE_DIR}/{path.name}") is None:
                raise RingfoldError(f"{path}: resolves outside the bundle (symlink?); {ENGINE_FIX}")
        key, _ = read_sidecar(meta)
        if key.precision == precision and key.onnx_sha256 == onnx_sha256:
            candidates.append((meta.with_suffix(".engine"), key))
    if not candidates:
        raise RingfoldError(
            f"{bundle_path}: no {precision} TensorRT engine built yet; run "
            f"`ringfold build-engine {bundle_path} --precision {precision}` on this device"
        )
    errors = []
    for path, _key in candidates:
        try:
            check_engine(path, env, onnx_sha256)
            return path
        except RingfoldError as exc:
            errors.append(str(exc))
    raise RingfoldError(errors[0])


# --------------------------------------------------------------------------------------------- trtexec
def trtexec_command(
    onnx_path: str,
    engine_path: str,
    input_name: str,
    chw: tuple[int, int, int],
    batch: tuple[int, int, int],
    precision: str,
    trt_version: str,
    workspace_mib: int = 1024,
    timing_cache: str | None = None,
    fp32_layers: list[str] | None = None,
) -> str:
    """The trtexec line equivalent to ``ringfold build-engine`` for this TensorRT version."""
    version = parse_version(trt_version)
    c, h, w = chw

    def shape(b: int) -> str:
        return f"{input_name}:{b}x{c}x{h}x{w}"

    parts = [
        "trtexec",
        f"--onnx={onnx_path}",
        f"--saveEngine={engine_path}",
        f"--minShapes={shape(batch[0])}",
        f"--optShapes={shape(batch[1])}",
        f"--maxShapes={shape(batch[2])}",
    ]
    # --workspace was deprecated in 8.4 and removed in 10; --memPoolSize takes MiB with an M suffix
    parts.append(f"--memPoolSize=workspace:{workspace_mib}M" if version >= (8, 4) else f"--workspace={workspace_mib}")
    if precision in ("fp16", "int8"):
        parts.append("--fp16")
    if precision == "int8":
        parts.append("--int8")  # the QDQ graph carries its scales: no calibration cache needed
    if fp32_layers:
        parts += ["--precisionConstraints=obey", "--layerPrecisions=" + ",".join(f"{n}:fp32" for n in fp32_layers)]
    if timing_cache:
        parts.append(f"--timingCacheFile={timing_cache}")
    return " ".join(parts)


def fp32_layer_names(onnx_path: str | Path) -> list[str]:
    """ONNX node names of the LayerNorm / Softmax / reductions that ``--fp32-layers`` pins to fp32."""
    try:
        import onnx
    except ImportError:
        return []
    model = onnx.load(str(onnx_path), load_external_data=False)
    return [n.name for n in model.graph.node if n.op_type in FP32_LAYER_OPS]
