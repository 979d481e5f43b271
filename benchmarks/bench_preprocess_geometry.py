"""What DeepStream's resize costs a bundle: open_clip's resize + centre crop vs nvinfer's stretch / letterbox.

Runs a bundle's fp32 model (ONNX Runtime, CPU) on three image sets under each
geometry and reports top-1 agreement with open_clip's geometry and, where the
folder names are class names, the accuracy of each:

- the scikit-image sample photos (real, mostly non-square, unlabelled for a demo bundle);
- the demo's labelled test set (square images: the geometries differ only in the filter);
- the same test set widened to 2:1 by repeating the edge pixels (a wider camera frame
  around the same object: the crop keeps the object, the stretch squeezes it).

    python benchmarks/bench_preprocess_geometry.py BUNDLE --demo-test DATA/test [--out benchmarks/results]

Same figures as ``ringfold parity BUNDLE --images DIR --compare-preprocess deepstream``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

from common import machine, write_results  # noqa: E402

PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "cat",
    "camera",
    "page",
    "text",
    "retina",
    "colorwheel",
    "logo",
)


def _skimage_photos(out: Path) -> Path:
    from skimage import data

    out.mkdir(parents=True)
    for name in PHOTOS:
        if hasattr(data, name):
            Image.fromarray(getattr(data, name)()).convert("RGB").save(out / f"{name}.png")
    return out


def _widened(src: Path, out: Path) -> Path:
    for path in sorted(src.rglob("*.png")):
        pixels = np.asarray(Image.open(path).convert("RGB"))
        pad = pixels.shape[1] // 2
        wide = np.pad(pixels, ((0, 0), (pad, pad), (0, 0)), mode="edge")
        target = out / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(wide).save(target)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("--demo-test", required=True, help="the demo's labelled test folder (DATA/test)")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()

    from ringfold.runtime.backends.registry import open_model
    from ringfold.runtime.bundle.loader import load_bundle
    from ringfold.runtime.parity.geometry import compare_preprocessing

    bundle = load_bundle(args.bundle)
    model = open_model(bundle, "fp32", "onnxruntime", "cpu")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        sets = {
            "scikit-image photos": _skimage_photos(Path(scratch) / "photos"),
            "demo test (square)": Path(args.demo_test),
            "demo test widened 2:1": _widened(Path(args.demo_test), Path(scratch) / "wide"),
        }
        for name, folder in sets.items():
            for geometry in ("deepstream", "deepstream-letterbox"):
                c = compare_preprocessing(bundle, model, [str(folder)], geometry)
                rows.append({"images": name, **c.to_dict()})
    results = {
        "bundle": str(bundle.path),
        "model": bundle.describe(),
        "random_weights": bundle.random_weights,
        "machine": machine(),
        "rows": [{k: v for k, v in r.items() if k != "disagreements"} for r in rows],
    }

    def pct(x):
        return "—" if x is None else f"{x:.1%}"

    table = [
        f"Preprocessing geometry, {bundle.describe()} (fp32, ONNX Runtime CPU)",
        "",
        "| images | n | nvinfer geometry | top-1 agreement with open_clip's | acc. open_clip | acc. nvinfer |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        table.append(
            f"| {r['images']} | {r['n']} | {r['geometry']} | {pct(r['top1_agreement'])} | "
            f"{pct(r['accuracy_openclip'])} | {pct(r['accuracy_other'])} |"
        )
    write_results(Path(args.out), "preprocess_geometry_cpu", results, "\n".join(table))
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
