"""Raw RGB pixels (0..255, NCHW) for the raw-input variant, with open_clip's or DeepStream's geometry.

The raw variant has the normalisation folded in, so the client only resizes (the normalised model's input
is :func:`.preprocess.normalise` of these pixels).
Two geometries:

- ``openclip``: exactly the resize + centre crop of :mod:`.preprocess` (open_clip's eval
  transform), so raw and normalised models see the same pixels;
- ``deepstream``: what ``nvinfer`` does with ``maintain-aspect-ratio=0``: the whole frame (or
  object crop) stretched to the network size; ``deepstream-letterbox``: ``maintain-aspect-ratio=1``
  with ``symmetric-padding=1``, the frame scaled to fit and centred on black.

DeepStream scales on the GPU or VIC (``scaling-filter`` 1 = bilinear in ringfold's configs),
sampling without antialiasing; the DeepStream modes sample the same way (Pillow's affine
transform, bilinear), so they reproduce nvinfer's geometry and filter kind, though not
necessarily its rounding bit for bit.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .preprocess import PreprocessConfig, check_resize, normalise, resized_pixels

GEOMETRIES = ("openclip", "deepstream", "deepstream-letterbox")


def _gpu_bilinear(img: Image.Image, width: int, height: int) -> np.ndarray:
    """Bilinear resize that samples, like a GPU/VIC scaler, instead of averaging like Pillow's ``resize``.

    Pillow's affine transform with BILINEAR reads two taps per axis at the pixel centre mapped back
    (``(x + 0.5) · scale``), with no antialiasing support widening when it shrinks.
    """
    sx, sy = img.width / width, img.height / height
    out = img.transform((width, height), Image.Transform.AFFINE, (sx, 0, 0, 0, sy, 0), Image.Resampling.BILINEAR)
    return np.asarray(out)


def _stretch(img: Image.Image, size: tuple[int, int]) -> np.ndarray:
    height, width = size
    return _gpu_bilinear(img, width, height)


def _letterbox(img: Image.Image, size: tuple[int, int]) -> np.ndarray:
    height, width = size
    scale = min(width / img.width, height / img.height)
    new_w, new_h = max(1, round(img.width * scale)), max(1, round(img.height * scale))
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = _gpu_bilinear(img, new_w, new_h)
    return canvas


def raw_pixels_uint8(img: Image.Image, cfg: PreprocessConfig, geometry: str = "openclip") -> np.ndarray:
    """One image as the raw variant's (3, H, W) uint8 input, resized with ``geometry``."""
    if geometry not in GEOMETRIES:
        raise ValueError(f"geometry must be one of {GEOMETRIES}, got {geometry!r}")
    if geometry == "openclip":
        check_resize(img.width, img.height, cfg)
    if img.mode != "RGB":
        img = img.convert("RGB")
    if geometry == "openclip":
        hwc = resized_pixels(img, cfg)
    elif geometry == "deepstream":
        hwc = _stretch(img, cfg.size)
    else:
        hwc = _letterbox(img, cfg.size)
    return np.ascontiguousarray(hwc.transpose(2, 0, 1))


def raw_pixels(img: Image.Image, cfg: PreprocessConfig, geometry: str = "openclip") -> np.ndarray:
    """One image as the raw variant's (3, H, W) float32 input: RGB values 0..255, not normalised."""
    return raw_pixels_uint8(img, cfg, geometry).astype(np.float32)


def unnormalise(pixels: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Normalised pixels back to raw 0..255 floats (float64 maths, float32 result, never rounded)."""
    mean = np.asarray(cfg.mean, dtype=np.float64)[:, None, None]
    std = np.asarray(cfg.std, dtype=np.float64)[:, None, None]
    return ((pixels.astype(np.float64) * std + mean) * 255.0).astype(np.float32)


def normalised_pixels(img: Image.Image, cfg: PreprocessConfig, geometry: str = "openclip") -> np.ndarray:
    """The normalised model's input for ``img`` resized with ``geometry`` (openclip: = preprocess_image)."""
    return normalise(raw_pixels_uint8(img, cfg, geometry), cfg)
