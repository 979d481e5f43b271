"""Resource caps for everything a stranger's file can make ringfold allocate.

A bundle, an image or a run directory may come from anyone; the numbers in
it (an image's size, a preprocess size, a label count, an array shape) must
never decide on their own how much memory or time ringfold spends. Each cap
is checked *before* the work it guards, and each can be raised for a
legitimate outlier with an environment variable named after it
(``RINGFOLD_MAX_IMAGE_PIXELS=400000000 ringfold classify …``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

from ringfold.errors import RingfoldError


@dataclass(frozen=True)
class Limits:
    #: decoded pixels of one input image (8192 x 8192); guards decompression bombs
    max_image_pixels: int = 8192 * 8192
    #: long side / short side of an input image; a 1,000,000 x 2 PNG is 321 bytes but resizes to gigabytes
    max_image_aspect: int = 64
    #: pixels of any intermediate image the preprocessing resize would produce
    max_resize_pixels: int = 8192 * 8192
    #: model input height / width a bundle may ask for (ViT-bigG uses 224..448)
    max_input_side: int = 4096
    #: classes in a bundle's head
    max_classes: int = 100_000
    #: characters in one class name
    max_label_chars: int = 1_000
    #: manifest.json, labels.json, preprocess.json, engines/index.json and sidecars, in bytes
    max_json_bytes: int = 64 * 1024 * 1024
    #: files a manifest may list
    max_bundle_files: int = 10_000
    #: the reference archive, uncompressed, in bytes
    max_reference_bytes: int = 1024 * 1024 * 1024
    #: images in the reference set
    max_reference_images: int = 10_000
    #: one input batch (batch x 3 x H x W float32) that bench/classify will allocate, in bytes
    max_batch_bytes: int = 2 * 1024 * 1024 * 1024

    @staticmethod
    def env_name(field_name: str) -> str:
        return f"RINGFOLD_{field_name.upper()}"

    @classmethod
    def from_environment(cls) -> Limits:
        """Defaults, with any ``RINGFOLD_MAX_*`` variable applied (a malformed one is an error, not ignored)."""
        values = {}
        for f in fields(cls):
            name = cls.env_name(f.name)
            raw = os.environ.get(name)
            if raw is None:
                continue
            try:
                value = int(raw.replace("_", ""))
            except ValueError:
                value = 0
            if value <= 0:
                raise RingfoldError(f"{name}={raw!r}: must be a positive integer; fix or unset the variable")
            values[f.name] = value
        return cls(**values)


def check_batch_bytes(batch: int, chw: tuple[int, int, int]) -> None:
    """Refuse a float32 input batch larger than ``max_batch_bytes`` before it is allocated."""
    caps = limits()
    need = batch * chw[0] * chw[1] * chw[2] * 4
    if need > caps.max_batch_bytes:
        raise RingfoldError(
            f"batch {batch} of {'x'.join(map(str, chw))} inputs needs {need / 2**30:.1f} GiB, over the "
            f"{caps.max_batch_bytes / 2**30:.1f} GiB cap; use a smaller batch or raise "
            f"{caps.env_name('max_batch_bytes')}"
        )


def limits() -> Limits:
    """The caps in force now (read each time, so tests and long-lived services see a changed environment)."""
    return Limits.from_environment()
