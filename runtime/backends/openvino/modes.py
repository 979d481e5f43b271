"""The precisions the OpenVINO backend runs: which bundle file it reads and which inference precision it pins.

OpenVINO's CPU plugin picks its own compute precision: on a CPU with AMX or AVX-512 BF16 it silently runs
an fp32 model in bf16, so the same bundle gives host-dependent outputs. ringfold never leaves that choice
to the host: every precision here pins ``INFERENCE_PRECISION_HINT``, and a reduced one is a precision of
its own name, judged by parity with its own tolerance (``numerics``: the family in
:data:`ringfold.runtime.parity.metrics.DEFAULT_TOLERANCES`). Nothing here imports OpenVINO.
"""

from __future__ import annotations

from dataclasses import dataclass

from ringfold.errors import RingfoldError


@dataclass(frozen=True)
class OpenVinoPrecision:
    """One ``--backend openvino --precision`` value."""

    name: str
    #: the bundle variant whose ONNX file is read
    variant: str
    #: OpenVINO's INFERENCE_PRECISION_HINT, pinned at compile time
    hint: str
    #: the tolerance family parity judges it with
    numerics: str
    #: what the CPU must list in OPTIMIZATION_CAPABILITIES to run it (None: every CPU)
    capability: str | None = None
    why: str = ""


OPENVINO_PRECISIONS: dict[str, OpenVinoPrecision] = {
    p.name: p
    for p in (
        OpenVinoPrecision("fp32", "fp32", "f32", "fp32", why="exact: f32 pinned, never the host's silent bf16"),
        OpenVinoPrecision("bf16", "fp32", "bf16", "bf16", "BF16", why="model.onnx computed in bf16 (AMX/AVX-512 BF16)"),
        OpenVinoPrecision("fp16", "fp16", "f16", "fp16", "FP16", why="the fp16 variant computed in f16"),
        OpenVinoPrecision("int8", "int8", "f32", "int8", why="the QDQ variant on int8 kernels, the rest in f32"),
        OpenVinoPrecision("int8-bf16", "int8", "bf16", "int8", "BF16", why="the QDQ variant, the rest in bf16"),
    )
}
#: the tolerance family of each OpenVINO-only precision name (the others share the bundle table's)
OPENVINO_NUMERICS = {name: p.numerics for name, p in OPENVINO_PRECISIONS.items()}


def openvino_precision(name: str, variants, capabilities) -> OpenVinoPrecision:
    """The OpenVINO precision ``name``, once the bundle has its file and the CPU its compute; else one line."""
    mode = OPENVINO_PRECISIONS.get(name)
    if mode is None:
        raise RingfoldError(
            f"--precision {name}: OpenVINO runs {', '.join(OPENVINO_PRECISIONS)}; "
            "pick one of them or --backend onnxruntime"
        )
    if mode.variant not in variants:
        raise RingfoldError(
            f"--precision {name} on OpenVINO reads the bundle's {mode.variant} model, which it does not have "
            f"(has {', '.join(variants) or 'none'}); re-export with --precision {mode.variant}"
        )
    if mode.capability and mode.capability not in capabilities:
        raise RingfoldError(
            f"--precision {name}: this CPU has no {mode.capability} compute (OpenVINO lists "
            f"{', '.join(capabilities)}); use --precision fp32 or int8"
        )
    return mode


def available_openvino_precisions(variants, capabilities) -> list[str]:
    """The OpenVINO precisions the bundle's files and this CPU allow, in table order."""
    return [
        name
        for name, p in OPENVINO_PRECISIONS.items()
        if p.variant in variants and (p.capability is None or p.capability in capabilities)
    ]
