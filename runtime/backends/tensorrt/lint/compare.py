"""``ringfold check --polygraphy``: build the TensorRT engine with Polygraphy and compare it with ONNX Runtime.

Where the static lint says "nothing known to fail", this is the real parser and builder on a
TensorRT + CUDA machine: same ONNX graph, TensorRT vs ONNX Runtime (CPU), elementwise tolerances.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ringfold.errors import RingfoldError
from ringfold.extras import pip_install_extra
from ringfold.runtime.bundle.precisions import numerics

from ..build import polygraphy_loaders
from ..cuda import cuda_device_count
from ..plan import BuildPlan
from ..stack import polygraphy_log

#: atol/rtol of Polygraphy's elementwise check, TensorRT vs ONNX Runtime (CPU) on the same ONNX graph
POLYGRAPHY_TOLERANCES = {"fp32": (1e-3, 1e-3), "fp16": (2e-2, 2e-2), "int8": (1e-1, 1e-1), "int8-fp16": (1e-1, 1e-1)}


@dataclass
class PolygraphyResult:
    model: str
    precision: str
    passed: bool
    trt_version: str
    atol: float
    rtol: float
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None  # the engine could not be built or run (parser/builder error)

    def summary(self) -> str:
        if self.error:
            return f"polygraphy {self.precision}: FAIL — TensorRT {self.trt_version} could not build/run: {self.error}"
        worst = ", ".join(
            f"{name} max|Δ| {o['max_absdiff']:.3g}" if o.get("max_absdiff") is not None else name
            for name, o in self.outputs.items()
        )
        verdict = "PASS" if self.passed else "FAIL"
        return (
            f"polygraphy {self.precision}: {verdict} — TensorRT {self.trt_version} vs ONNX Runtime CPU "
            f"(atol {self.atol:g}, rtol {self.rtol:g}): {worst or 'no outputs compared'}"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cuda_device_count() -> int:
    """CUDA devices the CUDA runtime library sees (the one Polygraphy's runner loads); 0 when there is none."""
    return cuda_device_count()


def polygraphy_missing() -> list[str]:
    """What ``--polygraphy`` lacks on this machine (empty: polygraphy, TensorRT and a CUDA device are all here)."""
    missing = []
    try:
        import polygraphy  # noqa: F401
    except ImportError:
        missing.append(f"polygraphy (ringfold's [trt] extra: {pip_install_extra('trt')})")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        missing.append(
            f"TensorRT (JetPack's python3-libnvinfer, or the [tensorrt] extra: {pip_install_extra('tensorrt')})"
        )
    except Exception as exc:  # a broken install: libnvinfer not found, CUDA driver mismatch
        missing.append(f"a working TensorRT (import failed: {exc.__class__.__name__})")
    if _cuda_device_count() < 1:
        missing.append("a CUDA device")
    return missing


def require_polygraphy() -> None:
    missing = polygraphy_missing()
    if missing:
        raise RingfoldError(
            "--polygraphy builds a TensorRT engine and compares it with ONNX Runtime; this machine lacks "
            + ", ".join(missing)
            + " — run it on the Jetson/GPU host, or drop --polygraphy for the static check"
        )


def _synthetic_inputs(model_path: Path, batch: int) -> dict[str, np.ndarray]:
    from .graph import load_model, onnx_type  # optional: onnx (ringfold[check]), imported at graph.py's top

    model = load_model(model_path)
    init_names = {t.name for t in model.graph.initializer}
    rng = np.random.default_rng(0)
    feed = {}
    for v in model.graph.input:
        if v.name in init_names:
            continue
        tt = v.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else batch for d in tt.shape.dim]
        if onnx_type(tt.elem_type) != "FLOAT":
            raise RingfoldError(f"{model_path}: input {v.name} is not float32; pass inputs= to polygraphy_compare")
        feed[v.name] = rng.standard_normal(shape).astype(np.float32)
    return feed


def _profile(feed: dict[str, np.ndarray], max_batch: int | None) -> tuple:
    """One optimisation profile: batch 1 .. max(the feed's batch, ``max_batch``) per input."""
    profile = []
    for name, array in feed.items():
        shape = tuple(int(s) for s in array.shape)
        if shape:
            top = max(shape[0], max_batch or shape[0])
            profile.append((name, (1, *shape[1:]), shape, (top, *shape[1:])))
    return tuple(profile)


def _worst_per_output(accuracy) -> dict[str, dict[str, Any]]:
    """Polygraphy's accuracy results as output name -> passed and the largest abs/rel difference over iterations."""
    outputs: dict[str, dict[str, Any]] = {}
    for _pair, iterations in accuracy.items():
        for iteration in iterations:
            for name, res in iteration.items():
                entry = outputs.setdefault(name, {"passed": True, "max_absdiff": None, "max_reldiff": None})
                entry["passed"] = entry["passed"] and bool(res)
                for key in ("max_absdiff", "max_reldiff"):
                    value = getattr(res, key, None)
                    if value is not None:
                        value = float(np.max(value))
                        entry[key] = value if entry[key] is None else max(entry[key], value)
    return outputs


def polygraphy_compare(
    model_path: str | Path,
    precision: str = "fp32",
    inputs: dict[str, np.ndarray] | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    max_batch: int | None = None,
) -> PolygraphyResult:
    """Build a TensorRT engine from ``model_path`` with Polygraphy and compare it against ONNX Runtime (CPU).

    ``inputs``: one feed dict (e.g. the bundle's reference pixel values); default: seeded random data at batch 2.
    The engine gets one optimization profile covering batch 1 .. ``max_batch`` (default: the feed's batch).
    Raises :class:`RingfoldError` (one line naming what is missing) without polygraphy, TensorRT or a CUDA device;
    an engine that fails to build or run gives a failed result with ``error`` set.
    """
    require_polygraphy()
    import tensorrt as trt
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from polygraphy.backend.trt import TrtRunner
    from polygraphy.comparator import Comparator, CompareFunc

    model_path = Path(model_path)
    feed = dict(inputs) if inputs is not None else _synthetic_inputs(model_path, batch=2)
    default_atol, default_rtol = POLYGRAPHY_TOLERANCES[numerics(precision)]
    atol = default_atol if atol is None else atol
    rtol = default_rtol if rtol is None else rtol
    trt_version = str(getattr(trt, "__version__", "?"))
    # the builder configuration of `ringfold build-engine` (same loaders), without its workspace cap
    plan = BuildPlan(
        onnx=model_path,
        precision=precision,
        trt_version=trt_version,
        profile=_profile(feed, max_batch),
        fp16=precision == "fp16",
        int8=precision == "int8",
        source_kind=precision,
    )
    engine = polygraphy_loaders(plan).engine()
    session = SessionFromOnnx(str(model_path), providers=["CPUExecutionProvider"])
    try:
        with polygraphy_log("INFO"):  # its usual log, but on stderr: `check --json` owns stdout
            run_results = Comparator.run([TrtRunner(engine), OnnxrtRunner(session)], data_loader=[feed])
    except Exception as exc:  # parser/builder failures surface here (Polygraphy has logged the details)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "see the log above"
        return PolygraphyResult(
            str(model_path), precision, False, trt_version, atol, rtol, error=f"{exc.__class__.__name__}: {first}"
        )
    with polygraphy_log("INFO"):
        accuracy = Comparator.compare_accuracy(run_results, compare_func=CompareFunc.simple(atol=atol, rtol=rtol))
    return PolygraphyResult(
        model=str(model_path),
        precision=precision,
        passed=bool(accuracy),
        trt_version=trt_version,
        atol=atol,
        rtol=rtol,
        outputs=_worst_per_output(accuracy),
    )
