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
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ringfold.atomic import atomic_path
from ringfold.errors import FieldError, RingfoldError
from ringfold.runtime.base.fields import one_line

from .run import check_adapter_tensors
from .schema import describe_type, is_number, json_type, matches_type, short_repr

CHECKPOINT_FILE = "checkpoint.safetensors"
#: the trainer never writes a non-finite checkpoint (save_checkpoint refuses), so a bad one was damaged or altered
CHECKPOINT_DAMAGED = "the checkpoint is damaged or was modified — delete it and re-run `ringfold train`"


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
    for key, value in tensors.items():  # never persist a diverged state: resuming it could only fail again
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise FieldError(
                "lr",
                f"is too high: training diverged ({key} holds NaN/Inf at step {state.step}, epoch {state.epoch}); "
                "the last good checkpoint was kept — lower it and train again",
            )
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


def _key(name: Any) -> str:
    """A key read from the file, made safe for a one-line message."""
    text = one_line(str(name))
    return text if len(text) <= 60 else text[:57] + "..."


def _meta_error(path: Path, key: str, problem: str) -> RingfoldError:
    return RingfoldError(one_line(f"{path}: metadata key {key} {problem}; {CHECKPOINT_DAMAGED}"))


def _tensor_error(path: Path, key: str, problem: str) -> RingfoldError:
    return RingfoldError(one_line(f"{path}: tensor {_key(key)} {problem}; {CHECKPOINT_DAMAGED}"))


def _get(d: dict[str, Any], key: str, hint: Any, path: Path, prefix: str = "") -> Any:
    if key not in d:
        raise _meta_error(path, prefix + key, "is missing")
    value = d[key]
    if not matches_type(value, hint):
        raise _meta_error(path, prefix + key, f"must be {describe_type(hint)}, got {json_type(value)}")
    return value


def _count(d: dict[str, Any], key: str, path: Path, prefix: str, minimum: int) -> int:
    value = _get(d, key, int, path, prefix)
    if value < minimum:
        raise _meta_error(path, prefix + key, f"must be an integer >= {minimum}, got {value}")
    return value


def _like(saved: Any, fresh: Any) -> bool:
    """Whether a saved JSON value has the type of the value a freshly built optimizer/scheduler holds."""
    if isinstance(fresh, bool):
        return isinstance(saved, bool)
    if is_number(fresh):
        return is_number(saved) and math.isfinite(saved)
    if fresh is None:  # foreach / fused: None (auto) or a bool
        return saved is None or isinstance(saved, bool)
    if isinstance(fresh, str):
        return isinstance(saved, str)
    if isinstance(fresh, (list, tuple)):
        return (
            isinstance(saved, (list, tuple))
            and len(saved) == len(fresh)
            and all(_like(s, f) for s, f in zip(saved, fresh, strict=True))
        )
    if isinstance(fresh, dict):
        return isinstance(saved, dict)
    return False


def _describe_like(fresh: Any) -> str:
    if isinstance(fresh, bool):
        return "true or false"
    if is_number(fresh):
        return "a finite number"
    if fresh is None:
        return "null, true or false"
    if isinstance(fresh, str):
        return "a string"
    if isinstance(fresh, (list, tuple)):
        return f"a list of {len(fresh)} values"
    return "a mapping" if isinstance(fresh, dict) else type(fresh).__name__


def _check_like(saved: dict[str, Any], fresh: dict[str, Any], path: Path, prefix: str) -> None:
    for key, value in saved.items():
        if key in fresh and not _like(value, fresh[key]):
            raise _meta_error(path, prefix + key, f"must be {_describe_like(fresh[key])}, got {json_type(value)}")


_NON_NEGATIVE = ("lr", "initial_lr", "weight_decay", "eps", "momentum", "dampening")


def _check_loop(meta: dict[str, Any], path: Path) -> LoopState:
    loop = _get(meta, "loop", dict, path)
    epoch = _count(loop, "epoch", path, "loop.", 1)
    step_in_epoch = _count(loop, "step_in_epoch", path, "loop.", 0)
    step = _count(loop, "step", path, "loop.", 0)
    if step_in_epoch > step:
        raise _meta_error(path, "loop.step_in_epoch", f"is {step_in_epoch}, more than loop.step ({step})")
    history = _get(loop, "history", list[dict], path, "loop.")
    if not history:
        raise _meta_error(path, "loop.history", "is an empty list (it starts with the zero-shot row)")
    for i, row in enumerate(history):
        prefix = f"loop.history[{i}]."
        _count(row, "epoch", path, prefix, 0)
        for key, value in row.items():
            if value is not None and not is_number(value):
                raise _meta_error(path, prefix + _key(key), f"must be a number or null, got {json_type(value)}")
        if "eval_acc" not in row:
            raise _meta_error(path, prefix + "eval_acc", "is missing")
    sums = _get(loop, "sums", dict, path, "loop.")
    for key, value in sums.items():
        if not is_number(value):
            raise _meta_error(path, f"loop.sums.{_key(key)}", f"must be a number, got {json_type(value)}")
    return LoopState(epoch, step_in_epoch, step, history, sums)


def _check_optimizer(meta: dict[str, Any], path: Path, optimizer) -> tuple[dict[str, Any], list[tuple[int, ...]]]:
    """The optimizer metadata, and the shape of each parameter by state index."""
    opt = _get(meta, "optimizer", dict, path)
    groups = _get(opt, "param_groups", list[dict], path, "optimizer.")
    fresh_groups = optimizer.state_dict()["param_groups"]
    if len(groups) != len(fresh_groups):
        raise _meta_error(
            path, "optimizer.param_groups", f"has {len(groups)} groups, the trainer builds {len(fresh_groups)}"
        )
    shapes = [tuple(p.shape) for g in optimizer.param_groups for p in g["params"]]
    offset = 0
    for i, (group, fresh) in enumerate(zip(groups, fresh_groups, strict=True)):
        prefix = f"optimizer.param_groups[{i}]."
        params = _get(group, "params", list[int], path, prefix)
        want = list(range(offset, offset + len(fresh["params"])))
        if params != want:
            raise _meta_error(
                path,
                prefix + "params",
                f"must be {short_repr(want)} (one index per adapter parameter), got {short_repr(params)}",
            )
        offset += len(want)
        _get(group, "lr", float, path, prefix)
        _check_like({k: v for k, v in group.items() if k != "params"}, fresh, path, prefix)
        for key in _NON_NEGATIVE:
            if key in group and is_number(group[key]) and group[key] < 0:
                raise _meta_error(path, prefix + key, f"must be >= 0, got {group[key]}")
        betas = group.get("betas")
        if isinstance(betas, list) and not all(is_number(b) and 0 <= b < 1 for b in betas):
            raise _meta_error(path, prefix + "betas", f"must be numbers in [0, 1), got {short_repr(betas)}")
    scalars = _get(opt, "scalars", dict, path, "optimizer.")
    for idx, values in scalars.items():
        if not (idx.isascii() and idx.isdigit() and int(idx) < len(shapes)):
            raise _meta_error(
                path, f"optimizer.scalars.{_key(idx)}", f"is not a parameter index (0..{len(shapes) - 1})"
            )
        if not isinstance(values, dict):
            raise _meta_error(path, f"optimizer.scalars.{idx}", f"must be a mapping, got {json_type(values)}")
        for name, value in values.items():
            if value is not None and not isinstance(value, (bool, int, float)):
                raise _meta_error(
                    path, f"optimizer.scalars.{idx}.{_key(name)}", f"must be a number, got {json_type(value)}"
                )
    return opt, shapes


def _check_scheduler(meta: dict[str, Any], path: Path, scheduler) -> dict[str, Any]:
    sched = _get(meta, "scheduler", dict, path)
    fresh = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    unknown = sorted(set(sched) - set(fresh))
    if unknown:  # LambdaLR.load_state_dict sets every key as an attribute of the scheduler
        raise _meta_error(path, f"scheduler.{_key(unknown[0])}", f"is unknown (known: {', '.join(fresh)})")
    for key in ("base_lrs", "last_epoch"):
        if key not in sched:
            raise _meta_error(path, f"scheduler.{key}", "is missing")
    _check_like(sched, fresh, path, "scheduler.")
    for key in ("last_epoch", "_step_count"):
        if key in sched and sched[key] < 0:
            raise _meta_error(path, f"scheduler.{key}", f"must be >= 0, got {sched[key]}")
    for key in ("base_lrs", "_last_lr"):
        if key in sched and any(v < 0 for v in sched[key]):
            raise _meta_error(path, f"scheduler.{key}", f"must hold learning rates >= 0, got {short_repr(sched[key])}")
    return sched


def _uint32(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**32


def _check_rng(meta: dict[str, Any], path: Path) -> dict[str, Any]:
    rng = _get(meta, "rng", dict, path)
    numpy_state = _get(rng, "numpy", list, path, "rng.")
    if not (
        len(numpy_state) == 4
        and numpy_state[0] == "MT19937"
        and isinstance(numpy_state[1], int)
        and not isinstance(numpy_state[1], bool)
        and 0 <= numpy_state[1] <= 624
        and numpy_state[2] in (0, 1)
        and not isinstance(numpy_state[2], bool)
        and is_number(numpy_state[3])
    ):
        raise _meta_error(path, "rng.numpy", 'must be ["MT19937", position 0..624, has_gauss 0|1, gauss]')
    py = _get(rng, "python", list, path, "rng.")
    if not (
        len(py) == 3
        and py[0] == 3
        and isinstance(py[0], int)
        and not isinstance(py[0], bool)
        and isinstance(py[1], list)
        and len(py[1]) == 625
        and all(_uint32(v) for v in py[1])
        and py[1][-1] <= 624
        and (py[2] is None or is_number(py[2]))
    ):
        raise _meta_error(path, "rng.python", "must be [3, a list of 625 32-bit ints, gauss or null]")
    return rng


def _check_tensors(tensors: dict[str, torch.Tensor], path: Path, adapters, shapes: list[tuple[int, ...]]) -> None:
    for key in ("rng.torch", "rng.numpy"):
        if key not in tensors:
            raise _tensor_error(path, key, "is missing")
    check_adapter_tensors(tensors, adapters.state_dict(), path, "adapter.", CHECKPOINT_DAMAGED)
    torch_state = torch.get_rng_state()
    for key, tensor in tensors.items():
        if key.startswith("adapter."):
            continue
        if key.startswith("optim."):
            parts = key.split(".", 2)
            if len(parts) != 3 or not (parts[1].isascii() and parts[1].isdigit()) or not parts[2]:
                raise _tensor_error(path, key, "is not named optim.<parameter index>.<state name>")
            idx, name = int(parts[1]), parts[2]
            if idx >= len(shapes):
                raise _tensor_error(path, key, f"names parameter {idx}, the adapters have {len(shapes)}")
            if tensor.dim() != 0 and tuple(tensor.shape) != shapes[idx]:
                raise _tensor_error(path, key, f"has shape {tuple(tensor.shape)}, its parameter {shapes[idx]}")
            if not bool(torch.isfinite(tensor).all()):
                raise _tensor_error(path, key, "holds NaN/Inf")
            if name == "step" and (tensor.dim() != 0 or float(tensor) < 1):
                raise _tensor_error(path, key, "must be a positive step count")
            if name in ("exp_avg_sq", "max_exp_avg_sq") and bool((tensor < 0).any()):
                raise _tensor_error(path, key, "holds negative values (a sum of squares)")
        elif key == "rng.torch":
            if tensor.dtype != torch.uint8 or tuple(tensor.shape) != tuple(torch_state.shape):
                raise _tensor_error(path, key, f"must be uint8 of shape {tuple(torch_state.shape)}")
        elif key == "rng.numpy":
            if tensor.dtype != torch.int64 or tuple(tensor.shape) != (624,):
                raise _tensor_error(path, key, "must be int64 of shape (624,)")
            if bool(((tensor < 0) | (tensor >= 2**32)).any()):
                raise _tensor_error(path, key, "must hold 32-bit unsigned values")
        elif re.fullmatch(r"rng\.cuda\.\d+", key):
            if tensor.dtype != torch.uint8 or tensor.dim() != 1:
                raise _tensor_error(path, key, "must be a uint8 vector")
        else:
            raise _tensor_error(path, key, "is unexpected (known: adapter.*, optim.*, rng.*)")


def load_checkpoint(run_dir: Path, adapters, optimizer, scheduler) -> LoopState:
    """Restore adapters, optimizer, scheduler and RNGs; every key and tensor is checked before anything is set."""
    path = run_dir / CHECKPOINT_FILE
    if not path.is_file():
        raise FieldError("resume", f"{run_dir} has no {CHECKPOINT_FILE} to resume from; start the run afresh")
    try:
        with safe_open(str(path), framework="pt") as fh:
            raw = (fh.metadata() or {}).get("ringfold_checkpoint")
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise RingfoldError(
            one_line(f"{path}: unreadable checkpoint ({type(exc).__name__}); {CHECKPOINT_DAMAGED}")
        ) from None
    if raw is None:
        raise RingfoldError(f"{path}: no ringfold_checkpoint metadata; {CHECKPOINT_DAMAGED}")
    try:
        meta = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise RingfoldError(one_line(f"{path}: metadata is not valid JSON ({exc}); {CHECKPOINT_DAMAGED}")) from None
    if not isinstance(meta, dict):
        raise RingfoldError(f"{path}: metadata must be a JSON mapping, got {json_type(meta)}; {CHECKPOINT_DAMAGED}")
    loop = _check_loop(meta, path)
    opt, shapes = _check_optimizer(meta, path, optimizer)
    sched = _check_scheduler(meta, path, scheduler)
    rng = _check_rng(meta, path)
    _check_tensors(tensors, path, adapters, shapes)
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, values in opt["scalars"].items():
        state.setdefault(int(idx), {}).update(values)
    try:
        adapters.load_state_dict({k[len("adapter.") :]: v for k, v in tensors.items() if k.startswith("adapter.")})
        optimizer.load_state_dict({"state": state, "param_groups": opt["param_groups"]})
        # the lambdas are code, rebuilt by the trainer; LambdaLR's loader still expects the key
        scheduler.load_state_dict({**sched, "lr_lambdas": [None] * len(optimizer.param_groups)})
        _restore_rng(tensors, rng)
    except (RuntimeError, ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        detail = short_repr(str(exc), 160)
        raise RingfoldError(
            one_line(f"{path}: could not be restored ({type(exc).__name__}: {detail}); {CHECKPOINT_DAMAGED}")
        ) from None
    return loop
