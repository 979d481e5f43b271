"""Parity against the PyTorch reference stored in the bundle: no torch, so it runs on the device.

Three checks per precision: the runtime's preprocessing of the stored reference images vs the
open_clip tensors computed at export; the backend's outputs on those stored tensors vs the
adapted (unfolded) PyTorch model and vs the folded one; and the backend end to end (the runtime's
own preprocessing) vs the adapted model.
"""

from __future__ import annotations

import numpy as np

from ringfold.runtime.backends.base import Backend
from ringfold.runtime.bundle.loader import Bundle
from ringfold.runtime.pixels.images import load_image
from ringfold.runtime.pixels.preprocess import preprocess_batch

from .metrics import Against, Comparison, PreprocessCheck, Tolerance, compare, tolerance_for
from .report import ParityReport


def bundle_parity(
    bundle: Bundle,
    model: Backend,
    precision: str = "fp32",
    tolerance: Tolerance | None = None,
) -> ParityReport:
    """Check a loaded backend against the PyTorch reference stored in the bundle (no torch needed).

    Three checks: runtime preprocessing of the stored reference images vs the
    open_clip tensors computed at export; backend logits vs the unfolded
    adapted PyTorch model; and vs the folded PyTorch model.
    """
    ref = bundle.reference()
    tolerance = tolerance or tolerance_for(precision)
    report = ParityReport(
        bundle=str(bundle.path),
        model=bundle.describe(),
        random_weights=bundle.random_weights,
        backend=f"{model.backend} ({getattr(model, 'provider', '?')})",
        reference=bundle.manifest.reference.describe(),
        reference_synthetic=bundle.manifest.reference.synthetic,
    )
    ours = preprocess_batch([load_image(bundle.path / name) for name in ref.images], bundle.preprocess)
    report.preprocessing.append(
        PreprocessCheck(
            "runtime preprocess vs open_clip transform (reference images)",
            len(ours),
            float(np.abs(ours - ref.pixel_values).max()) if len(ours) else 0.0,
        )
    )
    # generated images have no true class: no accuracy is computed on them, whatever the archive holds
    labels = ref.labels if (ref.labels >= 0).any() and not report.reference_synthetic else None

    def against(title: str, out: dict[str, np.ndarray], side: Against, end_to_end: bool = False) -> Comparison:
        logits, embedding = (
            (ref.logits, ref.embedding) if side == "unfolded" else (ref.logits_folded, ref.embedding_folded)
        )
        return compare(
            title,
            precision,
            out["logits"],
            out["embedding"],
            logits,
            embedding,
            labels,
            tolerance,
            images=list(ref.images),
            against=side,
            source="reference set",
            end_to_end=end_to_end,
        )

    stored = model.run_batched(ref.pixel_values)
    report.comparisons += [
        against(f"{precision} backend vs PyTorch adapted (unfolded), reference set", stored, "unfolded"),
        against(f"{precision} backend vs PyTorch folded, reference set", stored, "folded"),
        against(
            f"{precision} backend on runtime-preprocessed images vs PyTorch adapted (end to end)",
            model.run_batched(ours),
            "unfolded",
            end_to_end=True,
        ),
    ]
    if bundle.random_weights:
        report.notes.append("random weights: accuracy figures are not meaningful; numerics parity is")
    return report
