"""What DeepStream's resize costs: open_clip's geometry vs nvinfer's stretch, on the user's images (torch-free).

``ringfold parity BUNDLE --images DIR --compare-preprocess deepstream`` runs the bundle's
fp32 model on every image twice, once preprocessed as open_clip does (resize the shorter
side, centre crop) and once as nvinfer does (stretch the frame to the network size, or
letterbox with ``deepstream-letterbox``), and reports how often the two top-1 classes
agree and, where the folder names give labels (ImageFolder: ``DIR/<class name>/x.jpg``),
the accuracy of each. A measurement, not a gate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ringfold.atomic import write_json
from ringfold.errors import RingfoldError
from ringfold.runtime.backends.base import Backend
from ringfold.runtime.bundle.loader import Bundle
from ringfold.runtime.pixels.images import folder_labels, list_images, load_image
from ringfold.runtime.pixels.raw import GEOMETRIES, normalised_pixels

#: images per model call, so a large folder never sits in memory as one tensor
BATCH = 16


@dataclass
class PreprocessComparison:
    geometry: str
    n: int
    top1_agreement: float
    labelled: int
    accuracy_openclip: float | None
    accuracy_other: float | None
    disagreements: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write_into(self, out_dir: Path) -> list[Path]:
        """``preprocess_compare.json`` in the parity report folder."""
        path = Path(out_dir) / "preprocess_compare.json"
        write_json(path, self.to_dict())
        return [path]

    def to_markdown(self) -> str:
        def pct(x: float | None) -> str:
            return "—" if x is None else f"{x:.1%}"

        labelled = f"{self.labelled} labelled" if self.labelled else "no labels: folder names are not class names"
        return "\n".join(
            [
                f"## Preprocessing: open_clip (resize shorter side + centre crop) vs {self.geometry} (fp32)",
                "",
                f"| images | top-1 agreement | accuracy open_clip | accuracy {self.geometry} |",
                "|---|---|---|---|",
                f"| {self.n} ({labelled}) | {pct(self.top1_agreement)} | {pct(self.accuracy_openclip)} | "
                f"{pct(self.accuracy_other)} |",
                "",
            ]
        )


def compare_preprocessing(
    bundle: Bundle, model: Backend, images: Sequence[str], geometry: str = "deepstream"
) -> PreprocessComparison:
    """Top-1 agreement and accuracy of ``model`` (a normalised-input backend) under both geometries."""
    if geometry not in GEOMETRIES or geometry == "openclip":
        raise RingfoldError(f"--compare-preprocess {geometry!r}: use deepstream or deepstream-letterbox")
    paths = list_images(images)
    if not paths:
        raise RingfoldError(f"{' '.join(map(str, images))}: no images found; pass files or folders of images")
    preds = {"openclip": [], geometry: []}
    for start in range(0, len(paths), BATCH):
        pil = [load_image(p) for p in paths[start : start + BATCH]]
        for name in preds:
            batch = np.stack([normalised_pixels(img, bundle.preprocess, name) for img in pil])
            preds[name].append(model.run(batch)["logits"].argmax(-1))
    ours, theirs = np.concatenate(preds["openclip"]), np.concatenate(preds[geometry])
    labels = np.array(folder_labels(paths, bundle.labels), dtype=np.int64)
    known = labels >= 0
    differ = np.flatnonzero(ours != theirs)
    return PreprocessComparison(
        geometry=geometry,
        n=len(paths),
        top1_agreement=float((ours == theirs).mean()),
        labelled=int(known.sum()),
        accuracy_openclip=float((ours[known] == labels[known]).mean()) if known.any() else None,
        accuracy_other=float((theirs[known] == labels[known]).mean()) if known.any() else None,
        disagreements=[
            {"image": str(paths[i]), "openclip": bundle.labels[ours[i]], geometry: bundle.labels[theirs[i]]}
            for i in differ[:50]
        ],
    )
