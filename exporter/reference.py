"""The bundle's reference set: a few images, their open_clip-preprocessed tensors and PyTorch outputs.

Stored images let the device check its own preprocessing against open_clip's
(no torch there), and the stored logits let it check the model numerics.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ringfold.demo_data import smooth_noise_images
from ringfold.runtime.bundle import REFERENCE_IMAGES_DIR
from ringfold.runtime.images import load_image


@dataclass
class RefImage:
    path: Path  # source image
    label: int  # -1 when unknown


def folder_labels(paths: list[Path], classnames: list[str]) -> list[int]:
    """Label of each image from its parent folder's name (class name, or with '_' for ' '); -1 if none."""
    index = {name.replace(" ", "_"): i for i, name in enumerate(classnames)}
    index.update({name: i for i, name in enumerate(classnames)})
    return [index.get(p.parent.name, -1) for p in paths]


def pick_reference_images(samples: list, classnames: list[str], count: int) -> list[RefImage]:
    """Round-robin over classes so a small set still covers many labels."""
    by_class: dict[int, list] = {}
    for s in sorted(samples, key=lambda s: str(s.path)):
        by_class.setdefault(s.label, []).append(s)
    picked: list[RefImage] = []
    depth = 0
    while len(picked) < count and any(len(v) > depth for v in by_class.values()):
        for label in sorted(by_class):
            if depth < len(by_class[label]) and len(picked) < count:
                picked.append(RefImage(by_class[label][depth].path, label))
        depth += 1
    return picked


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
