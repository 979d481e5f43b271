"""The bundle's reference set: a few images, their open_clip-preprocessed tensors and PyTorch outputs.

Stored images let the device check its own preprocessing against open_clip's
(no torch there), and the stored logits let it check the model numerics.

Where the images come from is decided (and every image checked) before the
export loads its model, by :func:`plan_reference`: the run's own held-out
images (test split, else validation split, found through the data path the
run records), or ``--ref-images DIR``. Without either the export refuses; a
generated smooth-noise set is used only when asked for (``--synthetic-ref``),
and then the manifest, the reports and every summary say
:data:`~ringfold.runtime.bundle.spec.SYNTHETIC_NOTE`: a figure measured on noise
never stands where a user would read accuracy.
"""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ringfold.errors import FieldError, ImageError, RingfoldError
from ringfold.runtime.base.fields import one_line
from ringfold.runtime.bundle.manifest import ReferenceInfo
from ringfold.runtime.bundle.spec import REFERENCE_FILE, REFERENCE_IMAGES_DIR, SYNTHETIC_NOTE
from ringfold.runtime.pixels.images import folder_labels, list_images, load_image, round_robin_by_label
from ringfold.runtime.pixels.synthetic import smooth_noise_images
from ringfold.trainer.run import splits_from_record

#: the two ways out when the run's own held-out images cannot be found, named in every refusal
REFERENCE_FIX = (
    "pass --ref-images DIR (held-out images, one sub-folder per class), or --synthetic-ref for generated "
    f"images ({SYNTHETIC_NOTE})"
)


@dataclass
class RefImage:
    path: Path  # source image
    label: int  # -1 when unknown


def _decodes(path: Path) -> bool:
    try:
        load_image(path)  # regular file (a FIFO is never opened) and decodable
    except ImageError:
        return False
    return True


def pick_reference_images(samples: list, classnames: list[str], count: int) -> list[RefImage]:
    """Round-robin over classes, decoding only the images picked; an undecodable one is passed over."""
    picked: list[RefImage] = []
    for path, label in round_robin_by_label([(s.path, s.label) for s in samples]):
        if len(picked) >= count:
            break
        if _decodes(path):
            picked.append(RefImage(path, label))
    return picked


def shown(text: object) -> str:
    """``text`` safe to write into a manifest and reports: control, format and separator characters escaped."""
    return "".join(
        ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch)[0] in "CZ" and ch != " " else ch
        for ch in str(text)
    )


@dataclass
class ReferencePlan:
    """Where the bundle's reference images come from, decided and checked before the model loads."""

    source: str  # run-data | ref-images | synthetic (manifest reference.source)
    origin: str  # what a reader is told: "test split of DATA", the --ref-images folder, "generated …"
    refs: list[RefImage] = field(default_factory=list)  # empty for synthetic: drawn by :meth:`images`

    @property
    def synthetic(self) -> bool:
        return self.source == "synthetic"

    def images(self, scratch: Path, count: int, size: tuple[int, int]) -> list[RefImage]:
        """The reference images; the synthetic set is drawn into ``scratch`` now."""
        return synthetic_reference_images(scratch, count, size) if self.synthetic else list(self.refs)

    def manifest_section(self) -> dict[str, Any]:
        """The manifest's reference.source / origin (and the synthetic note), parsed by runtime/bundle/."""
        section: dict[str, Any] = {"source": self.source, "origin": self.origin}
        if self.synthetic:
            section["note"] = SYNTHETIC_NOTE
        return section

    def describe(self, count: int) -> str:
        """What the figures were measured on, in the words the runtime's reports use for the same bundle."""
        return ReferenceInfo(REFERENCE_FILE, count, bool(self.refs), self.source, self.origin).describe()


#: where the generated reference images come from, as the manifest's reference.origin names it
_SYNTHETIC_SOURCE = f"{smooth_noise_images.__module__}.{smooth_noise_images.__name__}"


def plan_reference(record, ref_images: str | None, count: int, *, synthetic: bool = False) -> ReferencePlan:
    """The reference set for ``record``'s export, every picked image checked; a one-line refusal otherwise."""
    if ref_images and synthetic:
        raise FieldError("synthetic_ref", "and --ref-images exclude each other; pass one of them")
    if ref_images:
        return _from_folder(ref_images, record.classnames, count)
    if synthetic:
        return ReferencePlan("synthetic", f"generated smooth-noise images ({_SYNTHETIC_SOURCE})")
    return _from_run(record, count)


def _from_folder(folder: str, classnames: list[str], count: int) -> ReferencePlan:
    """``--ref-images``: its first ``count`` images (sorted), each a regular file that decodes."""
    if not Path(folder).exists():
        raise FieldError("ref_images", f"{folder}: no such folder; check the path")
    try:
        paths = list_images([folder])[:count]
    except OSError as exc:
        raise FieldError("ref_images", f"{folder} cannot be read ({exc.strerror or exc})") from None
    if not paths:
        raise FieldError("ref_images", f"{folder}: no images found for the reference set; pass a folder of images")
    for path in paths:
        try:
            load_image(path)  # a FIFO or device is named and refused without being opened
        except ImageError as exc:
            raise FieldError("ref_images", f"holds an image that cannot be used: {exc}") from None
    labels = folder_labels(paths, classnames)
    refs = [RefImage(p, label) for p, label in zip(paths, labels, strict=True)]
    return ReferencePlan("ref-images", shown(os.fspath(folder)), refs)


def _some(names: list[str]) -> str:
    """``3: cat, dog, fox`` / ``120: a, b, c, d, …`` — shown escaped, never a raw control character."""
    return shown(f"{len(names)}: {', '.join(names[:4])}{', …' if len(names) > 4 else ''}")


def _from_run(record, count: int) -> ReferencePlan:
    """The run's held-out images (test split, else validation), drawn with the run's seed."""
    data = record.data.path
    if not data:
        raise RingfoldError(f"the run records no training data path, so there are no held-out images; {REFERENCE_FIX}")
    where = f"the run's training data {data}"
    if not Path(data).exists():
        raise RingfoldError(f"{where} is gone (moved or deleted): no held-out reference images; {REFERENCE_FIX}")
    try:
        splits = splits_from_record(record)  # with the run's seed: the images it held out, not others
    except RingfoldError as exc:
        raise RingfoldError(f"{where} cannot be read again ({one_line(exc)[:200]}); {REFERENCE_FIX}") from None
    if splits.classnames != record.classnames:
        raise RingfoldError(
            f"{where} now holds other classes ({_some(splits.classnames)}) than the run was trained on "
            f"({_some(record.classnames)}); {REFERENCE_FIX}"
        )
    split = "test" if splits.test else "val"
    refs = pick_reference_images(splits.test or splits.val, record.classnames, count)
    if not refs:
        raise RingfoldError(f"{where} has no decodable held-out (test or val) images; {REFERENCE_FIX}")
    return ReferencePlan("run-data", shown(f"{split} split of {data}"), refs)


def synthetic_reference_images(out_dir: Path, count: int, size: tuple[int, int], seed: int = 0) -> list[RefImage]:
    """Deterministic smooth-noise pictures of odd aspect ratios, for runs whose data is not at hand."""
    out_dir.mkdir(parents=True, exist_ok=True)
    refs = []
    for i, img in enumerate(smooth_noise_images(count, size, seed)):
        path = out_dir / f"synthetic_{i:03d}.png"
        img.save(path)
        refs.append(RefImage(path, -1))
    return refs


def store_reference_images(refs: list[RefImage], bundle_dir: Path, max_side: int) -> list[str]:
    """Re-encode each reference image as PNG (downscaled to ``max_side``) inside the bundle."""
    images_dir = bundle_dir / REFERENCE_IMAGES_DIR
    images_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for i, ref in enumerate(refs):
        img = load_image(ref.path)
        if max(img.size) > max_side:
            img.thumbnail((max_side, max_side), Image.BICUBIC)
        name = f"{REFERENCE_IMAGES_DIR}/{i:03d}.png"
        img.save(bundle_dir / name)
        names.append(name)
    return names
