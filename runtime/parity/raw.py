"""Parity of the raw-input models: the same gate as fp32, against the stored PyTorch reference (torch-free).

Two comparisons per raw model, both judged with the fp32 tolerance (max |Δlogit| ≤ 1e-4):

- on the reference tensors mapped back to pixels, ``(pixel_values · std + mean) · 255``, fed as
  float and never rounded (float32 model only: rounding would add up to half a grey level);
- end to end: the stored reference images resized by the client recipe (open_clip geometry),
  the raw 0..255 values fed as they are — what a DeepStream or Triton client does.
"""

from __future__ import annotations

import numpy as np

from ringfold.runtime.backends.onnxruntime.model import open_raw_model
from ringfold.runtime.bundle.loader import Bundle
from ringfold.runtime.pixels.images import load_image
from ringfold.runtime.pixels.raw import raw_pixels, unnormalise

from .metrics import Comparison, Tolerance, compare


def raw_input_comparisons(
    bundle: Bundle, tolerance: Tolerance, provider: str | None = None, threads: int | None = None
) -> list[Comparison]:
    """Every raw model of ``bundle`` vs its stored unfolded PyTorch outputs; [] when it has none."""
    raw = bundle.manifest.raw_input
    if raw is None:
        return []
    ref = bundle.reference()
    images = list(ref.images)
    labels = ref.labels if (ref.labels >= 0).any() else None
    resized = None
    out: list[Comparison] = []

    def against_reference(title: str, got: dict, subject: str, end_to_end: bool) -> Comparison:
        """The fp32 gate on one raw run vs the stored unfolded PyTorch outputs."""
        return compare(
            title,
            "fp32",
            got["logits"],
            got["embedding"],
            ref.logits,
            ref.embedding,
            labels,
            tolerance,
            images=images,
            subject=subject,
            source="reference set",
            end_to_end=end_to_end,
        )

    for dtype in raw.models:
        model = open_raw_model(bundle, dtype, provider=provider, threads=threads)
        subject = f"raw input {dtype}"
        if dtype == "float32":
            got = model.run_batched(unnormalise(ref.pixel_values, bundle.preprocess))
            title = "raw float32 model on reference tensors ×std+mean ×255 (float) vs PyTorch adapted"
            out.append(against_reference(title, got, subject, end_to_end=False))
        if resized is None:
            resized = [raw_pixels(load_image(bundle.path / name), bundle.preprocess) for name in images]
        got = model.run_batched(np.stack(resized))
        title = f"raw {dtype} model on client-resized 0..255 pixels vs PyTorch adapted (end to end)"
        out.append(against_reference(title, got, subject, end_to_end=True))
    return out
