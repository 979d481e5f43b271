"""open_clip's evaluation preprocessing without torch.

The edge runtime cannot afford torch, yet a bundle only classifies correctly if
its input tensor matches what the model saw during training and parity checks.
So this module re-does open_clip's eval transform (``image_transform(...,
is_train=False)``, open_clip 3.3.0) step by step: the resizing is done by the
same Pillow calls torchvision makes for PIL inputs, and the float maths is done
in float32 in the same order, which makes the result bit-identical on RGB input.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from ringfold.errors import ImageError, RingfoldError
from ringfold.runtime.base.limits import Limits, limits

__all__ = [
    "PreprocessConfig",
    "check_resize",
    "normalise",
    "preprocess_batch",
    "preprocess_image",
    "resized_pixels",
    "resized_size",
]

INTERPOLATIONS = ("bicubic", "bilinear", "random")
RESIZE_MODES = ("shortest", "longest", "squash")
_KEYS = ("size", "mode", "mean", "std", "interpolation", "resize_mode", "fill_color")


def _bad(message: str) -> RingfoldError:
    return RingfoldError(f"preprocess config: {message}")


def _triple(name: str, value: Any) -> tuple[float, float, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value,) * 3  # open_clip accepts a scalar and repeats it
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 3:
        raise _bad(f"{name} must be 3 numbers (one per RGB channel), got {value!r}; fix the bundle config")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        raise _bad(f"{name} must be finite numbers, got {value!r}; fix the bundle config")
    return (float(value[0]), float(value[1]), float(value[2]))


def _size(value: Any) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise _bad(f"size must be a positive int or [height, width], got {value!r}; fix the bundle config")
    return (value[0], value[1])


@dataclass(frozen=True)
class PreprocessConfig:
    """How a model wants its pixels; stored in the bundle so the runtime cannot drift from training."""

    size: tuple[int, int]  # (height, width)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    fill_color: int = 0

    def __post_init__(self) -> None:
        # Normalise and validate here so hand-built configs are as safe as loaded ones.
        object.__setattr__(self, "size", _size(self.size))
        object.__setattr__(self, "mean", _triple("mean", self.mean))
        object.__setattr__(self, "std", _triple("std", self.std))
        if any(s <= 0 for s in self.std):
            raise _bad(f"std must be > 0, got {self.std!r}; fix the bundle config")
        if self.interpolation not in INTERPOLATIONS:
            raise _bad(
                f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got "
                f"{self.interpolation!r}; fix the bundle config"
            )
        if self.resize_mode not in RESIZE_MODES:
            raise _bad(
                f"resize_mode must be one of {', '.join(RESIZE_MODES)}, got {self.resize_mode!r}; fix the bundle config"
            )
        fill = self.fill_color
        if not isinstance(fill, int) or isinstance(fill, bool) or not 0 <= fill <= 255:
            raise _bad(f"fill_color must be an int in 0..255, got {fill!r}; fix the bundle config")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PreprocessConfig:
        """Read open_clip's ``asdict(PreprocessCfg)`` (or :meth:`to_dict`) output.

        Unknown keys are refused rather than ignored: a key this code does not
        understand may change the pixels, and silently ignoring it breaks parity.
        """
        if not isinstance(d, Mapping):
            raise _bad(f"expected a mapping, got {type(d).__name__}; fix the bundle config")
        unknown = sorted(set(d) - set(_KEYS))
        if unknown:
            raise _bad(f"unknown keys {unknown}; this ringfold understands {list(_KEYS)}")
        if d.get("mode", "RGB") != "RGB":
            raise _bad(f"mode must be 'RGB', got {d['mode']!r}; fix the bundle config")
        missing = [k for k in ("size", "mean", "std") if k not in d]
        if missing:
            raise _bad(f"missing keys {missing}; fix the bundle config")
        return cls(
            size=d["size"],
            mean=d["mean"],
            std=d["std"],
            # None means "open_clip's default" in image_transform(); keep that meaning.
            interpolation=d.get("interpolation") or "bicubic",
            resize_mode=d.get("resize_mode") or "shortest",
            fill_color=0 if d.get("fill_color") is None else d["fill_color"],
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able and accepted by ``open_clip.transform.PreprocessCfg(**d)``."""
        return {
            "size": list(self.size),
            "mode": "RGB",
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "resize_mode": self.resize_mode,
            "fill_color": self.fill_color,
        }


def _resample(cfg: PreprocessConfig) -> Image.Resampling:
    # open_clip maps anything but 'bilinear' (including 'random') to bicubic at eval.
    return Image.Resampling.BILINEAR if cfg.interpolation == "bilinear" else Image.Resampling.BICUBIC


def _resize(img: Image.Image, height: int, width: int, resample: Image.Resampling) -> Image.Image:
    # torchvision's F.resize on PIL: skip when already there, else img.resize with
    # Pillow's default reducing_gap=None (exact, no JPEG-draft-style shortcut).
    if img.size == (width, height):
        return img
    return img.resize((width, height), resample)


def _keep_ratio_size(h: int, w: int, size: tuple[int, int], longest: float) -> tuple[int, int]:
    """(height, width) open_clip's ResizeKeepRatio (from timm) resizes to in eval mode."""
    ratio_h, ratio_w = h / size[0], w / size[1]
    ratio = max(ratio_h, ratio_w) * longest + min(ratio_h, ratio_w) * (1.0 - longest)
    # Same expression and Python round() (half to even) as open_clip. open_clip crashes
    # (Pillow: "height and width must be > 0") when a very thin image rounds to 0 pixels
    # on its short side; keeping one pixel row instead is the only deviation.
    return max(1, round(h * 1.0 / ratio)), max(1, round(w * 1.0 / ratio))


def _shortest_edge_size(h: int, w: int, side: int) -> tuple[int, int]:
    """(height, width) of torchvision ``Resize(int)``: shorter side to ``side``, longer side truncated."""
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = side, int(side * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return new_h, new_w


def resized_size(width: int, height: int, cfg: PreprocessConfig) -> tuple[int, int]:
    """(width, height) the resize step of :func:`preprocess_image` gives a ``width`` x ``height`` image.

    The same arithmetic (and branches) as the resize itself, so the size can be
    checked against the caps before a single pixel is allocated.
    """
    if cfg.resize_mode == "squash":
        new_h, new_w = cfg.size
    elif cfg.resize_mode == "longest":
        new_h, new_w = _keep_ratio_size(height, width, cfg.size, 1.0)
    elif cfg.size[0] == cfg.size[1]:
        new_h, new_w = _shortest_edge_size(height, width, cfg.size[0])
    else:
        new_h, new_w = _keep_ratio_size(height, width, cfg.size, 0.0)
    return new_w, new_h


def check_resize(width: int, height: int, cfg: PreprocessConfig) -> None:
    """Refuse (one line) an image whose resize would allocate more than ``max_resize_pixels``."""
    cap = limits().max_resize_pixels
    new_w, new_h = resized_size(width, height, cfg)
    if new_w * new_h > cap:
        raise ImageError(
            f"image is {width}x{height}; resize_mode {cfg.resize_mode!r} would resize it to {new_w}x{new_h} = "
            f"{new_w * new_h} pixels on the way to the model's {cfg.size[1]}x{cfg.size[0]} input, over the "
            f"{cap}-pixel limit; crop it to a less extreme aspect ratio, or raise "
            f"{Limits.env_name('max_resize_pixels')}"
        )


def _center_crop_or_pad(pixels: np.ndarray, size: tuple[int, int], fill: int) -> np.ndarray:
    """torchvision CenterCrop / open_clip CenterCropOrPad on an (H, W, 3) uint8 array.

    Pads first (left/top get the floor half, as torchvision does), then crops with
    ``int(round((H - h) / 2.0))`` offsets, so odd differences land where torchvision's do.
    """
    crop_h, crop_w = size
    h, w = pixels.shape[:2]
    if crop_h > h or crop_w > w:
        pad_h, pad_w = max(crop_h - h, 0), max(crop_w - w, 0)
        pixels = np.pad(
            pixels,
            ((pad_h // 2, (pad_h + 1) // 2), (pad_w // 2, (pad_w + 1) // 2), (0, 0)),
            mode="constant",
            constant_values=fill,
        )
        h, w = pixels.shape[:2]
    top = int(round((h - crop_h) / 2.0))
    left = int(round((w - crop_w) / 2.0))
    return pixels[top : top + crop_h, left : left + crop_w]


def resized_pixels(img: Image.Image, cfg: PreprocessConfig) -> np.ndarray:
    """The geometric part of open_clip's eval transform, as (H, W, 3) uint8.

    The target size comes from :func:`resized_size`, the same function the memory cap checks.
    """
    new_w, new_h = resized_size(img.width, img.height, cfg)
    resample = _resample(cfg)
    if cfg.resize_mode == "shortest" and cfg.size[0] != cfg.size[1]:
        # open_clip builds ResizeKeepRatio(size) here without passing the interpolation,
        # so non-square 'shortest' is always bicubic; follow it for parity.
        resample = Image.Resampling.BICUBIC
    img = _resize(img, new_h, new_w, resample)
    if cfg.resize_mode == "squash":
        return np.asarray(img)
    # torchvision's CenterCrop always pads with 0, whatever fill_color says; only 'longest' uses fill_color.
    fill = cfg.fill_color if cfg.resize_mode == "longest" else 0
    return _center_crop_or_pad(np.asarray(img), cfg.size, fill)


def preprocess_image(img: Image.Image, cfg: PreprocessConfig) -> np.ndarray:
    """One image to the model's (3, H, W) float32 input, bit-matching open_clip for RGB input.

    Pass images from :func:`ringfold.runtime.pixels.images.load_image`; other modes are
    converted to RGB first (open_clip would resize them in their own mode, then convert).
    Raises :class:`ImageError` when the resize would exceed ``max_resize_pixels``
    (see :mod:`ringfold.runtime.base.limits`).
    """
    check_resize(img.width, img.height, cfg)  # before any allocation, the RGB conversion included
    if img.mode != "RGB":
        img = img.convert("RGB")
    return normalise(resized_pixels(img, cfg).transpose(2, 0, 1), cfg)


def normalise(raw: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Raw (…, 3, H, W) RGB values 0..255 to the normalised model's input: the one pixel normalisation.

    ToTensor then Normalize, in float32 and in torch's order (x / 255, - mean, / std), so the result
    bit-matches open_clip; the raw-input geometries (:mod:`.raw`) and the parity checks use it too.
    """
    x = np.array(raw, dtype=np.float32, order="C")  # a copy: the caller's pixels stay as they were
    x /= np.float32(255)
    x -= np.asarray(cfg.mean, dtype=np.float32)[:, None, None]
    x /= np.asarray(cfg.std, dtype=np.float32)[:, None, None]
    return x


def preprocess_batch(images: Iterable[Image.Image], cfg: PreprocessConfig) -> np.ndarray:
    """Stack preprocessed images into a contiguous (N, 3, H, W) float32 batch (N may be 0)."""
    arrays = [preprocess_image(img, cfg) for img in images]
    if not arrays:
        return np.zeros((0, 3, *cfg.size), dtype=np.float32)
    return np.ascontiguousarray(np.stack(arrays), dtype=np.float32)
