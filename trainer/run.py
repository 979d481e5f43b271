"""The run directory: adapter weights + everything needed to rebuild the model, never the frozen weights.

RUN/adapters.safetensors   trainable adapter tensors only
RUN/run.json               model name, weights source + fingerprint, adapter
                           config, class names, templates, preprocess, training
                           settings, metrics, library versions
RUN/log.jsonl, RUN/curves.png
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import ringfold
from ringfold.atomic import atomic_path, write_json
from ringfold.errors import RingfoldError
from ringfold.trainer.adapters import AdapterSet, config_from_dict, inject
from ringfold.trainer.adapters.base import AdapterConfig
from ringfold.trainer.models import LoadedModel, WeightsSource, reload_clip

RUN_FORMAT_VERSION = 1
ADAPTERS_FILE = "adapters.safetensors"
RUN_FILE = "run.json"


def library_versions() -> dict[str, str]:
    import open_clip

    versions = {"ringfold": ringfold.__version__, "torch": torch.__version__, "open_clip": open_clip.__version__}
    versions["python"] = platform.python_version()
    return versions


@dataclass
class RunRecord:
    model_name: str
    weights: WeightsSource
    weights_fingerprint: str
    preprocess: dict[str, Any]
    adapter: AdapterConfig
    classnames: list[str]
    templates: list[str]
    data: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=library_versions)

    @property
    def is_random(self) -> bool:
        return self.weights.kind == "random"

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "ringfold-run",
            "format_version": RUN_FORMAT_VERSION,
            "model": {
                "name": self.model_name,
                "weights": self.weights.to_dict(),
                "weights_description": self.weights.describe(),
                "weights_fingerprint": self.weights_fingerprint,
                "preprocess": self.preprocess,
            },
            "adapter": self.adapter.to_dict(),
            "classnames": self.classnames,
            "templates": self.templates,
            "data": self.data,
            "train": self.train,
            "metrics": self.metrics,
            "versions": self.versions,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], path: Path) -> RunRecord:
        if d.get("format") != "ringfold-run":
            raise RingfoldError(f"{path}: not a ringfold run.json; point at a directory written by `ringfold train`")
        if int(d.get("format_version", 0)) > RUN_FORMAT_VERSION:
            raise RingfoldError(f"{path}: written by a newer ringfold (format {d['format_version']}); upgrade ringfold")
        try:
            m = d["model"]
            return cls(
                model_name=m["name"],
                weights=WeightsSource.from_dict(m["weights"]),
                weights_fingerprint=m.get("weights_fingerprint", ""),
                preprocess=m["preprocess"],
                adapter=config_from_dict(d["adapter"]),
                classnames=list(d["classnames"]),
                templates=list(d["templates"]),
                data=d.get("data", {}),
                train=d.get("train", {}),
                metrics=d.get("metrics", {}),
                versions=d.get("versions", {}),
            )
        except (KeyError, TypeError) as exc:
            raise RingfoldError(f"{path}: missing or malformed field {exc}; the run directory is damaged") from None


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
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RingfoldError(f"{path}: not valid JSON ({exc}); the run directory is damaged") from None
    return RunRecord.from_dict(d, path)


def load_adapter_weights(adapters: AdapterSet, path: Path) -> None:
    """Strict load: same keys, same shapes, finite values — or a one-line error naming the file."""
    if not path.is_file():
        raise RingfoldError(f"{path}: missing; the run directory is incomplete (re-run `ringfold train`)")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise RingfoldError(f"{path}: not a readable safetensors file ({exc}); re-run `ringfold train`") from None
    expected = adapters.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise RingfoldError(
            f"{path}: adapter tensors do not match the run's config (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}); the checkpoint belongs to another model or adapter config"
        )
    for key, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise RingfoldError(
                f"{path}: tensor {key} has shape {tuple(tensor.shape)}, the model needs {tuple(expected[key].shape)}; "
                "the checkpoint belongs to another model config"
            )
        if not torch.isfinite(tensor).all():
            raise RingfoldError(f"{path}: tensor {key} holds NaN/Inf; the training diverged, retrain with a lower --lr")
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
    from ringfold.trainer.adapters import get
    from ringfold.trainer.models import load_clip

    loaded = load_clip(model_name, random_init=True, seed=seed)
    config = get(adapter["method"]).config_cls.from_dict(adapter)
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
        preprocess=loaded.preprocess_cfg,
        adapter=config,
        classnames=list(classnames),
        templates=list(templates or ["a photo of a {}."]),
        data={"source": "none (synthetic run: random adapter weights, not trained)"},
        metrics={"note": f"synthetic run, adapter weights ~ N(0, {adapter_std})" if adapter_std else "untrained"},
    )
    save_run(run_dir, record, aset)
    return Path(run_dir)
