"""The GPU an engine is built for, asked through the CUDA runtime library (ctypes), or nvidia-smi.

The GPU's name and compute capability are part of every engine's key. They come from the CUDA
runtime itself (``libcudart``, the library Polygraphy's TensorRT runner loads), so no CUDA Python
bindings are needed; on a desktop without one, ``nvidia-smi`` names the GPU for ``--print-trtexec``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
import shutil
import subprocess

from ringfold.errors import RingfoldError

from .stack import polygraphy_log

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
