"""Which torch device a run uses, and the autocast dtype on it."""

from __future__ import annotations

import torch

from ringfold.errors import FieldError


def pick_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise FieldError("device", f"is {spec!r}, but no CUDA device is visible; use cpu")
    return torch.device(spec)


def amp_dtype(spec: str, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or spec == "off":
        return None
    if spec == "fp16":
        return torch.float16
    if spec == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16
