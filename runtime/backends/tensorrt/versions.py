"""The TensorRT versions a Jetson or desktop user meets, and what each one can still be asked to do.

TensorRT changed how precision is chosen twice in the releases ringfold supports: 8.6 (JetPack 6.0)
builds weakly typed networks only (builder flags FP16/INT8 let TensorRT pick kernels, the INT8
entropy calibrator measures ranges); 10.x (JetPack 6.1/6.2: 10.3; JetPack 7.2, DeepStream 9.2:
10.16) has both, strongly typed behind ``--stronglyTyped`` / ``NetworkFromOnnxPath(strongly_typed=True)``;
11.x (JetPack >= 7.2.2, desktop) builds every network strongly typed and has no FP16/INT8 flags, no
calibrators, and no trtexec ``--fp16 --int8 --best --calib`` (NVIDIA's 10.x -> 11.x migration guide;
there ``--stronglyTyped`` is always on and no longer needed).

Every capability question the build plan, the trtexec line and the DeepStream writer ask is answered
here from the version number alone, so each row of :data:`SUPPORT` is tested without TensorRT.
"""

from __future__ import annotations

from dataclasses import dataclass

from ringfold.runtime.bundle.engines import parse_version

#: the first TensorRT without weak typing (builder flags, calibrators, trtexec --fp16/--int8/--calib)
STRONG_ONLY = (11,)
#: the first TensorRT with strongly typed networks
STRONG_TYPING = (10,)


@dataclass(frozen=True)
class TrtRelease:
    """One row of the support table: a TensorRT line, where users meet it, and what ringfold builds there."""

    version: str  # the version the row is tested with
    platforms: str
    builds: str


SUPPORT: tuple[TrtRelease, ...] = (
    TrtRelease(
        "8.6.2",
        "JetPack 6.0",
        "weakly typed: fp16 = fp32 model + FP16 flag; int8 = Q/DQ model + INT8/FP16 flags "
        "(or --calibrator entropy on the fp32 model)",
    ),
    TrtRelease(
        "10.3.0",
        "JetPack 6.1, 6.2",
        "strongly typed by default: fp16 from model_fp16.onnx, int8 from the Q/DQ model (int8-fp16 when present); "
        "--weakly-typed and --fp32-layers still work",
    ),
    TrtRelease("10.16.0", "JetPack 7.2, DeepStream 9.2", "as 10.3"),
    TrtRelease(
        "11.4.0",
        "JetPack >= 7.2.2 (AGX Orin, Thor), desktop",
        "strongly typed only: fp16 from model_fp16.onnx, int8 from the Q/DQ model (int8-fp16 when present); "
        "no flags, no calibrator, no calibration cache",
    ),
)


def has_strong_typing(version: str) -> bool:
    """Whether ``version`` can build a strongly typed network (10.0 and newer)."""
    return parse_version(version) >= STRONG_TYPING


def has_weak_typing(version: str) -> bool:
    """Whether ``version`` still has the FP16/INT8 builder flags and trtexec's ``--fp16 --int8`` (before 11)."""
    return parse_version(version) < STRONG_ONLY


def reads_calibration_cache(version: str) -> bool:
    """Whether ``version`` reads an INT8 calibration cache (nvinfer's ``int8-calib-file``): before 11 only."""
    return has_weak_typing(version)


def needs_strongly_typed_flag(version: str) -> bool:
    """trtexec ``--stronglyTyped``: required on 10.x, always on (and not needed) from 11."""
    return has_strong_typing(version) and has_weak_typing(version)


def strongly_typed_only(what: str, version: str, instead: str) -> str:
    """The one-line refusal of a weakly typed feature on a TensorRT that has none, naming what to do instead."""
    return (
        f"{what}: TensorRT {version} builds strongly typed networks only (no FP16/INT8 builder flags, no INT8 "
        f"calibrators since 11.0); {instead}"
    )
