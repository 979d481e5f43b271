"""Resumable training state in one atomically written safetensors file.

``RUN/checkpoint.safetensors`` holds the adapter tensors, the optimizer's
tensors and the RNG states as tensors, and everything else (epoch, position
in the epoch, scheduler, optimizer hyper-parameters, Python RNG, history) as
JSON in the file's metadata. One file, written through a temporary and a
rename, so a kill at any moment leaves either the previous checkpoint or
the new one — and loading never unpickles anything.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ringfold.atomic import atomic_path
from ringfold.errors import RingfoldError

CHECKPOINT_FILE = "checkpoint.safetensors"
CONFIG_FILE = "train_config.json"


@dataclass
class LoopState:
    epoch: int = 1  # the epoch to run (or continue)
    step_in_epoch: int = 0  # global batches of that epoch already done
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    sums: dict[str, float] = field(default_factory=dict)  # running epoch sums (loss terms, correct, seen)


def _rng_tensors() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    py_version, py_state, py_gauss = random.getstate()
    meta = {"numpy": [kind, int(pos), int(has_gauss), float(gauss)], "python": [py_version, list(py_state), py_gauss]}
    return tensors, meta


def _restore_rng(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted(k for k in tensors if k.startswith("rng.cuda."))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    kind, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((kind, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, state, py_gauss = meta["python"]
    random.setstate((version, tuple(state), py_gauss))


def save_checkpoint(run_dir: Path, adapters, optimizer, scheduler, state: LoopState) -> None:
    tensors = {f"adapter.{k}": v.detach().cpu().contiguous() for k, v in adapters.state_dict().items()}
    opt_state = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, per_param in opt_state["state"].items():
        for name, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    rng_tensors, rng_meta = _rng_tensors()
    tensors.update(rng_tensors)
    meta = {
        "loop": {
            "epoch": state.epoch,
            "step_in_epoch": state.step_in_epoch,
            "step": state.step,
            "history": state.history,
            "sums": state.sums,
        },
        "optimizer": {"param_groups": opt_state["param_groups"], "scalars": scalars},
        "scheduler": {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"},
        "rng": rng_meta,
    }
    with atomic_path(run_dir / CHECKPOINT_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"ringfold_checkpoint": json.dumps(meta)})


def load_checkpoint(run_dir: Path, adapters, optimizer, scheduler) -> LoopState:
    path = run_dir / CHECKPOINT_FILE
    if not path.is_file():
        raise RingfoldError(f"{run_dir}: no {CHECKPOINT_FILE} to resume from; start the run without --resume")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads(fh.metadata()["ringfold_checkpoint"])
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as exc:
        raise RingfoldError(f"{path}: unreadable checkpoint ({type(exc).__name__}); delete it and retrain") from None
    adapters.load_state_dict({k[len("adapter.") :]: v for k, v in tensors.items() if k.startswith("adapter.")})
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, values in meta["optimizer"]["scalars"].items():
        state.setdefault(int(idx), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
    # the lambdas are code, rebuilt by the trainer; LambdaLR's loader still expects the key
    scheduler.load_state_dict({**meta["scheduler"], "lr_lambdas": [None] * len(optimizer.param_groups)})
    _restore_rng(tensors, meta["rng"])
    loop = meta["loop"]
    return LoopState(loop["epoch"], loop["step_in_epoch"], loop["step"], loop["history"], loop["sums"])
