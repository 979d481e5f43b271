"""The run directory: adapter weights + everything needed to rebuild the model, never the frozen weights.

RUN/adapters.safetensors   trainable adapter tensors only
RUN/run.json               model name, weights source + fingerprint, adapter
                           config, class names, templates, preprocess, training
                           settings, metrics, library versions
RUN/log.jsonl, RUN/curves.png
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import ringfold
from ringfold.atomic import atomic_path, write_json
from ringfold.errors import RingfoldError
from ringfold.runtime.base.fields import one_line, read_json
from ringfold.runtime.base.limits import limits
from ringfold.runtime.pixels.preprocess import PreprocessConfig

from . import data as data_mod
from .adapters import AdapterSet, inject
from .config import AdapterConfig, config_from_dict, read_adapter_config
from .data_sources import load_run_splits
from .models import LoadedModel, WeightsSource, load_clip, reload_clip
from .schema import check_choice, check_dataclass_fields, field_error, get_field, short_repr

RUN_FORMAT_VERSION = 1
ADAPTERS_FILE = "adapters.safetensors"
RUN_FILE = "run.json"
#: the fix for a run.json that does not hold what `ringfold train` writes
RUN_DAMAGED = "the run directory is damaged — re-run `ringfold train`"


def library_versions() -> dict[str, str]:
    import open_clip

    versions = {"ringfold": ringfold.__version__, "torch": torch.__version__, "open_clip": open_clip.__version__}
    versions["python"] = platform.python_version()
    return versions


@dataclass
class RunData:
    """The run's images and how they were split and sampled: enough to draw the very same split again."""

    source: str = ""
    path: str | None = None
    image_root: str | None = None
    shots: int | None = None
    classes: str = "all"  # all | base | new (CoOp base-to-novel)
    seed: int = 0  # flat folders and CSVs without a split column are split at random from it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], path: Path) -> RunData:
        check_dataclass_fields(cls, d, path, RUN_DAMAGED, prefix="data.", required=False)
        check_choice(d.get("classes", "all"), ("all", "base", "new"), path, "data.classes", RUN_DAMAGED)
        return cls(**d)


def splits_from_record(
    record: RunRecord,
    *,
    data: str | Path | None = None,
    image_root: str | Path | None = None,
    classes: str | None = None,
) -> data_mod.LabelledSplits:
    """The run's split drawn again with its seed: its recorded data (or ``data``), cut to its classes (or ``classes``).

    The seed matters: flat folders and CSVs without a split column are split at random from it.
    """
    recorded = record.data
    if data is None:
        if not recorded.path:
            raise RingfoldError("run.json records no dataset path: pass the dataset the run was trained on")
        data, image_root = recorded.path, recorded.image_root if image_root is None else image_root
    return load_run_splits(
        data, image_root=image_root, seed=recorded.seed, classes=recorded.classes if classes is None else classes
    )


@dataclass
class RunRecord:
    model_name: str
    weights: WeightsSource
    weights_fingerprint: str
    preprocess: PreprocessConfig
    adapter: AdapterConfig
    classnames: list[str]
    templates: list[str]
    data: RunData = field(default_factory=RunData)
    train: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=library_versions)

    @property
    def is_random(self) -> bool:
        return self.weights.kind == "random"

    def summary(self, run_dir: str | Path) -> str:
        """Where the run is and what training did to its eval accuracy (what ``ringfold train`` prints)."""
        m = self.metrics
        return (
            f"run written to {run_dir} ({self.model_name}, {self.weights.describe()})\n"
            f"eval accuracy: zero-shot {_pct(m.get('zero_shot_eval_acc'))} → adapted {_pct(m.get('final_eval_acc'))} "
            f"(chance {_pct(m.get('chance_acc'))}; {m.get('trainable_parameters', 0):,} trainable parameters)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "ringfold-run",
            "format_version": RUN_FORMAT_VERSION,
            "model": {
                "name": self.model_name,
                "weights": self.weights.to_dict(),
                "weights_description": self.weights.describe(),
                "weights_fingerprint": self.weights_fingerprint,
                "preprocess": self.preprocess.to_dict(),
            },
            "adapter": self.adapter.to_dict(),
            "classnames": self.classnames,
            "templates": self.templates,
            "data": self.data.to_dict(),
            "train": self.train,
            "metrics": self.metrics,
            "versions": self.versions,
        }

    @classmethod
    def from_dict(cls, d: Any, path: Path) -> RunRecord:
        """Every field type- and range-checked: a bad one is one line naming run.json and the field."""
        if not isinstance(d, dict) or d.get("format") != "ringfold-run":
            raise RingfoldError(f"{path}: not a ringfold run.json; point at a directory written by `ringfold train`")
        _check_format_version(d, path)
        fix = RUN_DAMAGED
        m = get_field(d, "model", dict, path, fix)
        name = get_field(m, "name", str, path, fix, prefix="model.")
        if not name.strip():
            raise field_error(path, "model.name", "is empty", fix)
        return cls(
            model_name=name,
            weights=_weights_from(get_field(m, "weights", dict, path, fix, prefix="model."), path),
            weights_fingerprint=get_field(m, "weights_fingerprint", str, path, fix, prefix="model.", default=""),
            preprocess=_preprocess_from(get_field(m, "preprocess", dict, path, fix, prefix="model."), path),
            adapter=_adapter_from(get_field(d, "adapter", dict, path, fix), path),
            classnames=_nonempty_strings(d, "classnames", path),
            templates=_templates_from(d, path),
            data=RunData.from_dict(get_field(d, "data", dict, path, fix, default={}), path),
            train=get_field(d, "train", dict, path, fix, default={}),
            metrics=get_field(d, "metrics", dict, path, fix, default={}),
            versions=get_field(d, "versions", dict[str, str], path, fix, default={}),
        )


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _check_format_version(d: dict[str, Any], path: Path) -> None:
    version = get_field(d, "format_version", int, path, RUN_DAMAGED)
    if version > RUN_FORMAT_VERSION:
        raise RingfoldError(
            f"{path}: field format_version is {version}: written by a newer ringfold (this one reads format "
            f"{RUN_FORMAT_VERSION}); upgrade ringfold"
        )
    if version < 1:
        raise field_error(
            path, "format_version", f"is {version}, not a run format (this ringfold reads format 1)", RUN_DAMAGED
        )


_WEIGHTS_FIELDS: dict[str, Any] = {"kind": str, "value": str | None, "sha256": str | None, "seed": int | None}


def _weights_from(w: dict[str, Any], path: Path) -> WeightsSource:
    unknown = sorted(set(w) - set(_WEIGHTS_FIELDS))
    if unknown:
        raise field_error(path, f"model.weights.{unknown[0]}", "is unknown", RUN_DAMAGED)
    for key, hint in _WEIGHTS_FIELDS.items():
        get_field(w, key, hint, path, RUN_DAMAGED, prefix="model.weights.", default=None)
    kind = check_choice(w.get("kind"), ("tag", "file", "random"), path, "model.weights.kind", RUN_DAMAGED)
    if kind != "random" and not w.get("value"):
        raise field_error(path, "model.weights.value", f"must name the {kind} the weights came from", RUN_DAMAGED)
    return WeightsSource.from_dict(w)


def _preprocess_from(pre: dict[str, Any], path: Path) -> PreprocessConfig:
    """Validated and typed by the runtime's own PreprocessConfig: what the bundle will carry."""
    try:
        return PreprocessConfig.from_dict(pre)
    except RingfoldError as exc:
        detail = str(exc).removeprefix("preprocess config: ").split("; ")[0]
        raise field_error(path, "model.preprocess", f"is invalid: {detail}", RUN_DAMAGED) from None


def _adapter_from(a: dict[str, Any], path: Path) -> AdapterConfig:
    return read_adapter_config(a, path, RUN_DAMAGED)


def _nonempty_strings(d: dict[str, Any], key: str, path: Path) -> list[str]:
    values = get_field(d, key, list[str], path, RUN_DAMAGED)
    if not values:
        raise field_error(path, key, "is an empty list", RUN_DAMAGED)
    return list(values)


def _templates_from(d: dict[str, Any], path: Path) -> list[str]:
    templates = _nonempty_strings(d, "templates", path)
    for i, t in enumerate(templates):
        rest = t.replace("{}", "")
        if t.count("{}") != 1 or "{" in rest or "}" in rest:
            raise field_error(
                path,
                f"templates[{i}]",
                f"must contain exactly one '{{}}' and no other braces, got {short_repr(t)}",
                RUN_DAMAGED,
            )
    return templates


def save_run(run_dir: str | Path, record: RunRecord, adapters: AdapterSet) -> None:
    """Write the adapter weights then run.json, each atomically (run.json last marks the run complete)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in adapters.state_dict().items()}
    with atomic_path(run_dir / ADAPTERS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"ringfold_version": ringfold.__version__})
    write_json(run_dir / RUN_FILE, record.to_dict())


def read_run(run_dir: str | Path) -> RunRecord:
    run_dir = Path(run_dir)
    path = run_dir / RUN_FILE
    if not path.is_file():
        raise RingfoldError(f"{run_dir}: no {RUN_FILE}; pass a directory written by `ringfold train`")
    d = read_json(path, RUN_DAMAGED, limits().max_json_bytes, allow_nan=True)
    return RunRecord.from_dict(d, path)


#: ringfold never writes non-finite adapter weights (the trainer stops on divergence before saving)
ADAPTERS_DAMAGED = "the file is damaged or was modified — restore it from a backup or re-run `ringfold train`"


def check_adapter_tensors(
    tensors: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], path: Path, prefix: str, damaged: str
) -> None:
    """Same keys (after ``prefix``), same shapes and finite values as the model's adapters, or one line."""
    found = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        raise RingfoldError(
            one_line(
                f"{path}: adapter tensors do not match the run's config (missing {missing[:3]}, unexpected "
                f"{unexpected[:3]}); the checkpoint belongs to another model or adapter config"
            )
        )
    for key, tensor in found.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise RingfoldError(
                f"{path}: tensor {prefix}{key} has shape {tuple(tensor.shape)}, the model needs "
                f"{tuple(expected[key].shape)}; the checkpoint belongs to another model config"
            )
        if not torch.isfinite(tensor).all():
            raise RingfoldError(f"{path}: tensor {prefix}{key} holds NaN/Inf; {damaged}")


def load_adapter_weights(adapters: AdapterSet, path: Path) -> None:
    """Strict load: same keys, same shapes, finite values — or a one-line error naming the file."""
    if not path.is_file():
        raise RingfoldError(f"{path}: missing; the run directory is incomplete (re-run `ringfold train`)")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        detail = one_line(str(exc))
        raise RingfoldError(f"{path}: not a readable safetensors file ({detail}); re-run `ringfold train`") from None
    check_adapter_tensors(tensors, adapters.state_dict(), path, "", ADAPTERS_DAMAGED)
    adapters.load_state_dict(tensors, strict=True)


def load_adapted_model(run_dir: str | Path, device: str = "cpu") -> tuple[RunRecord, LoadedModel, AdapterSet]:
    """Rebuild frozen model + adapters of a run, with its trained weights, in eval mode."""
    run_dir = Path(run_dir)
    record = read_run(run_dir)
    loaded = reload_clip(record.model_name, record.weights, record.weights_fingerprint, device="cpu")
    adapters = inject(loaded.model, record.adapter)
    load_adapter_weights(adapters, run_dir / ADAPTERS_FILE)
    loaded.model.to(device).eval()
    return record, loaded, adapters


def write_synthetic_run(
    run_dir: str | Path,
    model_name: str,
    adapter: dict[str, Any],
    classnames: list[str],
    *,
    adapter_std: float | None = 0.02,
    seed: int = 0,
    templates: list[str] | None = None,
) -> Path:
    """A run without training: random-init frozen model, adapters at init or random (``adapter_std``).

    For benchmarks and tests that need a run whose adapters really change the
    output; ``run.json`` says so in its metrics.
    """
    loaded = load_clip(model_name, random_init=True, seed=seed)
    config = config_from_dict(adapter)
    aset = inject(loaded.model, config)
    if adapter_std:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in aset.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * adapter_std)
    record = RunRecord(
        model_name=model_name,
        weights=loaded.source,
        weights_fingerprint=loaded.weights_fingerprint,
        preprocess=loaded.preprocess,
        adapter=config,
        classnames=list(classnames),
        templates=list(templates or ["a photo of a {}."]),
        data=RunData(source="none (synthetic run: random adapter weights, not trained)"),
        metrics={"note": f"synthetic run, adapter weights ~ N(0, {adapter_std})" if adapter_std else "untrained"},
    )
    save_run(run_dir, record, aset)
    return Path(run_dir)
