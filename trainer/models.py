"""Load the frozen open_clip model that adapters are fitted on.

The frozen weights never leave the user's machine in a run directory, so a
run records *where* they came from (tag, file, or a random-init seed) and a
fingerprint of the tensors; the exporter rebuilds the model from that record
and refuses to go on if the fingerprint differs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.model import get_model_preprocess_cfg, set_model_preprocess_cfg
from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict

from ringfold.atomic import sha256_file
from ringfold.errors import FieldError, RingfoldError
from ringfold.runtime.pixels.preprocess import PreprocessConfig

from .pretrained import fetch_pretrained

_CONFIG_DIR = Path(__file__).parent / "model_configs"
TINY_MODEL = "ringfold-tiny-vit"
RANDOM_WEIGHTS = "random weights"


def register_builtin_configs() -> None:
    """Make ringfold's own small architectures (tests, demo) known to open_clip by name."""
    if TINY_MODEL not in open_clip.list_models():
        open_clip.add_model_config(_CONFIG_DIR)


def close_model_names(name: str, n: int = 3) -> list[str]:
    """open_clip config names (ringfold's own included) that ``name`` may be a typo of, closest first.

    Compared case-blind, so ``vit-b-16`` finds ``ViT-B-16`` and ``ViT-B-61`` finds it too.
    """
    register_builtin_configs()
    by_lower = {model.lower(): model for model in open_clip.list_models()}
    return [by_lower[m] for m in difflib.get_close_matches(name.lower(), list(by_lower), n=n, cutoff=0.6)]


def check_model_name(name: str) -> None:
    """Refuse an unknown model config in one line, with "did you mean", before anything is built or loaded."""
    register_builtin_configs()
    if open_clip.get_model_config(name) is not None:
        return
    close = close_model_names(name)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise FieldError(
        "model",
        f"{name!r} is not an open_clip model config; {hint}"
        'the names: `python -c "import open_clip; print(open_clip.list_models())"` (and ringfold-tiny-vit)',
    )


@dataclass
class WeightsSource:
    """Where the frozen weights came from, as recorded in run.json and every report."""

    kind: str  # "tag" | "file" | "random"
    value: str | None = None  # tag name or file path
    sha256: str | None = None  # of the checkpoint file (tag: the cached file)
    seed: int | None = None  # random init only

    def describe(self) -> str:
        if self.kind == "random":
            return f"{RANDOM_WEIGHTS} (seed {self.seed})"
        return f"{self.kind} {self.value}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WeightsSource:
        return cls(**d)


@dataclass
class LoadedModel:
    model: torch.nn.Module
    model_name: str
    tokenizer: Any
    preprocess: PreprocessConfig  # open_clip's preprocessing for this model (and pretrained tag)
    source: WeightsSource
    weights_fingerprint: str = field(default="")

    @property
    def is_random(self) -> bool:
        return self.source.kind == "random"


def _sha256(path: str | os.PathLike) -> str:
    return sha256_file(path)


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over every tensor of the state dict, so a rebuilt frozen model can be proven identical."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return digest.hexdigest()


@contextlib.contextmanager
def _quiet_root_logger():
    """open_clip warns on the root logger that a model is random; ringfold says so itself, everywhere."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _check_vit(model: torch.nn.Module, model_name: str) -> None:
    if not hasattr(model, "visual") or not hasattr(model.visual, "transformer"):
        raise RingfoldError(
            f"model {model_name!r}: its image tower is not an open_clip VisionTransformer; "
            "ringfold adapts ViT-based CLIP models (e.g. ViT-B-16, ViT-L-14)"
        )


def _resolve_pretrained(model_name: str, pretrained: str, cache_dir: str | None) -> tuple[str, WeightsSource]:
    if os.path.isfile(pretrained):
        return pretrained, WeightsSource(kind="file", value=str(Path(pretrained).resolve()), sha256=_sha256(pretrained))
    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if cfg:
        path = fetch_pretrained(model_name, pretrained, cfg, cache_dir)
        return path, WeightsSource(kind="tag", value=pretrained, sha256=_sha256(path))
    if any(sep in pretrained for sep in ("/", "\\", ".")):
        raise FieldError("pretrained", f"{pretrained}: checkpoint file not found; check the path")
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    raise FieldError(
        "pretrained",
        f"{pretrained!r} is neither a file nor an open_clip tag for {model_name}; "
        f"known tags: {', '.join(tags) or 'none'}",
    )


CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


def _load_state_dict(model: torch.nn.Module, path: str, model_name: str) -> None:
    """open_clip's own loader (key conversion, pos-embed resize), always with weights_only=True."""
    from open_clip.factory import load_checkpoint, load_state_dict

    if Path(path).suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise RingfoldError(
            f"{path}: unsupported checkpoint type; use one of {', '.join(CHECKPOINT_SUFFIXES)} "
            "(an open_clip state dict)"
        )
    try:  # read first on its own, so a refused pickle or a corrupt file is told apart from a config mismatch
        load_state_dict(path, weights_only=True)
    except Exception as exc:
        detail = " ".join(str(exc).split())[:160]
        raise RingfoldError(
            f"{path}: cannot be read as an open_clip state dict ({type(exc).__name__}: {detail}); "
            "use a .safetensors file or a plain tensor .pt/.bin (pickled code is refused)"
        ) from None
    try:
        load_checkpoint(model, path, strict=True, weights_only=True)
    except Exception as exc:
        detail = " ".join(str(exc).split())[:200]
        raise RingfoldError(
            f"{path}: does not match model config {model_name} ({type(exc).__name__}: {detail}); "
            "pass the --model the checkpoint was trained with"
        ) from None


def load_clip(
    model_name: str,
    pretrained: str | None = None,
    *,
    random_init: bool = False,
    seed: int = 0,
    device: str | torch.device = "cpu",
    cache_dir: str | None = None,
) -> LoadedModel:
    """Create the frozen CLIP model: pretrained tag, local checkpoint, or explicit random init."""
    check_model_name(model_name)
    if random_init == bool(pretrained):
        raise RingfoldError("pass exactly one of --pretrained TAG|FILE or --random-init")
    if random_init:
        source = WeightsSource(kind="random", seed=seed)
        with torch.random.fork_rng(devices=[]), _quiet_root_logger():
            torch.manual_seed(seed)
            model = open_clip.create_model(model_name, pretrained=None, device="cpu")
    else:
        path, source = _resolve_pretrained(model_name, pretrained, cache_dir)
        with _quiet_root_logger():
            model = open_clip.create_model(model_name, pretrained=None, device="cpu")
        _load_state_dict(model, path, model_name)
        if source.kind == "tag":
            tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
            merged = merge_preprocess_dict(get_model_preprocess_cfg(model), tag_cfg)
            set_model_preprocess_cfg(model, merged)
    _check_vit(model, model_name)
    model.eval()
    model.requires_grad_(False)
    fingerprint = weights_fingerprint(model)
    model.to(device)
    preprocess = PreprocessConfig.from_dict(get_model_preprocess_cfg(model))
    return LoadedModel(
        model=model,
        model_name=model_name,
        tokenizer=open_clip.get_tokenizer(model_name),
        preprocess=preprocess,
        source=source,
        weights_fingerprint=fingerprint,
    )


def reload_clip(model_name: str, source: WeightsSource, fingerprint: str | None, device: str = "cpu") -> LoadedModel:
    """Rebuild the frozen model a run was trained on, and prove it is the same one."""
    if source.kind == "random":
        loaded = load_clip(model_name, random_init=True, seed=source.seed or 0, device=device)
    else:
        loaded = load_clip(model_name, source.value, device=device)
        if source.sha256 and loaded.source.sha256 != source.sha256:
            raise RingfoldError(
                f"{source.value}: checkpoint sha256 differs from the one the run was trained on; "
                "use the original checkpoint"
            )
    if fingerprint and loaded.weights_fingerprint != fingerprint:
        raise RingfoldError(
            f"{model_name} ({loaded.source.describe()}): rebuilt frozen weights differ from the run's fingerprint "
            "(different open_clip/torch version?); re-train or export with the versions recorded in run.json"
        )
    return loaded


def openclip_transform(preprocess: PreprocessConfig | Mapping[str, Any], train: bool = False):
    """open_clip's own transform for a preprocess config (the reference the runtime must match).

    ``preprocess``: the run's typed config, or a dict in open_clip's form (``asdict(PreprocessCfg)``).
    """
    if not isinstance(preprocess, PreprocessConfig):
        preprocess = PreprocessConfig.from_dict(preprocess)
    cfg = PreprocessCfg(**merge_preprocess_dict(PreprocessCfg(), dataclasses.asdict(preprocess)))
    return image_transform_v2(cfg, is_train=train)
