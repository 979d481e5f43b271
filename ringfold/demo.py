"""``ringfold demo``: the whole pipeline offline on 2 CPU cores in a few minutes.

A small open_clip-architecture ViT with RANDOM weights (nothing can be
downloaded here), a generated 4-class image set, ARC trained for a few
epochs, export, classify, parity. What it proves is the machinery: adapters
learn (accuracy rises above chance from a random model's features), the fold
is exact, the ONNX bundle agrees with PyTorch. It proves nothing about
accuracy on real photos with real weights.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ringfold.runtime.backends.registry import open_model
from ringfold.runtime.bundle.loader import load_bundle
from ringfold.runtime.infer.classify import iter_predictions

from .commands import parity, prediction_line
from .demo_data import make_demo_dataset
from .ownership import claim_folder, owned_directory, record_files

DEMO_MODEL = "ringfold-tiny-vit"
#: who wrote a demo folder, in its ownership record (ringfold.ownership); each part (data, run, bundle,
#: report) carries its own record, written by the command that made it
DEMO_COMMAND = "ringfold demo"


def _say(msg: str) -> None:
    print(f"\n== {msg}", flush=True)


def _generate_data(data: Path) -> list[str]:
    """The generated image set, written whole (a killed demo leaves all of it or none)."""
    with owned_directory(data, DEMO_COMMAND) as tmp:
        return make_demo_dataset(tmp, per_class=24, size=96, seed=0)


def run_demo(out: Path, epochs: int = 30, overwrite: bool = False, quiet: bool = False) -> int:
    """The whole pipeline through the library; 0 when the parity gate passes, 1 when it fails.

    ``out`` follows the rule of every folder ringfold writes: new or empty, or (``overwrite``) an
    earlier demo with nothing of the user's in it.
    """
    with claim_folder(out, DEMO_COMMAND, overwrite=overwrite) as claim:
        claim.prepare()
        record_files(out, DEMO_COMMAND, [])
        return _run_demo(out, epochs, quiet)


def _run_demo(out: Path, epochs: int, quiet: bool) -> int:
    from ringfold.exporter.export import export_run  # torch and onnx: the [export] extra the demo needs
    from ringfold.trainer.train import TrainConfig, train  # torch: the [train] extra

    data, run, bundle_dir = out / "data", out / "run", out / "bundle"
    _say(f"1/5 data: generating a 4-class image set in {data} (nothing downloaded)")
    classes = _generate_data(data)
    print(f"classes: {', '.join(classes)}; 24 train + 12 test images per class")

    _say(f"2/5 train: ARC on {DEMO_MODEL} — RANDOM WEIGHTS (a built-in small open_clip ViT config)")
    config = TrainConfig(
        model=DEMO_MODEL,
        random_init=True,
        method="arc",
        adapter={"rank": 32, "layers": "all"},
        data=str(data),
        shots=16,
        epochs=epochs,
        batch_size=16,
        lr=1e-2,
        warmup_epochs=1.0,
        augment=False,
        device="cpu",
        progress=not quiet,
    )
    record = train(config, run)
    print(record.summary(run))

    _say(f"3/5 export: fold ARC into the frozen weights, bake the class head, write the ONNX bundle {bundle_dir}")
    print(export_run(run, bundle_dir, progress=not quiet).summary())

    _say("4/5 classify: the torch-free runtime (ONNX Runtime, CPU) on a few test images")
    samples = [sorted((data / "test" / c.replace(" ", "_")).glob("*.png"))[0] for c in classes]
    bundle = load_bundle(bundle_dir)
    model = open_model(bundle, "fp32", "onnxruntime", "cpu")
    for prediction in iter_predictions(bundle, model, [str(p) for p in samples], top_k=2):
        print(prediction_line(prediction))

    _say("5/5 parity: ONNX Runtime vs PyTorch (unfolded and folded), preprocessing vs open_clip")
    result = parity(bundle_dir, provider="cpu", run=run, images=[str(data / "test")])
    with owned_directory(result.default_report_dir(), DEMO_COMMAND) as tmp:
        names = [p.relative_to(tmp) for p in result.report.write(tmp)]
    written = [result.default_report_dir() / name for name in names]
    print(result.report.to_markdown())
    print(f"report: {', '.join(str(w) for w in written)}")

    metrics = record.metrics
    print(
        f"\ndemo summary (random-weights model): test accuracy {100 * metrics['zero_shot_eval_acc']:.1f}% before "
        f"training → {100 * metrics['final_eval_acc']:.1f}% after ARC (chance {100 * metrics['chance_acc']:.0f}%); "
        f"parity {'PASSED' if result.passed else 'FAILED'}. "
        f"Outputs in {out}/ (run/curves.png, bundle/, bundle.parity/)."
    )
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(run_demo(Path("ringfold-demo")))
