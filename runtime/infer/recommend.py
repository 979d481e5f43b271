"""What to deploy: per batch size, the fastest configuration whose parity gate passed on this machine.

``ringfold bench`` times configurations (backend, provider, precision); speed alone would recommend a
precision that disagrees with the reference, or a reduced precision whose gate was never run here. So a
point is a candidate only when its gate passed (``BenchPoint.parity is True``: run by bench on the
bundle's reference set, or read from a parity.json), and never when it is a QDQ model on ONNX Runtime's
CUDA provider, which has no int8 kernels for it (it dequantizes and runs slower than fp16 or fp32).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from ringfold.runtime.bundle.precisions import TABLE

#: the static Q/DQ variants (int8 weights, activations quantized at export): no int8 kernels on ORT's CUDA provider
QDQ_PRECISIONS = frozenset(name for name, p in TABLE.items() if p.weight_dtype == "int8" and not p.cpu_only)
#: points that are not a bundle configuration (the adapter-free base model measured beside it)
NOT_DEPLOYABLE = frozenset({"base-fp32"})


class Timed(Protocol):
    backend: str
    precision: str
    batch: int
    p50_ms: float
    parity: bool | None


def excluded(point: Timed) -> str | None:
    """Why ``point`` may never be recommended whatever its speed, or None."""
    if point.precision in NOT_DEPLOYABLE:
        return "not the bundle's model"
    if point.backend.startswith("onnxruntime") and "CUDA" in point.backend and point.precision in QDQ_PRECISIONS:
        return "a QDQ model on ONNX Runtime's CUDA provider runs dequantized (no int8 kernels there)"
    if point.parity is None:
        return "its parity gate was not run on this machine"
    if not point.parity:
        return "its parity gate failed"
    return None


def recommend(points: Iterable[Timed]) -> dict[int, Timed]:
    """Batch size → the fastest (lowest p50) point that passed its gate and is not :func:`excluded`."""
    best: dict[int, Timed] = {}
    for p in points:
        if excluded(p) is None and (p.batch not in best or p.p50_ms < best[p.batch].p50_ms):
            best[p.batch] = p
    return dict(sorted(best.items()))
