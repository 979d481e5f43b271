"""A Triton Inference Server model repository from a verified bundle (``ringfold triton``, ``export --triton``).

The bundle is what travels to a device, so the repository is built from the bundle alone — no
torch, no ``onnx`` — and the same function serves ``export --triton``. Layout, per Triton's
model-repository docs::

    DIR/<name>/config.pbtxt            onnxruntime_onnx, fp32
    DIR/<name>/1/model.onnx
    DIR/<name>/labels.txt              label_filename of the logits output, one class per line
    DIR/<name>_fp16/ ... _int8/ ... _int8_dynamic/     one model per precision variant of the bundle
    DIR/<name>_trt_fp16/1/model.plan   tensorrt_plan, only where the bundle has a registered engine

Each precision is a model of its own (what Triton users expect: a client picks one by name). Every
model folder also holds a README.md (input contract, preprocessing, where the files came from),
``ringfold-triton.json`` (which bundle and precision it came from) and the ownership record every
ringfold folder carries (``ringfold.ownership``): a folder is replaced (``--overwrite``) only when it
holds exactly the files ringfold put there, unmodified, so a user's own model or an edited config is
never deleted. Each folder is written whole (``owned_directory``); model files
are copied, never linked, and the copy's sha256 is checked against the bundle's manifest or the
engine's sidecar.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ringfold
from ringfold.atomic import sha256_file, write_json, write_text
from ringfold.errors import BundleError, RingfoldError
from ringfold.ownership import check_target, owned_directory
from ringfold.runtime.backends.onnxruntime.model import OnnxModel
from ringfold.runtime.bundle.engines import ENGINE_DIR, EngineEntry, list_engines
from ringfold.runtime.bundle.loader import Bundle, load_bundle
from ringfold.runtime.bundle.manifest import check_model_io
from ringfold.runtime.bundle.precisions import PRECISIONS, TABLE
from ringfold.runtime.bundle.spec import EMBEDDING, LOGITS, MANIFEST_FILE

from .triton_config import ORT_GRAPH_LEVELS, TritonModelConfig, TritonTensor, is_model_name, labels_text
from .triton_readme import model_readme

MARKER_FILE = "ringfold-triton.json"
MARKER_FORMAT = "ringfold-triton-model"
VERSION_DIR = "1"
LABELS_TXT = "labels.txt"
README_FILE = "README.md"
CONFIG_FILE = "config.pbtxt"
DEFAULT_MAX_BATCH = 8
#: Triton's own examples use 100 µs: a batch forms within a tenth of a millisecond, far below one inference
DEFAULT_QUEUE_DELAY_US = 100
MAX_BATCH_LIMIT = 4096
MAX_QUEUE_DELAY_US = 10_000_000


@dataclass(frozen=True)
class TritonModelPlan:
    """One model folder to write: its config, the model file it copies and that file's expected sha256."""

    config: TritonModelConfig
    precision: str
    source: Path
    sha256: str
    file_name: str  # model.onnx | model.plan
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.name


@dataclass
class TritonRepository:
    root: Path
    models: list[TritonModelPlan]
    notes: list[str]

    def summary_lines(self) -> list[str]:
        return [
            f"triton model {m.name} ({m.config.platform}, {m.precision}, max batch {m.config.max_batch_size}) "
            f"written to {self.root / m.name}"
            for m in self.models
        ]


def default_model_name(bundle_path: Path) -> str:
    """The bundle folder's name made into a model name (``my bundle`` -> ``my_bundle``)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(os.path.abspath(bundle_path)).name).strip("_.-")[:100]
    return slug if is_model_name(slug) else "ringfold"


# ---------------------------------------------------------------------------------------------- plan
def _tensors(bundle: Bundle) -> tuple[tuple[TritonTensor, ...], tuple[TritonTensor, ...]]:
    """The bundle's input/outputs without the batch axis; the logits carry the label file."""
    manifest = bundle.manifest
    batch_axis = manifest.input.shape[0]
    if isinstance(batch_axis, int):
        raise BundleError(
            f"{bundle.path}: the model's batch axis is fixed at {batch_axis}; Triton's dynamic batching needs a "
            "dynamic one — re-export the bundle with `ringfold export`"
        )

    def dims(shape, known: tuple[int, ...] = ()) -> tuple[int, ...]:
        return tuple(d if isinstance(d, int) else (known[i] if known else -1) for i, d in enumerate(shape[1:]))

    image = TritonTensor(manifest.input.name, manifest.input.dtype, dims(manifest.input.shape))
    logits, embedding = manifest.output(LOGITS), manifest.output(EMBEDDING)
    # The manifest names the embedding width symbolically; the reference outputs (validated) have it.
    width = (int(bundle.reference().embedding.shape[1]),)
    outputs = (
        TritonTensor(logits.name, logits.dtype, dims(logits.shape), LABELS_TXT),
        TritonTensor(embedding.name, embedding.dtype, dims(embedding.shape, width)),
    )
    return (image,), outputs


def _check_onnx_io(bundle: Bundle, precision: str) -> None:
    """The ONNX graph's inputs/outputs are what the config will promise (ONNX Runtime reads them)."""
    path = bundle.model_path(precision)
    check_model_io(bundle.manifest, path, *OnnxModel(path, provider="cpu", optimization="basic").io())


def _check_raw_io(bundle: Bundle, plan: TritonModelPlan) -> None:
    """The raw graph's input is what its config promises (name, dtype, [batch, 3, H, W])."""
    (graph_input,), _ = OnnxModel(plan.source, provider="cpu", optimization="basic").io()
    name, dtype, shape = graph_input
    want = plan.config.inputs[0]
    if name != want.name or dtype != want.dtype or list(shape[1:]) != list(want.dims):
        raise BundleError(
            f"{plan.source}: its input is {name} {dtype} {list(shape)}, the manifest promises {want.name} "
            f"{want.dtype} [batch, {', '.join(map(str, want.dims))}]; re-export the bundle with --raw-input"
        )


def _header(bundle: Bundle, what: str, raw: bool = False) -> list[str]:
    weights = "RANDOM WEIGHTS (predictions are not meaningful)" if bundle.random_weights else bundle.manifest.weights
    taken = (
        "RGB 0..255 NCHW after the client's resize + centre crop; the model normalises (README.md beside this file)"
        if raw
        else "the bundle's normalised NCHW float tensor (preprocess.json; README.md beside this file)"
    )
    return [
        f"Written by ringfold {ringfold.__version__} (`ringfold triton`) from the bundle {bundle.path.name}",
        f"model: {bundle.manifest.model_name}, {weights}; {what}",
        f"input: {taken}",
    ]


def _onnx_runtime_config(
    name: str, max_batch: int, queue_delay_us: int, inputs, outputs, kind: str, level: int | None, comments
) -> TritonModelConfig:
    """An ``onnxruntime_onnx`` model's config (the normalised variants and the raw-pixel models alike)."""
    return TritonModelConfig(
        name=name,
        platform="onnxruntime_onnx",
        backend="onnxruntime",
        default_model_filename="model.onnx",
        max_batch_size=max_batch,
        queue_delay_us=queue_delay_us,
        inputs=inputs,
        outputs=outputs,
        instance_kind=kind,
        ort_graph_level=level,
        comments=comments,
    )


def _onnx_plan(
    bundle: Bundle, name: str, precision: str, max_batch: int, queue_delay_us: int, tensors
) -> TritonModelPlan:
    variant = bundle.variants[precision]
    suffix = TABLE[precision].suffix
    # int8-dynamic quantises activations on the CPU at run time; neither TensorRT nor the CUDA EP runs it well
    kind = "KIND_CPU" if TABLE[precision].cpu_only else "KIND_AUTO"
    inputs, outputs = tensors
    config = _onnx_runtime_config(
        f"{name}{suffix}",
        max_batch,
        queue_delay_us,
        inputs,
        outputs,
        kind,
        ORT_GRAPH_LEVELS[variant.ort_optimization],
        _header(bundle, f"{precision} ONNX ({variant.file}), ONNX Runtime optimisation {variant.ort_optimization}"),
    )
    return TritonModelPlan(
        config=config,
        precision=precision,
        source=bundle.model_path(precision),
        sha256=bundle.model_sha256(precision),
        file_name="model.onnx",
        provenance={"bundle_file": variant.file, "recipe": dict(variant.details)},
    )


def _raw_plans(bundle: Bundle, name: str, max_batch: int, queue_delay_us: int, tensors) -> list[TritonModelPlan]:
    """``<name>_raw`` (float32) and ``<name>_raw_uint8``: the bundle's raw-pixel models, where it has them.

    Their input is RGB 0..255 (mean/std folded into the first Conv, DESIGN §11), so a Triton client
    only resizes and crops; with uint8 it also sends a quarter of the bytes.
    """
    raw = bundle.manifest.raw_input
    if raw is None:
        return []
    _, outputs = tensors
    plans = []
    for dtype, model in raw.models.items():
        spec = model.input
        image = TritonTensor(spec.name, spec.dtype, tuple(int(d) for d in spec.shape[1:]))
        suffix = "_raw" if dtype == "float32" else f"_raw_{dtype}"
        config = _onnx_runtime_config(
            f"{name}{suffix}",
            max_batch,
            queue_delay_us,
            (image,),
            outputs,
            "KIND_AUTO",
            ORT_GRAPH_LEVELS["all"],
            _header(bundle, f"raw-pixel fp32 ONNX ({model.file}), {dtype} RGB 0..255 input", raw=True),
        )
        plans.append(
            TritonModelPlan(
                config=config,
                precision=f"raw-{dtype}",
                source=bundle.file(model.file),
                sha256=bundle.manifest.files[model.file],
                file_name="model.onnx",
                provenance={"bundle_file": model.file, "raw_input": dtype},
            )
        )
    return plans


def _usable_engines(
    bundle: Bundle, precisions: set[str], onnx_of: dict[str, str]
) -> tuple[list[EngineEntry], list[str]]:
    """The engines ``build-engine`` registered that Triton can serve; a note for each one left out.

    Every engine's sha256 is checked here, before any folder is written, not half-way through.
    """
    entries, missing = list_engines(bundle.path)
    notes = [f"{note}; no Triton model for it" for note in missing]
    found = []
    for entry in entries:
        key, path = entry.key, entry.path
        if key.precision not in precisions:
            continue
        if key.onnx_sha256 not in onnx_of:
            notes.append(f"{path}: built from an ONNX file this bundle does not have; rebuild it with build-engine")
            continue
        if key.batch[0] != 1:
            notes.append(
                f"{path}: its batch profile starts at {key.batch[0]}, Triton sends batches from 1; "
                "rebuild with `ringfold build-engine --batch 1,OPT,MAX`"
            )
            continue
        if sha256_file(path) != entry.sha256:
            raise BundleError(
                f"{path}: sha256 differs from {entry.sidecar.name} (modified or corrupt); rebuild it with "
                "`ringfold build-engine BUNDLE`, or move it out of engines/"
            )
        found.append(entry)
    return found, notes


def _engine_config(bundle: Bundle, entry: EngineEntry, model_name: str, batch: int, queue_delay_us: int, tensors):
    """A ``tensorrt_plan`` model's config; its comments say the one GPU and TensorRT it loads on."""
    key = entry.key
    where = f"{key.device} (compute capability {key.compute_capability}) with TensorRT {key.trt_version}"
    inputs, outputs = tensors
    return TritonModelConfig(
        name=model_name,
        platform="tensorrt_plan",
        backend="tensorrt",
        default_model_filename="model.plan",
        max_batch_size=batch,
        queue_delay_us=queue_delay_us,
        inputs=inputs,
        outputs=outputs,
        instance_kind="KIND_GPU",
        comments=[
            *_header(bundle, f"{key.precision} TensorRT engine {entry.path.name}"),
            f"THIS PLAN ONLY LOADS ON {where}: use a Triton release whose TensorRT is {key.trt_version},",
            "on that GPU; anywhere else rebuild it there (`ringfold build-engine`) or serve the ONNX model.",
            f"engine batch profile min/opt/max: {key.batch[0]}/{key.batch[1]}/{key.batch[2]}",
        ],
    )


def _engine_plans(
    bundle: Bundle, name: str, precisions: set[str], max_batch: int, queue_delay_us: int, tensors
) -> tuple[list[TritonModelPlan], list[str]]:
    """A ``tensorrt_plan`` model per engine ``ringfold build-engine`` registered for one of the bundle's ONNX files."""
    onnx_of = {bundle.model_sha256(p): p for p in bundle.variants}
    found, notes = _usable_engines(bundle, precisions, onnx_of)
    by_precision: dict[str, int] = {}
    for entry in found:
        by_precision[entry.key.precision] = by_precision.get(entry.key.precision, 0) + 1
    plans = []
    for entry in found:
        key = entry.key
        model_name = f"{name}_trt_{key.precision}"
        if by_precision[key.precision] > 1:  # several GPUs/TensorRT versions/profiles: name each
            major_minor = ".".join(key.trt_version.split(".")[:2])
            model_name += (
                f"_sm{key.compute_capability.replace('.', '')}_trt{major_minor}_b{key.batch[2]}_{entry.sha256[:8]}"
            )
        batch = min(max_batch, key.batch[2])
        if batch < max_batch:
            notes.append(f"{model_name}: max_batch_size {batch}, the engine's profile maximum (asked for {max_batch})")
        plans.append(
            TritonModelPlan(
                config=_engine_config(bundle, entry, model_name, batch, queue_delay_us, tensors),
                precision=key.precision,
                source=entry.path,
                sha256=entry.sha256,
                file_name="model.plan",
                provenance={
                    "engine": f"{ENGINE_DIR}/{entry.path.name}",
                    "engine_key": key.to_dict(),
                    "built_from": onnx_of[key.onnx_sha256],
                },
            )
        )
    return plans, notes


def plan_repository(
    bundle: Bundle,
    name: str,
    precisions: Sequence[str] | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
) -> tuple[list[TritonModelPlan], list[str]]:
    """Which models the repository gets: one ONNX model per chosen variant, one plan per usable engine."""
    if not 1 <= max_batch <= MAX_BATCH_LIMIT:
        raise RingfoldError(f"--max-batch {max_batch}: must be 1..{MAX_BATCH_LIMIT}")
    if not 0 <= queue_delay_us <= MAX_QUEUE_DELAY_US:
        raise RingfoldError(f"--queue-delay-us {queue_delay_us}: must be 0..{MAX_QUEUE_DELAY_US}")
    unknown = [p for p in precisions or () if p not in PRECISIONS]
    if unknown:
        raise RingfoldError(f"--precision {unknown[0]}: not a precision (known: {', '.join(PRECISIONS)})")
    chosen = _served_variants(bundle, precisions)
    tensors = _tensors(bundle)
    plans = []
    for precision in chosen:
        if precision in bundle.variants:
            _check_onnx_io(bundle, precision)
            plans.append(_onnx_plan(bundle, name, precision, max_batch, queue_delay_us, tensors))
    # by default every registered engine too, whatever its precision (an fp16 engine may come from the fp32 ONNX)
    engine_precisions = set(chosen) if precisions else set(PRECISIONS)
    engine_plans, notes = _engine_plans(bundle, name, engine_precisions, max_batch, queue_delay_us, tensors)
    plans += engine_plans
    if not precisions or "fp32" in chosen:  # the raw models are fp32 graphs: they come with fp32
        for plan in _raw_plans(bundle, name, max_batch, queue_delay_us, tensors):
            _check_raw_io(bundle, plan)
            plans.append(plan)
    for precision in chosen:
        if not any(p.precision == precision for p in plans):
            raise BundleError(
                f"{bundle.path}: has no {precision} model or engine (has {', '.join(bundle.variants)}); "
                f"re-export with --precision {precision}, or leave {precision} out of --precision"
            )
    _check_values(bundle, plans)
    return plans, notes


def _served_variants(bundle: Bundle, precisions: Sequence[str] | None) -> list[str]:
    """The precisions asked for (default: every variant meant for ONNX Runtime). A variant meant only for
    TensorRT (int8-fp16: the source of the int8 engine) is never served as an onnxruntime_onnx model."""
    if not precisions:
        return [p for p in bundle.variants if "onnxruntime" in TABLE[p].targets]
    chosen = list(dict.fromkeys(precisions))
    for precision in chosen:
        if precision in TABLE and "onnxruntime" not in TABLE[precision].targets:
            raise RingfoldError(
                f"--precision {precision}: is the source of TensorRT's int8 engine, not a model for Triton's "
                "ONNX Runtime; build it on the device (build-engine --precision int8, then --register) and serve "
                "the engine (--precision int8)"
            )
    return chosen


def _check_values(bundle: Bundle, plans: Sequence[TritonModelPlan]) -> None:
    """Every value the repository's files carry, checked before the first folder is written: the labels
    (one per line), each config.pbtxt, and each model (folder) name, which an engine's sidecar can shape."""
    labels_text(bundle.labels)
    for plan in plans:
        if not is_model_name(plan.name):
            raise BundleError(
                f"{bundle.path}: Triton model name {plan.name[:80]!r} (from --name or an engine's sidecar) is not "
                "a folder name (letters, digits, _ . -); choose another --name, or rebuild the engine"
            )
        plan.config.to_pbtxt()


# --------------------------------------------------------------------------------------------- write
def _copy_checked(source: Path, target: Path, sha256: str) -> None:
    """Copy (never link: the bundle must stay as it was hashed) and check the copy is the hashed file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    if sha256_file(target) != sha256:
        raise BundleError(f"{source}: changed while it was copied (sha256 differs); copy the bundle again")


def _write_model(bundle: Bundle, plan: TritonModelPlan, target: Path, overwrite: bool) -> None:
    with owned_directory(target, "ringfold triton", overwrite, flag="--name") as tmp:
        _copy_checked(plan.source, tmp / VERSION_DIR / plan.file_name, plan.sha256)
        write_text(tmp / CONFIG_FILE, plan.config.to_pbtxt())
        write_text(tmp / LABELS_TXT, labels_text(bundle.labels))
        write_text(tmp / README_FILE, model_readme(bundle, plan.config, plan.precision, plan.provenance))
        write_json(
            tmp / MARKER_FILE,
            {
                "format": MARKER_FORMAT,
                "ringfold_version": ringfold.__version__,
                "bundle": str(bundle.path),
                "bundle_manifest_sha256": sha256_file(bundle.path / MANIFEST_FILE),
                "precision": plan.precision,
                "source": plan.provenance,
            },
        )


def check_repository_target(root: Path, bundle_path: Path) -> None:
    """``--out`` must be a folder (or nothing yet) outside the bundle."""
    if os.path.lexists(root) and not root.is_dir():
        raise RingfoldError(f"{root}: exists and is not a folder; choose another --out for the model repository")
    bundle_real = Path(os.path.realpath(bundle_path))
    root_real = Path(os.path.realpath(root))
    if root_real == bundle_real or bundle_real in root_real.parents:
        raise RingfoldError(f"{root}: inside the bundle {bundle_path}; choose a --out outside it")


def check_model_target(target: Path, overwrite: bool) -> None:
    """A model folder may be written: absent, or (``overwrite``) holding only what ringfold wrote there."""
    check_target(target, overwrite, flag="--name")


def preflight(out: str | Path, bundle_out: str | Path, overwrite: bool) -> None:
    """``export --triton``: what can be refused before minutes of export (the fp32 model folder always comes)."""
    check_repository_target(Path(out), Path(bundle_out))
    check_model_target(Path(out) / default_model_name(Path(bundle_out)), overwrite)


def write_triton_repository(
    bundle_path: str | Path,
    out: str | Path,
    *,
    name: str | None = None,
    precisions: Sequence[str] | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
    overwrite: bool = False,
) -> TritonRepository:
    """Verify the bundle, plan every model, refuse any folder that cannot be written, then write each whole.

    ``out`` is a model repository that may already hold other models: only ``<name>*`` folders are
    written, and an existing one only with ``overwrite`` and only when ringfold wrote it.
    """
    bundle = load_bundle(bundle_path)
    root = Path(out)
    name = name or default_model_name(bundle.path)
    check_repository_target(root, bundle.path)
    plans, notes = plan_repository(bundle, name, precisions, max_batch, queue_delay_us)
    for plan in plans:  # every refusal before the first folder is written
        check_model_target(root / plan.name, overwrite)
    root.mkdir(parents=True, exist_ok=True)
    for plan in plans:
        _write_model(bundle, plan, root / plan.name, overwrite)
    return TritonRepository(root=root, models=plans, notes=notes)
