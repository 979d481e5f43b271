"""The library behind the ``ringfold`` commands that combine several packages: one function per command.

The CLI (``ringfold/cli/``) parses a command line, calls one function (from here or from the package
that owns the work: ``trainer.train.train``, ``exporter.export.export_run``, ...) and prints what it
returns. The demo and the examples call the same functions from Python; they take typed values, never
the parsed command line.

It imports the torch-free runtime only: parity, bench, check and classify run on the runtime install;
``parity(run=...)`` imports the exporter (torch) when it is asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from ringfold.runtime.backends.base import Backend
from ringfold.runtime.backends.onnxruntime.model import open_raw_model
from ringfold.runtime.backends.onnxruntime.session import available_provider_names
from ringfold.runtime.backends.registry import backend_precisions, open_model
from ringfold.runtime.backends.tensorrt import cuda as trt_cuda
from ringfold.runtime.backends.tensorrt.lint import CheckResult, check_bundle, require_polygraphy
from ringfold.runtime.backends.tensorrt.plan import BuildOptions
from ringfold.runtime.backends.tensorrt.trtexec import DEFAULT_TRT_VERSION, trtexec_recipe
from ringfold.runtime.bundle.loader import Bundle, load_bundle
from ringfold.runtime.infer.bench import BenchConfig, BenchReport, run_bench
from ringfold.runtime.infer.classify import Prediction
from ringfold.runtime.parity.gates import RUN_HERE, read_gates, run_gate
from ringfold.runtime.parity.geometry import PreprocessComparison, compare_preprocessing
from ringfold.runtime.parity.metrics import tolerance_for
from ringfold.runtime.parity.raw import raw_input_comparisons
from ringfold.runtime.parity.report import ParityReport
from ringfold.runtime.parity.stored import bundle_parity
from ringfold.runtime.pixels.raw import raw_pixels, raw_pixels_uint8
from ringfold.runtime.vocab.open_vocab import OpenVocabularyModel, with_classes

from .errors import RingfoldError
from .extras import missing_module


# --------------------------------------------------------------------------------------------- classify
def prediction_line(prediction: Prediction) -> str:
    """One image's result as ``ringfold classify`` prints it: ``PATH: label prob, label prob`` or the error."""
    if prediction.error:
        return f"{prediction.path}: ERROR {prediction.error}"
    tops = zip(prediction.labels, prediction.probabilities, strict=True)
    return f"{prediction.path}: " + ", ".join(f"{label} {prob:.3f}" for label, prob in tops)


def open_raw_input(
    bundle: Bundle, dtype: str = "float32", *, provider: str | None = "auto", threads: int | None = None
) -> tuple[Backend, Callable[..., np.ndarray]]:
    """(model, preprocess) for ``classify --input raw|raw-uint8``: the fp32 raw-pixel model with ``dtype`` input
    ("float32" or "uint8") on ONNX Runtime, and the client-side resize that feeds it (the model normalises)."""
    model = open_raw_model(bundle, dtype, provider=provider, threads=threads)
    resize = raw_pixels_uint8 if dtype == "uint8" else raw_pixels
    return model, partial(resize, cfg=bundle.preprocess)


def text_provider(provider: str | None) -> str:
    """The text tower runs once per class list: CUDA when asked for, else the CPU (never a TensorRT build)."""
    return "cuda" if provider == "cuda" else "cpu"


def open_vocabulary(
    bundle: Bundle,
    model: Backend,
    classes: Sequence[str],
    templates: Sequence[str],
    *,
    provider: str | None = "auto",
    threads: int | None = None,
) -> tuple[Bundle, OpenVocabularyModel]:
    """(bundle with the new labels, model scoring them) for ``classify --classes``: the head for ``classes`` is
    computed now with the bundle's text tower (on the CPU, or CUDA when ``provider`` is "cuda")."""
    return with_classes(bundle, model, classes, templates, text_provider(provider), threads)


def preprocess_comparison(
    bundle: Bundle,
    images: Sequence[str],
    geometry: str = "deepstream",
    *,
    backend: str = "onnxruntime",
    provider: str | None = "auto",
    threads: int | None = None,
) -> PreprocessComparison:
    """``parity --compare-preprocess``: the fp32 model on ``images`` under open_clip's resize and DeepStream's
    (``geometry``: "deepstream" stretches, "deepstream-letterbox" pads)."""
    model = open_model(bundle, "fp32", backend, provider, threads)
    return compare_preprocessing(bundle, model, images, geometry)


# ----------------------------------------------------------------------------------------------- parity
@dataclass
class ParityResult:
    """A bundle's parity over one or more of its precisions: one report, each comparison named."""

    bundle: Bundle
    precisions: list[str]
    report: ParityReport

    @property
    def passed(self) -> bool:
        return self.report.passed

    def default_report_dir(self) -> Path:
        """``BUNDLE.parity`` next to the bundle."""
        return self.bundle.path.parent / f"{self.bundle.path.name}.parity"

    @property
    def failing(self) -> dict[str, list[str]]:
        """Only what failed: gate ("int8", "preprocessing", ...) → short reasons ("1 flip beyond margin")."""
        return {name: reasons for name, reasons in self.report.gates().items() if reasons}

    @property
    def passing(self) -> list[str]:
        return [name for name, reasons in self.report.gates().items() if not reasons]

    def failure_line(self) -> str:
        """``parity gate FAILED for BUNDLE: int8 (1 flip beyond margin)``: failing gates only."""
        parts = [f"{name} ({'; '.join(reasons)})" for name, reasons in self.failing.items()]
        return f"parity gate FAILED for {self.bundle.path}: {', '.join(parts)}{self.report.reference_note()}"

    def pass_line(self) -> str | None:
        """``parity gate passed for BUNDLE: fp32, int8 (1 near-tie)``; None when nothing passed."""
        passing = self.passing
        if not passing:
            return None
        ties: dict[str, set[str]] = {}
        for c in self.report.comparisons:
            ties.setdefault(c.gate_name, set()).update(f["image"] for f in c.near_ties)
        parts = [
            f"{n} ({len(ties[n])} near-tie{'s' if len(ties[n]) != 1 else ''})" if ties.get(n) else n for n in passing
        ]
        return f"parity gate passed for {self.bundle.path}: {', '.join(parts)}{self.report.reference_note()}"


def parity(
    bundle_dir: str | Path,
    precision: str = "fp32",
    *,
    backend: str = "onnxruntime",
    provider: str | None = "auto",
    threads: int | None = None,
    run: str | Path | None = None,
    images: Sequence[str] | None = None,
    tolerance: dict[str, float | None] | None = None,
) -> ParityResult:
    """Check a bundle's ``precision`` model ("all": every variant) against its stored PyTorch reference.

    With ``run`` (needs torch) the adapted model is also rebuilt live from the run directory, and
    compared on ``images`` too. ``tolerance`` overrides the precision's defaults
    (``max_abs_logit``, ``min_cosine``, ``min_top1``; None keeps a default).
    """
    bundle = load_bundle(bundle_dir)
    precisions = backend_precisions(bundle, backend) if precision == "all" else [precision]
    report = None
    for name in precisions:
        limits = tolerance_for(name, tolerance or {})
        model = open_model(bundle, name, backend, provider, threads)
        part = bundle_parity(bundle, model, name, limits)
        if run:
            from ringfold.exporter.torch_parity import add_torch_parity  # torch: the [train] extra

            add_torch_parity(part, bundle, model, run, list(images or []), name, limits, live_check=report is None)
        if report is None:
            report = part
        else:
            report.comparisons += part.comparisons  # preprocessing: the same images, checked once
    if "fp32" in precisions and backend == "onnxruntime":  # the raw-pixel models, when the bundle has them
        report.comparisons += raw_input_comparisons(bundle, tolerance_for("fp32", tolerance or {}), provider, threads)
    return ParityResult(bundle, precisions, report)


# ------------------------------------------------------------------------------------------------ bench
def bench(
    bundle_dir: str | Path,
    precision: str | Sequence[str] = "all",
    provider: str | Sequence[str] = "cpu",
    batch_sizes: Sequence[int] = (1, 2, 4, 8),
    *,
    runs: int = 50,
    warmup: int = 10,
    threads: int | None = None,
    base: str | Path | None = None,
    backend: str | Sequence[str] = "onnxruntime",
    parity: Sequence[str | Path] | None = None,
) -> tuple[Bundle, BenchReport]:
    """Latency and throughput of a bundle's configurations per batch size, and what to deploy; (bundle, report).

    ``backend``: "all" (ONNX Runtime, and OpenVINO where installed) or a list / comma list;
    ``precision``: "all" (each backend's own list) or names; ``provider``: "all" (every one ONNX Runtime
    offers here) or a list / comma list of cpu, cuda, trt; ``base``: the adapter-free model to compare with
    (default: the bundle's, when it was exported with one). ``parity``: parity.json files whose verdicts
    mark the configurations; without them bench runs each one's gate on the bundle's reference set.
    """
    bundle = load_bundle(bundle_dir)
    gates = read_gates(list(parity), bundle) if parity else None  # before minutes of timing
    configs = bench_configs(bundle, backend, precision, provider)
    base_path = Path(base) if base else bundle.base_model_path()
    report = run_bench(
        bundle, [], [], list(batch_sizes), runs, warmup, threads, base_path,
        configs=configs,
        gate=None if gates is not None else partial(run_gate, bundle),
        gates=gates,
        gates_from=f"read from {', '.join(map(str, parity))}" if parity else RUN_HERE,
    )  # fmt: skip
    return bundle, report


def bench_configs(
    bundle: Bundle, backend: str | Sequence[str], precision: str | Sequence[str], provider: str | Sequence[str]
) -> list[BenchConfig]:
    """The configurations bench times, each checked before any timing (an unknown one is one line)."""
    every = ["onnxruntime"] + (["openvino"] if missing_module(("openvino",)) is None else [])
    backends = _names(backend, every)
    configs: list[BenchConfig] = []
    for name in backends:
        own = backend_precisions(bundle, name)
        wanted = own if precision == "all" else _names(precision, own)
        if len(backends) > 1 and precision != "all":
            wanted = [p for p in wanted if p in own]  # each backend times the asked-for precisions it runs
        for p in wanted:
            if name == "onnxruntime":
                bundle.model_path(p)  # one-line error for a variant the bundle does not have
            elif p not in own:
                raise RingfoldError(
                    f"--precision {p}: --backend {name} runs {', '.join(own) or 'none'} on this bundle and machine; "
                    "pick among them"
                )
        providers = _names(provider, available_provider_names()) if name == "onnxruntime" else [None]
        configs += [BenchConfig(name, p, pv) for pv in providers for p in wanted]
    return configs


def _names(value: str | Sequence[str], every: list[str]) -> list[str]:
    if isinstance(value, str):
        return list(every) if value == "all" else value.split(",")
    return list(value)


# ------------------------------------------------------------------------------------------------ check
def check(
    bundle_dir: str | Path, target: str = "trt-10", precisions: Sequence[str] = ("all",), *, polygraphy: bool = False
) -> CheckResult:
    """Lint every graph of the bundle TensorRT gets against ``target``'s ONNX parser (int8-dynamic, ONNX Runtime
    only, is listed and never fails); with ``polygraphy`` (TensorRT + CUDA) also build each precision variant
    that passes and compare it with ONNX Runtime."""
    if polygraphy:
        require_polygraphy()  # one line naming what is missing, before any work
    return check_bundle(load_bundle(bundle_dir), target, list(precisions), polygraphy=polygraphy)


# ----------------------------------------------------------------------------------------- build-engine
@dataclass
class TrtexecPlan:
    """``build-engine --print-trtexec``: the trtexec line, the line that registers its engine, and what was assumed.

    ``line`` is what a user runs (creates engines/, finds trtexec off PATH, or runs the build script
    written beside the engine); ``argv`` is the trtexec command itself.
    """

    argv: list[str]
    register_argv: list[str]
    notes: list[str]
    line: str = ""


def installed_trt_version() -> str | None:
    """The installed TensorRT's version; None when it is missing or does not import (a stub, a broken install)."""
    try:
        import tensorrt

        return str(tensorrt.__version__)
    except Exception:
        return None


def trtexec_plan(
    bundle: Bundle,
    options: BuildOptions,
    *,
    trt_version: str | None = None,
    installed_version: str | None = None,
    gpu: tuple[str, str] | None = None,
) -> TrtexecPlan:
    """The trtexec command that builds what ``build_engine(bundle, options)`` builds (``bundle``: a loaded
    Bundle), for ``trt_version`` (default: ``installed_version``, else 10.3) and ``gpu`` (name, compute
    capability; default: this machine's, if any)."""
    version = trt_version or installed_version or DEFAULT_TRT_VERSION
    recipe = trtexec_recipe(bundle, options, version, gpu if gpu else trt_cuda.detect_gpu())
    notes = [] if trt_version or installed_version else [f"TensorRT {version} assumed, pass --trt-version"]
    notes += [] if recipe.gpu_known else ["no GPU seen here, registering adds it to the file name"]
    notes += recipe.notes
    return TrtexecPlan(list(recipe.argv), list(recipe.register_argv), notes, recipe.shell_line())
