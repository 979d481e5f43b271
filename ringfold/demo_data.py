"""The demo's labelled image set, drawn procedurally so the demo runs offline and without torch.

Four classes differ in both colour and structure (a red disc, green stripes, a blue checkerboard, a
yellow triangle), and every image varies strongly in position, scale, rotation, phase, colour,
background, clutter and noise: easy enough to learn from a few shots, hard enough that the accuracy
numbers mean something. Every image has its own RNG seeded from (seed, split, class, index), so the
output is byte-identical for a seed and does not depend on the order images are written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

_Painter = Callable[[np.random.Generator, np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def _rotate(xs: np.ndarray, ys: np.ndarray, cx: float, cy: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(angle), np.sin(angle)
    dx, dy = xs - cx, ys - cy
    return c * dx + s * dy, -s * dx + c * dy


def _soft_rect(rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray, size: int) -> np.ndarray:
    """A rotated patch that holds a texture, so textures also vary in where and how big they are."""
    cx, cy = rng.uniform(0.3, 0.7, 2) * size
    half_w, half_h = rng.uniform(0.25, 0.55, 2) * size
    u, v = _rotate(xs, ys, cx, cy, rng.uniform(0, np.pi))
    inside = np.minimum(half_w - np.abs(u), half_h - np.abs(v))
    return np.clip(inside + 0.5, 0.0, 1.0)


def _red_circle(rng, xs, ys, size):
    cx, cy = rng.uniform(0.3, 0.7, 2) * size
    r = rng.uniform(0.14, 0.32) * size
    rx, ry = r * rng.uniform(0.85, 1.15), r * rng.uniform(0.85, 1.15)
    u, v = _rotate(xs, ys, cx, cy, rng.uniform(0, np.pi))
    dist = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)
    alpha = np.clip((1.0 - dist) * min(rx, ry) + 0.5, 0.0, 1.0)
    colour = np.array([rng.uniform(170, 255), rng.uniform(0, 70), rng.uniform(0, 70)])
    # A little radial shading so the disc is not a flat colour patch.
    shade = 1.0 - rng.uniform(0.0, 0.35) * np.clip(dist, 0, 1) ** 2
    return alpha, colour[None, None, :] * shade[..., None]


def _green_stripes(rng, xs, ys, size):
    period = rng.uniform(6, 18)
    duty = rng.uniform(0.3, 0.6)
    u, _ = _rotate(xs, ys, 0.0, 0.0, rng.uniform(0, np.pi))
    phase = (u / period + rng.uniform(0, 1)) % 1.0
    # Soft-edged stripe: distance (in pixels) to the edge of the "on" part of each period.
    edge = np.minimum(phase, duty - phase) * period
    stripes = np.clip(np.where(phase < duty, edge, -np.minimum(phase - duty, 1 - phase) * period) + 0.5, 0, 1)
    colour = np.array([rng.uniform(0, 80), rng.uniform(150, 255), rng.uniform(0, 90)])
    return stripes * _soft_rect(rng, xs, ys, size), np.broadcast_to(colour, xs.shape + (3,))


def _blue_checkerboard(rng, xs, ys, size):
    cell = rng.uniform(5, 14)
    cx, cy = rng.uniform(0, size, 2)
    u, v = _rotate(xs, ys, cx, cy, rng.uniform(0, np.pi / 2))
    parity = (np.floor(u / cell) + np.floor(v / cell)) % 2
    blue = np.array([rng.uniform(0, 70), rng.uniform(40, 130), rng.uniform(170, 255)])
    other = np.full(3, rng.uniform(0, 255)) if rng.random() < 0.5 else blue * rng.uniform(0.2, 0.5)
    colour = np.where(parity[..., None] > 0, blue, other)
    return _soft_rect(rng, xs, ys, size), colour


def _yellow_triangle(rng, xs, ys, size):
    cx, cy = rng.uniform(0.32, 0.68, 2) * size
    radius = rng.uniform(0.18, 0.36) * size
    angles = rng.uniform(0, 2 * np.pi) + np.deg2rad([0, 120, 240] + rng.uniform(-15, 15, 3))
    vx, vy = cx + radius * np.cos(angles), cy + radius * np.sin(angles)
    # Signed distance to each edge (positive inside); the smallest one decides coverage.
    inside = np.full(xs.shape, np.inf)
    for i in range(3):
        x0, y0, x1, y1 = vx[i], vy[i], vx[(i + 1) % 3], vy[(i + 1) % 3]
        ex, ey = x1 - x0, y1 - y0
        orient = np.sign(ex * (vy[(i + 2) % 3] - y0) - ey * (vx[(i + 2) % 3] - x0))
        dist = orient * (ex * (ys - y0) - ey * (xs - x0)) / np.hypot(ex, ey)
        inside = np.minimum(inside, dist)
    colour = np.array([rng.uniform(200, 255), rng.uniform(180, 245), rng.uniform(0, 80)])
    return np.clip(inside + 0.5, 0.0, 1.0), np.broadcast_to(colour, xs.shape + (3,))


# Folder name -> painter; folder names sort into the label order an image-folder loader gives them.
_CLASSES: dict[str, _Painter] = {
    "blue_checkerboard": _blue_checkerboard,
    "green_stripes": _green_stripes,
    "red_circle": _red_circle,
    "yellow_triangle": _yellow_triangle,
}


def _background(rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray, size: int) -> np.ndarray:
    """Muted two-colour gradient plus a few small blobs of clutter, so the object is not on a blank canvas."""
    c0, c1 = rng.uniform(30, 200, (2, 3))
    direction = rng.uniform(0, 2 * np.pi)
    t = ((xs * np.cos(direction) + ys * np.sin(direction)) / size + 1) / 2
    img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    for _ in range(rng.integers(0, 4)):
        bx, by = rng.uniform(0, size, 2)
        br = rng.uniform(0.03, 0.09) * size
        alpha = np.clip(br - np.hypot(xs - bx, ys - by) + 0.5, 0, 1)[..., None]
        img = img * (1 - alpha) + rng.uniform(0, 255, 3) * alpha
    return img


def _draw(rng: np.random.Generator, painter: _Painter, size: int) -> Image.Image:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    img = _background(rng, xs, ys, size)
    alpha, colour = painter(rng, xs, ys, size)
    img = img * (1 - alpha[..., None]) + colour * alpha[..., None]
    img = (img - 128) * rng.uniform(0.75, 1.2) + 128 + rng.uniform(-25, 25)  # contrast, brightness
    img = img + rng.normal(0, rng.uniform(3, 18), img.shape)
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), mode="RGB")


def make_demo_dataset(root: Path, per_class: int = 24, size: int = 96, seed: int = 0) -> list[str]:
    """Write ``root/{train,test}/<class>/*.png`` (test gets per_class // 2 each); return the class names.

    Returned names are in label order (sorted folder names), with underscores turned into spaces.
    """
    if per_class < 2:
        raise ValueError(f"per_class={per_class}: need at least 2 so the test split is not empty")
    if seed < 0:
        raise ValueError(f"seed={seed}: use a non-negative seed")
    if size < 16:
        raise ValueError(f"size={size}: images smaller than 16 px cannot show the shapes")
    root = Path(root)
    for split_index, (split, count) in enumerate((("train", per_class), ("test", per_class // 2))):
        for class_index, (folder, painter) in enumerate(sorted(_CLASSES.items())):
            out = root / split / folder
            out.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                rng = np.random.default_rng([seed, split_index, class_index, i])
                _draw(rng, painter, size).save(out / f"{folder}_{i:04d}.png", format="PNG")
    return [folder.replace("_", " ") for folder in sorted(_CLASSES)]
