"""``ringfold demo``: the whole pipeline offline on 2 CPU cores in a few minutes.

A small open_clip-architecture ViT with RANDOM weights (nothing can be
downloaded here), a generated 4-class image set, ARC trained for a few
epochs, export, classify, parity. What it proves is the machinery: adapters
learn (accuracy rises above chance from a random model's features), the fold
is exact, the ONNX bundle agrees with PyTorch. It proves nothing about
accuracy on real photos with real weights.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

DEMO_MODEL = "ringfold-tiny-vit"


def _say(msg: str) -> None:
    print(f"\n== {msg}", flush=True)


def run_demo(out: Path, epochs: int = 30, overwrite: bool = True, quiet: bool = False) -> int:
    from ringfold.cli import main as cli
    from ringfold.demo_data import make_demo_dataset

    if out.exists() and overwrite:
        shutil.rmtree(out)
    data, run, bundle = out / "data", out / "run", out / "bundle"
    _say(f"1/5 data: generating a 4-class image set in {data} (nothing downloaded)")
    classes = make_demo_dataset(data, per_class=24, size=96, seed=0)
    print(f"classes: {', '.join(classes)}; 24 train + 12 test images per class")

    _say(f"2/5 train: ARC on {DEMO_MODEL} — RANDOM WEIGHTS (a built-in small open_clip ViT config)")
    quiet_flag = ["--quiet"] if quiet else []
    code = cli(
        [
            "train",
            "--model",
            DEMO_MODEL,
            "--random-init",
            "--method",
            "arc",
            "--rank",
            "32",
            "--layers",
            "all",
            "--data",
            str(data),
            "--shots",
            "16",
            "--epochs",
            str(epochs),
            "--batch-size",
            "16",
            "--lr",
            "1e-2",
            "--warmup-epochs",
            "1",
            "--no-augment",
            "--device",
            "cpu",
            "--out",
            str(run),
            *quiet_flag,
        ]
    )
    if code:
        return code

    _say(f"3/5 export: fold ARC into the frozen weights, bake the class head, write the ONNX bundle {bundle}")
    code = cli(["export", str(run), "--out", str(bundle), *quiet_flag])
    if code:
        return code

    _say("4/5 classify: the torch-free runtime (ONNX Runtime, CPU) on a few test images")
    samples = [sorted((data / "test" / c.replace(" ", "_")).glob("*.png"))[0] for c in classes]
    code = cli(["classify", str(bundle), *map(str, samples), "--top-k", "2", "--provider", "cpu"])
    if code:
        return code

    _say("5/5 parity: ONNX Runtime vs PyTorch (unfolded and folded), preprocessing vs open_clip")
    code = cli(["parity", str(bundle), "--run", str(run), "--images", str(data / "test"), "--provider", "cpu"])
    import json

    metrics = json.loads((run / "run.json").read_text())["metrics"]
    print(
        f"\ndemo summary (random-weights model): test accuracy {100 * metrics['zero_shot_eval_acc']:.1f}% before "
        f"training → {100 * metrics['final_eval_acc']:.1f}% after ARC (chance {100 * metrics['chance_acc']:.0f}%); "
        f"parity {'PASSED' if code == 0 else 'FAILED'}. Outputs in {out}/ (curves.png, bundle/, bundle.parity/)."
    )
    return code


if __name__ == "__main__":
    sys.exit(run_demo(Path("ringfold-demo")))
