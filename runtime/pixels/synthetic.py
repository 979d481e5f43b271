"""Generated pictures for numerics only, never for accuracy: the reference set of ``export --synthetic-ref``.

A bundle whose reference set is generated says so in its manifest ("synthetic: numerics only, no
accuracy"), and every report and summary line that shows a figure measured on it repeats that.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def smooth_noise_images(count: int, size: tuple[int, int], seed: int = 0) -> list[Image.Image]:
    """Deterministic smooth-noise RGB pictures of odd aspect ratios (at least ``size`` = (height, width)).

    Numerics only, never accuracy: the bundle's reference set when the user asks for it with
    ``export --synthetic-ref`` (recorded as "synthetic: numerics only, no accuracy"), and tests.
    """
    rng = np.random.default_rng(seed)
    images = []
    for i in range(count):
        h = int(size[0] * rng.uniform(1.0, 1.8))
        w = int(size[1] * rng.uniform(1.0, 1.8))
        coarse = rng.integers(0, 256, size=(4 + i % 5, 5 + i % 3, 3), dtype=np.uint8)
        images.append(Image.fromarray(coarse).resize((w, h), Image.BICUBIC))
    return images
