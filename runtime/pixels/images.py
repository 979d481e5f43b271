"""Turning image files into RGB pictures, the one way both trainer and runtime do it.

Training and deployment must see the same pixels, or the parity the bundle
promises is broken before the model even runs; so every decode goes through
:func:`load_image`. Torch-free on purpose: this module ships to edge devices.
"""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ringfold.errors import ImageError, RingfoldError
from ringfold.runtime.base.limits import Limits, limits

__all__ = [
    "IMAGE_EXTENSIONS",
    "MIN_SIDE",
    "folder_labels",
    "round_robin_by_label",
    "list_images",
    "load_image",
    "not_regular_file",
    "open_regular",
]

#: A 1-pixel-wide picture carries nothing a classifier can use, and breaks aspect-ratio resizes.
MIN_SIDE = 2

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})

_WHITE = (255, 255, 255)
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
_REPLACE = "remove it or replace it with a JPEG/PNG"


def _fail(path: str | os.PathLike, problem: str, fix: str) -> ImageError:
    """Build the one-line error the CLI prints; decoder messages may carry newlines."""
    text = f"{os.fspath(path)}: {problem}; {fix}"
    return ImageError(" ".join(text.splitlines()))


_NOT_REGULAR = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a directory"),
)


def _kind(mode: int) -> str | None:
    """What a non-regular file is ("a named pipe (FIFO)", ...), None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _NOT_REGULAR if test(mode)), "not a regular file")


def not_regular_file(path: str | os.PathLike) -> str | None:
    """Why ``path`` (symlinks followed) is not a regular file to read, without opening it; None when it is.

    Reading a FIFO blocks until a writer comes, and a device can stream forever: every image
    read checks this first, so a stray pipe in an image folder is an error, never a hang.
    """
    try:
        kind = _kind(os.stat(path).st_mode)
    except FileNotFoundError:
        return "no such file"
    except OSError as exc:
        return f"cannot stat it ({exc.strerror or type(exc).__name__})"
    return f"is {kind}, not a regular file" if kind else None


def open_regular(path: str | os.PathLike) -> BinaryIO:
    """``path`` opened for binary reading, only if it is a regular file (else :class:`ImageError`).

    Opened non-blocking, so a file swapped for a FIFO after a check cannot block the open itself;
    fstat on the open descriptor then refuses anything but a regular file before a byte is read.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        kind = _kind(os.fstat(fd).st_mode)
        if kind:
            raise _fail(path, f"is {kind}, not a regular file", "remove it or pass image files only")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _has_alpha(img: Image.Image) -> bool:
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        return True
    return img.mode == "P" and img.palette is not None and img.palette.mode == "RGBA"


def _to_rgb(img: Image.Image) -> Image.Image:
    """Flatten any decoded mode to 8-bit RGB, always as a new image."""
    mode = img.mode
    if mode == "RGB":
        return img.copy()
    if mode in _SIXTEEN_BIT_MODES:
        # Pillow's own convert() clips 16/32-bit values at 255 instead of scaling them,
        # which turns most scientific or medical greyscale images pure white.
        values = np.clip(np.asarray(img).astype(np.int64), 0, 65535)
        grey = ((values + 128) // 257).astype(np.uint8)  # round(v / 257): 65535 -> 255, 257 -> 1
        return Image.fromarray(grey).convert("RGB")
    if mode == "F":
        values = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        grey = np.rint(np.clip(values, 0.0, 255.0)).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode == "La":  # premultiplied grey; Pillow only un-premultiplies via 'RGBa'
        grey, alpha = img.split()
        img = Image.merge("RGBa", (grey, grey, grey, alpha))
    if _has_alpha(img):
        # Transparent regions are "no content": white matches how viewers and browsers
        # show them, where black (Pillow's drop-alpha default) would invent dark objects.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Decode ``path`` into a fresh 8-bit RGB image, or raise :class:`ImageError`.

    Decoding is strict (truncated files are errors, not silently grey-filled) so a
    corrupt dataset is noticed instead of quietly training on half-images.
    """
    caps = limits()  # outside the try: a malformed RINGFOLD_MAX_* is the user's setting, not this file's fault
    try:
        p = Path(path)
        if not p.exists():
            raise _fail(path, "no such file", "check the path")
        if p.is_dir():
            raise _fail(path, "is a directory, not an image file", "pass the image files inside it")
        problem = not_regular_file(p)  # a FIFO or device is never opened: reading one can block forever
        if problem:
            raise _fail(path, problem, "remove it or pass image files only")
        if p.stat().st_size == 0:
            raise _fail(path, "empty file (0 bytes)", "re-download or re-export it, or remove it")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # Pillow's own bomb guard (~89 Mpx) must not undercut a cap the user raised on purpose
            Image.MAX_IMAGE_PIXELS = max(caps.max_image_pixels, Image.MAX_IMAGE_PIXELS or 0)
            with open_regular(p) as fh, Image.open(fh) as img:
                # Only the header has been read so far; refuse before decoding (or resizing) anything.
                width, height = img.size
                if width * height > caps.max_image_pixels:
                    raise _bomb(path, width, height, caps.max_image_pixels)
                if min(width, height) < MIN_SIDE:
                    raise _fail(
                        path,
                        f"image is {width}x{height} pixels, too small to classify",
                        f"remove it or use an image at least {MIN_SIDE}x{MIN_SIDE}",
                    )
                if max(width, height) > caps.max_image_aspect * min(width, height):
                    raise _too_thin(path, width, height, caps.max_image_aspect)
                if getattr(img, "n_frames", 1) > 1:
                    img.seek(0)  # animations: the first frame is what thumbnails show
                img.load()
                img = ImageOps.exif_transpose(img)
                return _to_rgb(img)
    except ImageError:
        raise
    except PermissionError as exc:
        raise _fail(path, "cannot read the file (permission denied)", "fix its permissions") from exc
    except UnidentifiedImageError as exc:
        raise _fail(path, "not a readable image (cannot identify image file)", _REPLACE) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _fail(path, f"image is too large to decode safely ({exc})", "downscale it to at most 8192x8192") from exc
    except MemoryError as exc:
        raise _fail(path, "image does not fit in memory", f"downscale it or {_REPLACE}") from exc
    except Exception as exc:  # any decoder failure is the file's fault, never a crash
        reason = str(exc) or type(exc).__name__
        raise _fail(
            path, f"truncated or corrupt image ({reason})", f"re-download or re-export it, or {_REPLACE}"
        ) from exc


def _bomb(path: str | os.PathLike, width: int, height: int, cap: int) -> ImageError:
    return _fail(
        path,
        f"image is {width}x{height} = {width * height} pixels, over the {cap}-pixel "
        "limit that guards against decompression bombs",
        f"downscale it (8192x8192 is the default limit), or raise {Limits.env_name('max_image_pixels')}",
    )


def _too_thin(path: str | os.PathLike, width: int, height: int, cap: int) -> ImageError:
    ratio = max(width, height) / min(width, height)
    shown = f"{ratio:.0f}" if ratio >= 100 else f"{ratio:.1f}".removesuffix(".0")
    return _fail(
        path,
        f"image is {width}x{height} (aspect {shown}:1), beyond the {cap}:1 limit on long side / short side "
        "(resizing its short side to the model's input would take far more memory than the file suggests)",
        f"crop it, or raise {Limits.env_name('max_image_aspect')}",
    )


def list_images(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand directories to the image files below them; keep explicit files as given.

    Directory order is sorted so runs (and the order of a trainer's samples) are
    reproducible across filesystems; hidden files are skipped because they are
    usually OS debris (``.DS_Store``, ``._foo.jpg`` resource forks).
    """
    found: list[Path] = []
    for entry in paths:
        root = Path(entry)
        if not root.exists():
            raise RingfoldError(f"{os.fspath(entry)}: no such file or directory; check the path")
        if not root.is_dir():
            found.append(root)
            continue
        below: list[Path] = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                candidate = Path(dirpath, name)
                if name.startswith("."):
                    continue
                if candidate.suffix.lower() in IMAGE_EXTENSIONS:
                    below.append(candidate)
        found.extend(sorted(below))
    return found


def round_robin_by_label(items: Sequence[tuple[Path, int]]) -> list[tuple[Path, int]]:
    """Every (path, label) item, ordered so that any prefix covers as many labels as it can: one item per
    label in turn (labels ascending, sorted paths within a label). A small reference or agreement set drawn
    from its front covers many classes."""
    by_label: dict[int, list[tuple[Path, int]]] = {}
    for item in sorted(items, key=lambda it: str(it[0])):
        by_label.setdefault(item[1], []).append(item)
    groups = [by_label[label] for label in sorted(by_label)]
    depth = max((len(g) for g in groups), default=0)
    return [g[i] for i in range(depth) for g in groups if i < len(g)]


def folder_labels(paths: Sequence[Path], classnames: Sequence[str]) -> list[int]:
    """Each image's class from its folder's name, as an ImageFolder names it (``DIR/<class name>/x.jpg``).

    The folder is the class name, or the class name with '_' for ' '; -1 when no class matches.
    """
    index = {name.replace(" ", "_"): i for i, name in enumerate(classnames)}
    index.update({name: i for i, name in enumerate(classnames)})
    return [index.get(p.parent.name, -1) for p in paths]
