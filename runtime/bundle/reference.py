"""The reference archive (``reference/reference.npz``): the PyTorch outputs parity compares against.

Read lazily (:meth:`.loader.Bundle.reference`) and never with ``np.load``: only the expected
arrays, each ``.npy`` header checked against the member's real size *before* anything is
allocated, shapes consistent with the manifest, values finite, image names hashed members under
``reference/images/``.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ringfold.errors import BundleError
from ringfold.runtime.base.fields import relative_member_problem
from ringfold.runtime.base.limits import limits

from .manifest import Manifest, member_path
from .spec import FIX, REFERENCE_IMAGES_DIR


@dataclass
class Reference:
    pixel_values: np.ndarray
    logits: np.ndarray
    embedding: np.ndarray
    logits_folded: np.ndarray
    embedding_folded: np.ndarray
    labels: np.ndarray
    images: list[str]


#: array name -> (dtype kinds allowed, rank)
REFERENCE_ARRAYS = {
    "pixel_values": ("f", 4),
    "logits": ("f", 2),
    "embedding": ("f", 2),
    "logits_folded": ("f", 2),
    "embedding_folded": ("f", 2),
    "labels": ("iu", 1),
    "images": ("U", 1),
}


def _read_npz_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, kinds: str, rank: int) -> np.ndarray:
    """One .npy inside the archive; the header's shape is checked against the member's real size first.

    ``np.load`` would allocate whatever shape a header declares before reading a byte of data.
    """
    name = info.filename
    with zf.open(info) as fh:
        try:
            version = np.lib.format.read_magic(fh)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = reader(fh)
        except (ValueError, SyntaxError, OSError) as exc:
            raise BundleError(f"{path}: array {name} has a malformed header ({exc}); {FIX}") from None
        if dtype.hasobject or dtype.kind not in kinds or len(shape) != rank:
            raise BundleError(f"{path}: array {name} is {dtype} of rank {len(shape)}, expected rank {rank}; {FIX}")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > info.file_size:
            raise BundleError(f"{path}: array {name} declares {nbytes:,} bytes but holds fewer; {FIX}")
        data = fh.read(nbytes)
    if len(data) != nbytes:
        raise BundleError(f"{path}: array {name} is truncated; {FIX}")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C").copy()


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the archive: exactly the expected members, within the size cap, headers checked."""
    caps = limits()
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BundleError(f"{path}: not a readable reference archive ({exc}); {FIX}") from None
    with zf:
        infos = {i.filename: i for i in zf.infolist()}
        expected = {f"{k}.npy" for k in REFERENCE_ARRAYS}
        if set(infos) != expected:
            odd = sorted(set(infos) ^ expected)[:3]
            raise BundleError(f"{path}: archive members differ from the reference format ({odd}); {FIX}")
        total = sum(i.file_size for i in infos.values())
        if total > caps.max_reference_bytes:
            raise BundleError(
                f"{path}: {total:,} bytes uncompressed, over the {caps.max_reference_bytes:,}-byte cap; "
                f"{FIX} (or raise {caps.env_name('max_reference_bytes')})"
            )
        try:
            return {
                k: _read_npz_member(zf, infos[f"{k}.npy"], path, kinds, rank)
                for k, (kinds, rank) in REFERENCE_ARRAYS.items()
            }
        except (zipfile.BadZipFile, OSError, EOFError) as exc:  # CRC errors, truncated members
            raise BundleError(f"{path}: corrupt reference archive ({exc}); {FIX}") from None


def _check_shapes(path: Path, arrays: dict[str, np.ndarray], manifest: Manifest) -> None:
    """Shapes the manifest implies, finite values, labels within -1..classes-1."""
    n, classes = manifest.reference.count, manifest.num_classes
    h, w = manifest.input_size
    dim = arrays["embedding"].shape[1] if arrays["embedding"].ndim == 2 else -1
    want = {
        "pixel_values": (n, 3, h, w),
        "logits": (n, classes),
        "logits_folded": (n, classes),
        "embedding": (n, dim),
        "embedding_folded": (n, dim),
        "labels": (n,),
        "images": (n,),
    }
    for key, shape in want.items():
        if arrays[key].shape != shape:
            raise BundleError(f"{path}: array {key} has shape {arrays[key].shape}, the manifest implies {shape}; {FIX}")
        if arrays[key].dtype.kind == "f" and not np.isfinite(arrays[key]).all():
            raise BundleError(f"{path}: array {key} holds NaN/Inf; {FIX}")
    labels = arrays["labels"]
    if labels.size and (labels.min() < -1 or labels.max() >= classes):
        raise BundleError(f"{path}: array labels holds values outside -1..{classes - 1}; {FIX}")


def _check_images(path: Path, images: list[str], manifest: Manifest, root: Path) -> None:
    """Each image name: a hashed member under ``reference/images/``, inside the bundle."""
    for name in images:
        problem = relative_member_problem(name)
        if problem or not name.startswith(REFERENCE_IMAGES_DIR + "/"):
            raise BundleError(f"{path}: image name {name[:80]!r} is not a file under {REFERENCE_IMAGES_DIR}/; {FIX}")
        if name not in manifest.files:
            raise BundleError(f"{path}: image {name!r} is not hashed in the manifest; {FIX}")
        member_path(root, manifest, name)


def read_reference(path: Path, manifest: Manifest, root: Path) -> Reference:
    """The reference archive, validated against the manifest before and after reading."""
    arrays = _read_arrays(path)
    _check_shapes(path, arrays, manifest)
    images = [str(x) for x in arrays["images"]]
    _check_images(path, images, manifest, root)
    return Reference(
        pixel_values=arrays["pixel_values"].astype(np.float32, copy=False),
        logits=arrays["logits"].astype(np.float32, copy=False),
        embedding=arrays["embedding"].astype(np.float32, copy=False),
        logits_folded=arrays["logits_folded"].astype(np.float32, copy=False),
        embedding_folded=arrays["embedding_folded"].astype(np.float32, copy=False),
        labels=arrays["labels"].astype(np.int64),
        images=images,
    )
