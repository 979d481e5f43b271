"""What every backend offers: :class:`Backend` (``run`` one batch, ``io``, ``run_batched``); it knows no backend.

A backend runs a bundle's model: ONNX Runtime (any provider), a TensorRT engine, or a wrapper
such as the open-vocabulary head. ``io`` reports the graph's inputs and outputs so they can be
checked against the manifest; ``run_batched`` splits any number of images into the batches the
backend takes. Which backends exist, and how one is opened, is :mod:`.registry`'s.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

#: images per ``run`` call of :func:`run_batched` when neither the caller nor the backend sets a limit
DEFAULT_BATCH = 16

#: (name, dtype, shape) of one graph input or output; unknown dims are None (or a symbol, from ONNX Runtime)
IoSpec = tuple[str, str, list]


class Backend(ABC):
    """A loaded bundle model: ``run`` takes one batch of preprocessed images, returns float32 arrays by output name."""

    #: which runtime this is: a name of :data:`.registry.BACKENDS`
    backend: str
    #: what runs it, for reports (an ONNX Runtime execution provider, "TensorRT 10.3 on Orin")
    provider: str
    #: the largest batch one ``run`` call takes (a TensorRT profile's max); None: any batch
    max_batch: int | None = None

    @abstractmethod
    def run(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs for one batch ``pixels`` (N, 3, H, W), as float32 arrays the caller owns."""

    @abstractmethod
    def io(self) -> tuple[list[IoSpec], list[IoSpec]]:
        """(name, dtype, shape) of the model's inputs and outputs."""

    def run_batched(self, pixels: np.ndarray, batch: int | None = None) -> dict[str, np.ndarray]:
        """:func:`run_batched` on this model."""
        return run_batched(self, pixels, batch)


def run_batched(model: Backend, pixels: np.ndarray, batch: int | None = None) -> dict[str, np.ndarray]:
    """``model.run`` over ``pixels`` in slices of ``batch`` images, the outputs concatenated in order.

    ``batch`` defaults to the model's ``max_batch``, else :data:`DEFAULT_BATCH`, and never exceeds
    ``max_batch``. Each slice goes to ``run`` as it is, so a backend that refuses a batch size (a
    last slice below a TensorRT profile's minimum) refuses it here too. No images: ``{}``.
    """
    step = batch or model.max_batch or DEFAULT_BATCH
    if model.max_batch is not None:
        step = min(step, model.max_batch)
    parts = [model.run(pixels[i : i + step]) for i in range(0, len(pixels), step)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}
