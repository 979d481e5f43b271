"""``ringfold evaluate BUNDLE --images DIR``: accuracy on labelled images with the runtime only (no torch)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ringfold.cli import main
from ringfold.runtime.backends.registry import open_model
from ringfold.runtime.bundle.loader import load_bundle
from ringfold.runtime.infer.classify import iter_predictions
from ringfold.runtime.infer.evaluate_metrics import accuracy, against_fp32, top_k_hits
from tests.helpers import one_line_error


@pytest.fixture(scope="module")
def evaluated(tiny_bundle, demo_data, tmp_path_factory):
    """evaluate on the demo's test images (generated shapes), its report folder and what it printed."""
    out = tmp_path_factory.mktemp("evaluate") / "report"
    argv = ["evaluate", str(tiny_bundle), "--images", str(demo_data / "test"), "--report", str(out), "--quiet"]
    assert main(argv) == 0
    return out, json.loads((out / "evaluate.json").read_text())


def test_figures_match_classify_on_the_same_images(evaluated, tiny_bundle, demo_data):
    out, doc = evaluated
    bundle = load_bundle(tiny_bundle)
    model = open_model(bundle, "fp32", "onnxruntime", "cpu")
    preds = list(iter_predictions(bundle, model, [demo_data / "test"], top_k=1))
    # folder names use '_' for the labels' spaces: each image's class from its folder
    truth = [p.path.parent.name.replace("_", " ") for p in preds]
    expected = sum(p.labels[0] == t for p, t in zip(preds, truth, strict=True)) / len(preds)
    fp32 = doc["precisions"]["fp32"]
    assert fp32["images"] == len(preds) == doc["images"]["evaluated"]
    assert fp32["top1"] == pytest.approx(expected)
    assert fp32["top_k"] == min(5, len(bundle.labels)) and fp32["top5"] == 1.0  # k ≥ classes: always a hit
    matrix = np.array(fp32["confusion"])
    assert matrix.shape == (len(bundle.labels),) * 2 and matrix.sum() == len(preds)
    assert np.trace(matrix) == round(expected * len(preds))
    assert {name: row["images"] for name, row in fp32["per_class"].items()} == {
        name: truth.count(name) for name in bundle.labels
    }
    assert fp32["agreement_with_fp32"] == 1.0 and fp32["flips"] == 0


def test_report_folder_says_what_it_measured(evaluated, demo_data):
    out, doc = evaluated
    assert sorted(p.name for p in out.iterdir()) == [
        ".ringfold-files.json", "confusion_fp32.png", "evaluate.json", "evaluate.md",
    ]  # fmt: skip
    assert doc["images"]["dir"] == str(demo_data / "test") and doc["images"]["skipped"] == []
    assert "ImageFolder" in doc["images"]["source"]
    assert "random" in doc["note"]  # the tiny bundle's weights are random
    md = (out / "evaluate.md").read_text()
    assert f"Measured on {doc['images']['evaluated']} images of 4 classes" in md and "random" in md
    assert (out / "confusion_fp32.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_default_report_beside_the_bundle_and_overwrite(tiny_bundle, demo_data, tmp_path, capsys):
    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    argv = ["evaluate", str(bundle), "--images", str(demo_data / "test"), "--quiet"]
    assert main(argv) == 0
    assert (tmp_path / "b.evaluate" / "evaluate.json").is_file()
    capsys.readouterr()
    assert main(argv) == 2  # an earlier report is not replaced without --overwrite
    assert "--overwrite" in one_line_error(capsys)
    assert main([*argv, "--overwrite"]) == 0


def test_unknown_folders_are_refused_in_one_line_before_any_work(tiny_bundle, demo_data, tmp_path, capsys):
    images = tmp_path / "imgs"
    shutil.copytree(demo_data / "test", images)
    for name in ("zebra", "purple_hexagon"):
        (images / name).mkdir()
        shutil.copy(next((images / "red_circle").iterdir()), images / name / "x.png")
    out = tmp_path / "report"
    assert main(["evaluate", str(tiny_bundle), "--images", str(images), "--report", str(out)]) == 2
    line = one_line_error(capsys)
    assert "folder(s) purple_hexagon, zebra name no class of the bundle" in line
    assert not out.exists()


def test_bad_image_stops_or_is_skipped_like_classify(tiny_bundle, demo_data, tmp_path, capsys):
    images = tmp_path / "imgs"
    shutil.copytree(demo_data / "test", images)
    (images / "red_circle" / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "report"
    assert main(["evaluate", str(tiny_bundle), "--images", str(images), "--report", str(out), "--quiet"]) == 2
    assert "broken.png" in one_line_error(capsys) and not out.exists()
    argv = ["evaluate", str(tiny_bundle), "--images", str(images), "--report", str(out), "--quiet", "--skip-bad"]
    assert main(argv) == 2  # written, but the unreadable image is not hidden
    doc = json.loads((out / "evaluate.json").read_text())
    assert [Path(s["path"]).name for s in doc["images"]["skipped"]] == ["broken.png"]
    assert doc["precisions"]["fp32"]["images"] == sum(1 for _ in (demo_data / "test").rglob("*.png"))


def test_flags_of_the_other_mode_are_refused(tiny_bundle, tiny_run, demo_data, capsys):
    assert main(["evaluate", str(tiny_bundle), "--images", str(demo_data / "test"), "--split", "val"]) == 2
    assert "--split: " in one_line_error(capsys)
    assert main(["evaluate", str(tiny_run), "--images", str(demo_data / "test")]) == 2
    assert "has no manifest.json, so it is no bundle" in one_line_error(capsys)
    assert main(["evaluate", str(tiny_bundle)]) == 2
    assert "pass --images DIR" in one_line_error(capsys)
    assert main(["evaluate", str(tiny_bundle), "--images", str(demo_data / "test"), "--precision", "fp16"]) == 2
    assert "re-export with --precision fp16" in one_line_error(capsys)


def test_each_precision_is_compared_with_fp32(raw_bundle, demo_data, tmp_path):
    out = tmp_path / "r"
    argv = ["evaluate", str(raw_bundle), "--images", str(demo_data / "test"), "--report", str(out), "--quiet"]
    assert main(argv) == 0
    doc = json.loads((out / "evaluate.json").read_text())
    assert list(doc["precisions"]) == ["fp32", "int8"]
    int8 = doc["precisions"]["int8"]
    assert int8["fp32_run"] == "onnxruntime/fp32" and int8["near_tie_margin"] == pytest.approx(0.2)
    assert 0.0 <= int8["agreement_with_fp32"] <= 1.0 and int8["flips"] == len(int8["flipped"])
    assert (out / "confusion_int8.png").is_file()


def test_metrics_on_known_logits():
    logits = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.95], [1.0, 0.0, 2.0], [0.0, 0.1, 0.0]])
    labels = np.array([0, 2, 0, 1])
    row = accuracy(logits, labels, ["a", "b", "c"])
    assert row["top1"] == 0.5 and row["top5"] == 1.0 and row["top_k"] == 3
    assert row["confusion"] == [[1, 0, 1], [0, 1, 0], [0, 1, 0]]
    assert row["per_class"] == {"a": {"images": 2, "top1": 0.5}, "b": {"images": 1, "top1": 1.0},
                                "c": {"images": 1, "top1": 0.0}}  # fmt: skip
    assert top_k_hits(logits, labels, 2).tolist() == [True, True, True, True]
    other = logits.copy()
    other[1] = [0.0, 1.9, 2.0]  # flips a near-tie (fp32 margin 0.05)
    other[0] = [0.0, 3.0, 0.0]  # flips a clear one (margin 2)
    cmp = against_fp32(other, logits, 0.2, ["p0", "p1", "p2", "p3"])
    assert cmp["agreement_with_fp32"] == 0.5 and cmp["flips"] == 2 and cmp["near_tie_flips"] == 1
    assert cmp["near_ties"] == 2  # p1 (0.05) and p3 (0.1) are within 0.2 of their runner-up
    assert [f["path"] for f in cmp["flipped"] if f["near_tie"]] == ["p1"]


def test_evaluate_bundle_runs_without_torch(tiny_bundle, demo_data, tmp_path):
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['open_clip'] = None\n"
        "from ringfold.cli import main\n"
        f"rc = main(['evaluate', {str(tiny_bundle)!r}, '--images', {str(demo_data / 'test')!r}, "
        f"'--report', {str(tmp_path / 'r')!r}, '--quiet', '--json'])\n"
        "print(rc, sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'open_clip', 'torchvision')"
        " and sys.modules[m] is not None))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "0 []"
    assert json.loads((tmp_path / "r" / "evaluate.json").read_text())["precisions"]["fp32"]["images"] > 0


def test_a_variant_that_cannot_open_here_is_reported_not_hidden(raw_bundle, demo_data, tmp_path, monkeypatch, capsys):
    """An ONNX Runtime too old for a variant's opsets: "all" goes on without it and the report says why;
    the same variant asked for by name stops the command in one line."""
    from ringfold.errors import RingfoldError
    from ringfold.runtime.infer import evaluate as evaluate_mod

    real = evaluate_mod.open_model

    def open_model(bundle, precision, *args):
        if precision == "int8":
            raise RingfoldError("model_int8.onnx: this ONNX Runtime does not support opset 5 of ai.onnx.ml")
        return real(bundle, precision, *args)

    monkeypatch.setattr(evaluate_mod, "open_model", open_model)
    out = tmp_path / "r"
    argv = ["evaluate", str(raw_bundle), "--images", str(demo_data / "test"), "--report", str(out), "--quiet"]
    assert main(argv) == 0
    assert "onnxruntime/int8 not evaluated: model_int8.onnx" in capsys.readouterr().err
    doc = json.loads((out / "evaluate.json").read_text())
    assert list(doc["precisions"]) == ["fp32"] and "opset 5" in doc["not_evaluated"]["onnxruntime/int8"]
    assert "Not evaluated: onnxruntime/int8 — model_int8.onnx" in (out / "evaluate.md").read_text()
    assert main([*argv, "--overwrite", "--precision", "fp32,int8"]) == 2
    assert "opset 5" in one_line_error(capsys)


def test_progress_on_stderr_and_no_pngs_without_matplotlib(tiny_bundle, demo_data, tmp_path, monkeypatch, capsys):
    from ringfold.runtime.infer import evaluate as evaluate_mod

    monkeypatch.setattr(evaluate_mod, "BATCH", 4)  # the demo's 12 test images: a "long" folder of 3 batches
    monkeypatch.setattr(evaluate_mod, "PROGRESS_EVERY_S", 0.0)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # a device without it
    out = tmp_path / "r"
    assert main(["evaluate", str(tiny_bundle), "--images", str(demo_data / "test"), "--report", str(out)]) == 0
    captured = capsys.readouterr()
    progress = [line for line in captured.err.splitlines() if line.startswith("ringfold evaluate: ")]
    assert progress == [
        "ringfold evaluate: 4/12 images",
        "ringfold evaluate: 8/12 images",
        "ringfold evaluate: 12/12 images",
    ]
    assert "/12 images" not in captured.out  # stdout is the report, progress goes to stderr
    assert sorted(p.name for p in out.iterdir()) == [".ringfold-files.json", "evaluate.json", "evaluate.md"]
    assert "matplotlib is not installed: no PNGs" in (out / "evaluate.md").read_text()
