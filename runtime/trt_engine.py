"""TensorRT engine identity: what an engine was built for, where it lives, and when to refuse it.

A serialized TensorRT engine only runs on the TensorRT version and GPU it
was built with. ringfold names every engine by the ONNX file's sha256, the
TensorRT version, the GPU (name + compute capability), the precision and
the batch profile, keeps that key in a sidecar JSON, and checks it *before*
TensorRT is asked to deserialize anything — a mismatch is a one-line
"rebuild" error instead of a crash or a silently wrong engine.

The TensorRT/CUDA queries sit behind :class:`TrtEnvironment`, so the
naming and refusal logic is tested without a GPU. The GPU is asked through
the CUDA runtime library itself (ctypes; the same ``libcudart`` Polygraphy's
TensorRT runner loads), so no CUDA Python bindings are needed.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import functools
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from ringfold.atomic import sha256_file, write_json
from ringfold.errors import RingfoldError
from ringfold.ownership import RECORD_FILE, read_record, record_files

from .fields import Fields, confined, read_json, relative_member_problem
from .limits import limits
from .precision_policy import fp32_node_names

ENGINE_DIR = "engines"
INDEX_FILE = "index.json"
CALIBRATION_CACHE = "calibration.cache"
MIN_TRT = (8, 6)
#: the first TensorRT major ringfold has not been written against (its API changed at every major so far)
NEXT_TRT_MAJOR = (11,)


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


TRT_MISSING = (
    "TensorRT is not installed: on Jetson it comes with JetPack (python3-libnvinfer); on a desktop "
    "`pip install 'ringfold[tensorrt]'`"
)
POLYGRAPHY_MISSING = (
    "Polygraphy (NVIDIA's TensorRT toolkit ringfold builds and runs engines with) is not installed: "
    "`pip install 'ringfold[trt]'`, or on Jetson, where TensorRT comes with JetPack, `pip install polygraphy`"
)


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise RingfoldError(TRT_MISSING) from None
    if parse_version(trt.__version__) < MIN_TRT:
        raise RingfoldError(
            f"TensorRT {trt.__version__} is too old: ringfold needs 8.6 (JetPack 6.0) or 10.x; upgrade JetPack/TensorRT"
        )
    if parse_version(trt.__version__) >= NEXT_TRT_MAJOR:
        _warn_untested_trt(trt.__version__)
    return trt


@functools.cache
def _warn_untested_trt(version: str) -> None:
    """Once per process: a newer major may work through Polygraphy, but nobody has checked it."""
    print(
        f"ringfold: note: TensorRT {version} is newer than the 8.6 and 10.x ringfold is written and tested for; "
        "if a build or run fails, say so with this version in the report",
        file=sys.stderr,
    )


def import_polygraphy():
    """The ``polygraphy`` package, or the one-line install instruction."""
    try:
        import polygraphy
        from polygraphy.backend import trt as _  # noqa: F401 (a broken install fails here, not mid-build)
    except ImportError:
        raise RingfoldError(POLYGRAPHY_MISSING) from None
    return polygraphy


def require_trt_stack():
    """TensorRT, then Polygraphy: each missing one is a one-line install instruction. Returns tensorrt."""
    trt = import_tensorrt()
    import_polygraphy()
    return trt


@contextlib.contextmanager
def polygraphy_log(severity: str = "WARNING") -> Iterator[None]:
    """Polygraphy's log (and TensorRT's, which it forwards) at ``severity`` and above, on stderr.

    Polygraphy prints to stdout; ringfold's stdout is the command's result (JSON lines,
    the parity table), so the log is sent to stderr while Polygraphy works.
    """
    try:
        from polygraphy.logger import G_LOGGER
    except ImportError:  # a Polygraphy without its logger module (stand-ins in tests): the redirect only
        G_LOGGER = None
    with contextlib.redirect_stdout(sys.stderr):
        if G_LOGGER is None:
            yield
            return
        with G_LOGGER.verbosity(getattr(G_LOGGER, severity)):
            yield


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:200] if lines else type(exc).__name__


def run_polygraphy(loader, what: str, fix: str, severity: str = "WARNING"):
    """Call a Polygraphy loader or runner method; a failure becomes ``what (Polygraphy's first line); fix``.

    Polygraphy raises ``PolygraphyException`` after logging the details (TensorRT's own
    messages included) on stderr, so the one-line error can point "above".
    """
    from polygraphy.exception import PolygraphyException

    try:
        with polygraphy_log(severity):
            return loader()
    except PolygraphyException as exc:
        raise RingfoldError(f"{what} ({_first_line(exc)}); {fix}") from None


# ------------------------------------------------------------------------------------------------ CUDA
#: cudaDeviceAttr values, stable since CUDA 5
_CC_MAJOR, _CC_MINOR = 75, 76
#: cudaDeviceProp grows with CUDA releases; its first member has always been ``char name[256]``
_PROP_BYTES, _NAME_BYTES = 16384, 256


def _libcudart():
    """The CUDA runtime library: Polygraphy's (the one its TensorRT runner uses) when installed, else found here."""
    try:
        from polygraphy import cuda

        with polygraphy_log("CRITICAL"):  # "not found" is a warning there; here it is the error below
            return cuda.wrapper().handle
    except ImportError:
        pass
    except Exception:  # Polygraphy did not find it either; its search and ours differ a little
        pass
    names = [ctypes.util.find_library("cudart"), "libcudart.so", "libcudart.so.13", "libcudart.so.12"]
    for name in filter(None, names):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise RingfoldError(
        "the CUDA runtime library (libcudart.so) was not found; on Jetson it comes with JetPack "
        "(/usr/local/cuda/lib64 on LD_LIBRARY_PATH), on a desktop install the CUDA runtime"
    )


def check_cuda(status, what: str) -> None:
    code = status[0] if isinstance(status, tuple) else status
    if int(code) != 0:
        raise RingfoldError(f"CUDA call {what} failed ({code}); is a CUDA device visible (nvidia-smi / tegrastats)?")


def cuda_device(device: int = 0) -> tuple[str, str]:
    """(name, "MAJOR.MINOR") of a CUDA device, as the CUDA runtime reports them (the engine key's GPU)."""
    lib = _libcudart()
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    check_cuda(lib.cudaDeviceGetAttribute(ctypes.byref(major), _CC_MAJOR, device), "cudaDeviceGetAttribute")
    check_cuda(lib.cudaDeviceGetAttribute(ctypes.byref(minor), _CC_MINOR, device), "cudaDeviceGetAttribute")
    props = ctypes.create_string_buffer(_PROP_BYTES)
    get = getattr(lib, "cudaGetDeviceProperties_v2", None) or lib.cudaGetDeviceProperties
    check_cuda(get(props, device), "cudaGetDeviceProperties")
    name = props.raw[:_NAME_BYTES].split(b"\0", 1)[0].decode(errors="replace").strip()
    return name, f"{major.value}.{minor.value}"


def cuda_device_count() -> int:
    """CUDA devices visible to the CUDA runtime; 0 when there is no runtime, driver or device."""
    try:
        lib = _libcudart()
        n = ctypes.c_int(0)
        return n.value if lib.cudaGetDeviceCount(ctypes.byref(n)) == 0 else 0
    except Exception:
        return 0


def parse_nvidia_smi(text: str) -> tuple[str, str] | None:
    """The first GPU of ``nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader``; None if unusable."""
    for line in text.splitlines():
        name, _, cc = line.rpartition(",")
        name, cc = name.strip(), cc.strip()
        if name and re.fullmatch(r"\d+\.\d+", cc):
            return name, cc
        return None  # first GPU only: it is CUDA device 0 unless CUDA_VISIBLE_DEVICES says otherwise
    return None


def nvidia_smi_gpu(timeout: float = 10.0) -> tuple[str, str] | None:
    """The first GPU as nvidia-smi names it (desktops; Jetson's nvidia-smi may not report compute_cap)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        done = subprocess.run(
            [exe, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_nvidia_smi(done.stdout) if done.returncode == 0 else None


def detect_gpu() -> tuple[str, str] | None:
    """(name, compute capability) of this machine's GPU — CUDA runtime first, then nvidia-smi — or None."""
    try:
        return cuda_device(0)
    except RingfoldError:
        return nvidia_smi_gpu()


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
        """``model-fp16-trt10.3-orin-sm87-b1-8-16-<sha12>.engine``; without the GPU part when ``device`` is empty.

        A key without a device only names an engine a user builds elsewhere (``--print-trtexec`` on a
        machine that cannot see the target GPU); ``--register`` renames it once the GPU is known.
        """
        major_minor = ".".join(str(v) for v in parse_version(self.trt_version)[:2])
        b = "-".join(str(x) for x in self.batch)
        gpu = f"-{_slug(self.device)}-sm{self.compute_capability.replace('.', '')}" if self.device else ""
        return f"model-{self.precision}-trt{major_minor}{gpu}-b{b}-{self.onnx_sha256[:12]}.engine"

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
    record_files(engine_path.parent, "ringfold build-engine", [engine_path.name, sidecar(engine_path).name, INDEX_FILE])


def check_engine_slot(engine_path: Path) -> None:
    """Before a build: what ``record_engine`` will replace in engines/ (this engine, its sidecar, the index)
    must be absent or ringfold's, unchanged — an engine or index someone else put there is never overwritten."""
    directory = engine_path.parent
    recorded = None
    for path in (engine_path, sidecar(engine_path), directory / INDEX_FILE):
        if not os.path.lexists(path):
            continue
        if recorded is None:
            try:
                recorded = read_record(directory)
            except RingfoldError:
                recorded = {}
        if path.is_symlink() or sha256_file(path) not in recorded.get(path.name, set()):
            raise RingfoldError(
                f"{path}: not written by ringfold build-engine (or changed since); ringfold never replaces it — "
                "move it out of engines/ and build again"
            )


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


def find_engine(bundle_path: Path, precision: str, env: TrtEnvironment, onnx_sha256: str | Sequence[str]) -> Path:
    """The cached engine for this bundle, precision, TensorRT version and GPU (any batch profile).

    ``onnx_sha256``: the ONNX file(s) such an engine may come from (an fp16 engine is built from
    the fp32 graph with the FP16 flag, or strongly typed from the fp16 graph).
    """
    accepted = {onnx_sha256} if isinstance(onnx_sha256, str) else set(onnx_sha256)
    directory = engine_dir(bundle_path)
    candidates = []
    for meta in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        if meta.name in (INDEX_FILE, RECORD_FILE):
            continue
        for path in (meta, meta.with_suffix(".engine")):
            if confined(bundle_path, f"{ENGINE_DIR}/{path.name}") is None:
                raise RingfoldError(f"{path}: resolves outside the bundle (symlink?); {ENGINE_FIX}")
        key, _ = read_sidecar(meta)
        if key.precision == precision and key.onnx_sha256 in accepted:
            candidates.append((meta.with_suffix(".engine"), key))
    if not candidates:
        raise RingfoldError(
            f"{bundle_path}: no {precision} TensorRT engine built yet; run "
            f"`ringfold build-engine {bundle_path} --precision {precision}` on this device"
        )
    errors = []
    for path, key in candidates:
        try:
            check_engine(path, env, key.onnx_sha256)
            return path
        except RingfoldError as exc:
            errors.append(str(exc))
    raise RingfoldError(errors[0])


# ------------------------------------------------------------------------------------------ CLI values
def trt_version_arg(text: str) -> str:
    """``--trt-version``: MAJOR.MINOR[.PATCH…] of a TensorRT ringfold supports (8.6 or newer)."""
    if not re.fullmatch(r"\d{1,3}(\.\d{1,5}){1,3}", text):
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a TensorRT version (e.g. 8.6.2 or 10.3)")
    if parse_version(text) < MIN_TRT:
        raise argparse.ArgumentTypeError(f"{text} is older than TensorRT 8.6, the oldest ringfold supports")
    return text


def compute_capability_arg(text: str) -> str:
    """``--sm``: a CUDA compute capability, MAJOR.MINOR as the CUDA runtime reports it (Orin: 8.7)."""
    if not re.fullmatch(r"\d{1,2}\.\d{1,2}", text):
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a compute capability (MAJOR.MINOR, e.g. 8.7)")
    return text


def gpu_name_arg(text: str) -> str:
    """``--gpu``: the CUDA device name (``Orin``, ``NVIDIA GeForce RTX 4090``); printable, at most 256 characters."""
    name = text.strip()
    if not name or len(name) > 256 or not name.isprintable() or not _slug(name):
        raise argparse.ArgumentTypeError(
            f"{text[:40]!r} is not a GPU name (the CUDA device name, e.g. Orin or 'NVIDIA GeForce RTX 4090')"
        )
    return name


# ----------------------------------------------------------------------------------------- fp32 layers
def fp32_layer_names(onnx_path: str | Path) -> list[str] | None:
    """ONNX node names ``--fp32-layers`` pins (None: no ``onnx`` package to read them).

    The nodes are those :mod:`~ringfold.runtime.precision_policy` keeps fp32: LayerNorm, Softmax,
    the reductions, Pow/Sqrt, and the final L2-normalisation with the head. TensorRT's ONNX parser
    names each layer after its node, so these are the names trtexec's ``--layerPrecisions`` takes;
    unnamed nodes are left to the layer-type rule of the build.
    """
    try:
        import onnx
    except ImportError:
        return None
    model = onnx.load(str(onnx_path), load_external_data=False)
    return fp32_node_names(model)
