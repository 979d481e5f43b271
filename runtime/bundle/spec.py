"""The bundle format's vocabulary: file names, output names, dtypes, and the typed parts a manifest is made of.

Everything here is a plain value or a small typed record, imported by the manifest parser, the
reader, the writer and every layer above (backends check a loaded graph against a
:class:`TensorSpec`; the head rewrite finds the head between :data:`EMBEDDING` and :data:`LOGITS`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ringfold.runtime.base.fields import Fields

BUNDLE_FORMAT = "ringfold-bundle"
BUNDLE_FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
LABELS_FILE = "labels.json"
PREPROCESS_FILE = "preprocess.json"
REFERENCE_FILE = "reference/reference.npz"
REFERENCE_IMAGES_DIR = "reference/images"

ORT_OPTIMIZATIONS = ("all", "extended", "basic")
TENSOR_DTYPES = ("float32", "float16", "uint8")
#: the model's two outputs: the class scores, and the L2-normalised image embedding the head reads
LOGITS, EMBEDDING = "logits", "embedding"
#: float32 std below this turns a pixel into ±1e6 or, underflowing, into a division by zero
MIN_STD = 1e-6

FIX = "re-export the bundle with `ringfold export` or copy it again"
#: where the reference images came from (manifest ``reference.source``; bundles before it say nothing):
#: the run's held-out images, ``--ref-images DIR``, or generated noise (``--synthetic-ref``)
REFERENCE_SOURCES = ("run-data", "ref-images", "synthetic")
#: what the manifest, every report and every summary line say of a synthetic reference set
SYNTHETIC_NOTE = "synthetic: numerics only, no accuracy"


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output as the manifest promises it; a string dim is symbolic (e.g. 'batch')."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def parse(cls, f: Fields, max_dim: int) -> TensorSpec:
        name = f.string("name", max_len=256)
        dtype = f.string("dtype", choices=TENSOR_DTYPES)
        shape = f.raw("shape")
        if not isinstance(shape, list) or not 1 <= len(shape) <= 8:
            raise f.fail("must be a list of 1..8 dimensions", "shape")
        dims: list[int | str] = []
        for i, dim in enumerate(shape):
            if isinstance(dim, str) and 0 < len(dim) <= 64:
                dims.append(dim)
            else:
                dims.append(f.check_integer(dim, f"shape[{i}]", 1, max_dim))
        return cls(name, dtype, tuple(dims))


@dataclass(frozen=True)
class ModelFile:
    """A model variant (or the base model): its file and how ONNX Runtime should run it."""

    file: str
    precision: str
    ort_optimization: str = "all"
    details: Mapping[str, Any] = field(default_factory=dict)  # the recipe, for reports


@dataclass(frozen=True)
class SectionContext:
    """What an optional manifest section's parser may rely on (:mod:`.sections`)."""

    #: the path a field names, checked relative, normalised and hashed by the manifest's files set
    member: Callable[[Fields, str], str]
    #: the model input's (height, width)
    input_size: tuple[int, int]
    #: the largest integer dimension a tensor shape may hold
    max_dim: int
