"""TensorRT's text INT8 calibration cache: written from per-tensor scales, read back, re-headed per version.

The cache is TensorRT's format (IInt8EntropyCalibrator2): a header naming the TensorRT version and
calibrator, then one ``tensor: <big-endian float32 scale in hex>`` line per tensor. The export writes
one for the raw-input model's DeepStream INT8 configs; ``ringfold deepstream`` re-heads it for the
target's TensorRT. Plain text: nothing here imports TensorRT.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping

from ringfold.errors import RingfoldError

#: the header TensorRT 8.6.1 writes for IInt8EntropyCalibrator2 caches
CALIBRATION_HEADER = "TRT-8601-EntropyCalibration2"


def calibration_cache(scales: Mapping[str, float]) -> str:
    """TensorRT's text calibration cache: the header, then ``tensor: <big-endian float32 scale in hex>`` lines."""
    lines = [CALIBRATION_HEADER]
    for name, scale in sorted(scales.items()):  # sorted: the same cache for the same model and images
        if not name or any(c in name for c in ":\r\n") or not (scale > 0 and scale < float("inf")):
            continue  # a name TensorRT's parser cannot read back, or a scale it must not use
        lines.append(f"{name}: {struct.pack('>f', scale).hex()}")
    return "\n".join(lines) + "\n"


def calibration_header(trt_version: str) -> str:
    """The header line the given TensorRT writes (and expects) for an entropy-2 cache.

    The number is TensorRT's ``NV_TENSORRT_VERSION``: major·1000 + minor·100 + patch up to 8.x
    (8.6.1 → 8601), major·10000 + minor·100 + patch from 10.0 (10.3.0 → 100300). TensorRT 10 is
    reported to refuse a cache whose header names another version, so ``ringfold deepstream``
    rewrites it for the target's TensorRT.
    """
    parts = [int(p) for p in trt_version.split(".")[:3]] + [0, 0]
    major, minor, patch = parts[:3]
    number = major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch
    return f"TRT-{number}-EntropyCalibration2"


def with_header(cache: str, header: str) -> str:
    """``cache`` with its first line replaced by ``header`` (the scales are the same for any version)."""
    return header + "\n" + cache.split("\n", 1)[1]


def read_calibration_cache(text: str, source: str = "calibration cache") -> dict[str, float]:
    """The scales of a text cache like :func:`calibration_cache` writes; one line naming the problem otherwise."""
    lines = text.splitlines()
    if not lines or not re.fullmatch(r"TRT-\d+-\w+", lines[0]):
        raise RingfoldError(f"{source}: first line must be TensorRT's header (TRT-<version>-<calibrator>)")
    out = {}
    for number, line in enumerate(lines[1:], start=2):
        name, _, hexed = line.rpartition(": ")
        if not name or not re.fullmatch(r"[0-9a-f]{8}", hexed):
            raise RingfoldError(f"{source}: line {number} is not 'tensor: <8 hex digits>'; re-export the bundle")
        out[name] = struct.unpack(">f", bytes.fromhex(hexed))[0]
    return out
