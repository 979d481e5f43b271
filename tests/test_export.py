import json
import re

import numpy as np
import onnxruntime as ort
import pytest
import torch

from ringfold.errors import BundleError
from ringfold.exporter.export import export_run
from ringfold.exporter.onnx_export import export_onnx, op_histogram
from ringfold.exporter.precision import PrecisionRequest
from ringfold.runtime.bundle.loader import load_bundle
from ringfold.trainer.head import build_classifier
from ringfold.trainer.models import load_clip
from ringfold.trainer.run import load_adapted_model
from ringfold.trainer.text import class_embeddings

from .conftest import TINY, train_tiny


def _ort(path, x):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {"image": x})


def test_onnx_matches_pytorch_on_same_tensors(tiny_run, tiny_bundle):
    record, loaded, _ = load_adapted_model(tiny_run)
    with torch.no_grad():
        emb = class_embeddings(loaded.model, loaded.tokenizer, record.classnames, record.templates)
        x = torch.randn(3, 3, 64, 64)  # batch 3: exported with batch 2, so this also checks the dynamic axis
        ref_logits, ref_emb = build_classifier(loaded.model, emb)(x)
    logits, embedding = _ort(tiny_bundle / "model.onnx", x.numpy())
    assert np.abs(logits - ref_logits.numpy()).max() <= 1e-4
    assert np.abs(embedding - ref_emb.numpy()).max() <= 1e-5


def test_exported_graph_has_exactly_the_base_model_ops(tiny_bundle, tmp_path):
    base = load_clip(TINY, random_init=True)
    with torch.no_grad():
        emb = class_embeddings(base.model, base.tokenizer, ["a", "b", "c", "d"], ["a photo of a {}."])
    export_onnx(build_classifier(base.model, emb), (64, 64), tmp_path / "base.onnx")
    assert op_histogram(tiny_bundle / "model.onnx") == op_histogram(tmp_path / "base.onnx")
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    assert manifest["fold"]["fully_folded"] is True
    assert manifest["onnx"]["opset"] == 17


def test_untrained_adapters_bundle_equals_open_clip_zero_shot(demo_data, tmp_path):
    import open_clip

    run = train_tiny(tmp_path / "run0", demo_data, epochs=0)
    bundle = tmp_path / "b0"
    export_run(run, bundle, ref_count=4, progress=False)
    base = load_clip(TINY, random_init=True)
    record = json.loads((run / "run.json").read_text())
    weights = open_clip.build_zero_shot_classifier(
        base.model, base.tokenizer, record["classnames"], record["templates"]
    )
    x = torch.randn(5, 3, 64, 64)
    with torch.no_grad():
        expected = base.model.logit_scale.exp() * base.model.encode_image(x, normalize=True) @ weights
    logits, _ = _ort(bundle / "model.onnx", x.numpy())
    assert np.abs(logits - expected.numpy()).max() <= 1e-4


def test_bundle_files_and_reference_set(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    manifest = bundle.manifest
    for name in ("model.onnx", "labels.json", "preprocess.json", "reference/reference.npz", "export_report.md"):
        assert name in manifest.files
    assert manifest.random_weights is True
    assert "random weights" in manifest.weights
    ref = bundle.reference()
    assert ref.pixel_values.shape == (8, 3, 64, 64) and ref.logits.shape == (8, 4)
    assert (ref.labels >= 0).all()  # picked from the run's labelled test split
    assert "random weights" in (tiny_bundle / "export_report.md").read_text()


def test_modified_or_missing_bundle_file_is_refused(tiny_bundle, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_bundle, copy)
    (copy / "labels.json").write_text('["x", "y", "z", "w"]')
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(copy)
    (copy / "labels.json").unlink()
    with pytest.raises(BundleError, match="missing"):
        load_bundle(copy)


def test_export_refuses_existing_out_without_overwrite(tiny_run, tiny_bundle):
    from ringfold.errors import RingfoldError

    with pytest.raises(RingfoldError, match="--overwrite"):
        export_run(tiny_run, tiny_bundle, progress=False)


# ------------------------------------------------------------------------ reference images: the run's own split
def _flat_copy(demo_data, root):
    """The demo set without its train/test folders: a flat ImageFolder, whose split is drawn from the seed."""
    import shutil

    for src in sorted(demo_data.glob("*/*/*.png")):
        dst = root / src.parent.name / f"{src.parent.parent.name}_{src.name}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    return root


def _as_csv(folder, csv_path):
    rows = ["path,label"] + [f"{p.relative_to(csv_path.parent)},{p.parent.name}" for p in sorted(folder.rglob("*.png"))]
    csv_path.write_text("\n".join(rows) + "\n")
    return csv_path


def _pixels(path):
    import hashlib

    from ringfold.runtime.pixels.images import load_image

    return hashlib.sha256(np.asarray(load_image(path)).tobytes()).hexdigest()


@pytest.mark.parametrize("layout", ["folder", "csv"])
def test_reference_images_come_from_the_split_the_run_held_out(demo_data, tmp_path, layout):
    """A flat folder or a CSV without a split column is split at random from --seed: the exporter must draw
    the same split, or the bundle's "test" reference images can be images the adapters were trained on."""
    from ringfold.runtime.bundle.spec import REFERENCE_IMAGES_DIR
    from ringfold.trainer.data_sources import load_splits

    data = _flat_copy(demo_data, tmp_path / "flat")
    if layout == "csv":
        data = _as_csv(data, tmp_path / "data.csv")
    seed = 7  # not the default: the split differs from the seed-0 one
    run = train_tiny(tmp_path / "run", data, epochs=0, settings={"seed": seed})
    bundle = tmp_path / "bundle"
    export_run(run, bundle, ref_count=8, progress=False)

    splits = load_splits(data, seed=seed)
    held_out = {_pixels(s.path) for s in splits.test + splits.val}
    trained_on = {_pixels(s.path) for s in splits.train}
    refs = sorted((bundle / REFERENCE_IMAGES_DIR).glob("*.png"))
    assert len(refs) == 8
    assert not {_pixels(p) for p in refs} & trained_on  # no training image among the reference images
    assert {_pixels(p) for p in refs} <= held_out
    assert (load_bundle(bundle).reference().labels >= 0).all()


# ------------------------------------------------------------------ the reference set names its data (issue 23)
SYNTHETIC = "synthetic: numerics only, no accuracy"


def _moved_run(tiny_run, root):
    """tiny_run whose training data has moved away: its record names a folder that is gone."""
    import shutil

    run = root / "moved_run"
    shutil.copytree(tiny_run, run)
    record = json.loads((run / "run.json").read_text())
    record["data"]["path"] = str(root / "data-that-moved")
    (run / "run.json").write_text(json.dumps(record))
    return run


def _no_model(monkeypatch):
    """Any model load fails the test: the refusals below must come before the long work."""
    import ringfold.exporter.export as export_mod

    def refuse(*_args, **_kwargs):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(export_mod, "load_adapted_model", refuse)


@pytest.fixture(scope="module")
def synthetic_bundle(tiny_run, tmp_path_factory):
    """A run whose data moved, exported with the explicit synthetic flag; (bundle, summary printed)."""
    import contextlib
    import io

    from ringfold.cli import main

    root = tmp_path_factory.mktemp("synthetic")
    run, out = _moved_run(tiny_run, root), root / "bundle"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["export", str(run), "--out", str(out), "--ref-count", "4", "--synthetic-ref", "--quiet"]) == 0
    return out, stdout.getvalue()


def test_moved_data_is_refused_in_one_line_before_the_model_loads(tiny_run, tmp_path, monkeypatch, capsys):
    from ringfold.cli import main

    from .helpers import one_line_error

    run, out = _moved_run(tiny_run, tmp_path), tmp_path / "bundle"
    _no_model(monkeypatch)
    assert main(["export", str(run), "--out", str(out), "--quiet"]) == 2
    one_line_error(capsys, str(tmp_path / "data-that-moved"), "is gone", "--ref-images DIR", "--synthetic-ref")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["moved_run"]


def test_renamed_classes_in_the_data_are_refused(tiny_run, demo_data, tmp_path, monkeypatch, capsys):
    """The data path still exists but holds other classes: its images would get the wrong labels."""
    import shutil

    from ringfold.cli import main

    from .helpers import one_line_error

    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    for split in ("train", "test"):
        first = sorted((data / split).iterdir())[0]
        first.rename(first.with_name("zebra"))
    run = _moved_run(tiny_run, tmp_path)
    record = json.loads((run / "run.json").read_text())
    record["data"]["path"] = str(data)
    (run / "run.json").write_text(json.dumps(record))
    _no_model(monkeypatch)
    assert main(["export", str(run), "--out", str(tmp_path / "bundle"), "--quiet"]) == 2
    one_line_error(capsys, "now holds other classes", "zebra", "--ref-images DIR")
    assert not (tmp_path / "bundle").exists()


def test_synthetic_reference_set_says_so_in_manifest_summary_and_reports(synthetic_bundle):
    bundle, summary = synthetic_bundle
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["reference"]["source"] == "synthetic" and manifest["reference"]["note"] == SYNTHETIC
    assert manifest["reference"]["labelled"] is False
    assert summary.count("\n") == 1 and f"on the reference set: 4 generated images — {SYNTHETIC}" in summary
    assert SYNTHETIC in (bundle / "export_report.md").read_text()
    info = load_bundle(bundle).manifest.reference
    assert info.synthetic and info.describe() == f"4 generated images — {SYNTHETIC}"


def test_parity_on_a_synthetic_reference_set_says_so(synthetic_bundle, tmp_path, capsys):
    from ringfold.cli import main

    bundle, _ = synthetic_bundle
    assert main(["parity", str(bundle), "--provider", "cpu", "--report", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert f"- reference set: 4 generated images — {SYNTHETIC}" in out
    passed = [line for line in out.splitlines() if line.startswith("parity gate passed")]
    assert passed and passed[0].endswith(f"reference set: {SYNTHETIC}")
    assert SYNTHETIC in (tmp_path / "r" / "parity.md").read_text()
    report = json.loads((tmp_path / "r" / "parity.json").read_text())
    assert report["reference_synthetic"] is True
    assert all(c["accuracy_backend"] is None for c in report["comparisons"])  # no accuracy on noise


def test_real_reference_sets_record_where_they_came_from(tiny_bundle, tiny_run, demo_data, tmp_path):
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    assert manifest["reference"]["source"] == "run-data" and manifest["reference"]["count"] == 8
    assert manifest["reference"]["origin"] == f"test split of {demo_data}" and "note" not in manifest["reference"]
    assert load_bundle(tiny_bundle).manifest.reference.describe() == (
        f"8 held-out images of the run's data (test split of {demo_data})"
    )
    result = export_run(
        _moved_run(tiny_run, tmp_path), tmp_path / "b", ref_images=str(demo_data / "test"), ref_count=3, progress=False
    )
    assert result.manifest["reference"]["source"] == "ref-images"
    assert result.manifest["reference"]["origin"] == str(demo_data / "test")
    assert f"on the reference set: 3 images from --ref-images ({demo_data / 'test'})" in result.summary()
    assert SYNTHETIC not in result.summary()


def test_bundle_without_a_reference_source_still_loads_and_a_bad_one_is_refused(tiny_bundle, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    for key in ("source", "origin"):
        del manifest["reference"][key]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    info = load_bundle(copy).manifest.reference
    assert info.source is None and "not recorded" in info.describe()
    for key, value, needle in [
        ("source", "imagined", "reference.source is 'imagined', not one of run-data, ref-images, synthetic"),
        ("origin", "data\u202e/gpj.exe", "reference.origin holds U+202E"),
        ("source", "synthetic", "reference.labelled is true for a synthetic reference set"),
    ]:
        bad = {**manifest, "reference": {**manifest["reference"], key: value}}
        (copy / "manifest.json").write_text(json.dumps(bad))
        with pytest.raises(BundleError, match=re.escape(needle)) as err:
            load_bundle(copy)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("case", ["missing", "empty", "fifo", "both"])
def test_bad_ref_images_are_refused_before_the_model_loads(tiny_run, tmp_path, monkeypatch, capsys, case):
    import os

    from ringfold.cli import main

    from .helpers import no_hang, one_line_error

    refs = tmp_path / "refs"
    if case != "missing":
        (refs / "cat").mkdir(parents=True)
    if case == "fifo":
        os.mkfifo(refs / "cat" / "pipe.png")
    extra = ["--synthetic-ref"] if case == "both" else []
    _no_model(monkeypatch)
    with no_hang(30):  # a FIFO that is read blocks forever: fail instead of hanging
        code = main(["export", str(tiny_run), "--out", str(tmp_path / "b"), "--ref-images", str(refs), *extra])
    assert code == 2
    needle = {
        "missing": "no such folder",
        "empty": "no images found",
        "fifo": "pipe.png: is a named pipe (FIFO), not a regular file",
        "both": "--synthetic-ref: and --ref-images exclude each other",
    }[case]
    one_line_error(capsys, needle)
    assert not (tmp_path / "b").exists()


def test_export_runs_the_fp32_model_once_and_says_where_the_time_went(tiny_run, tmp_path, monkeypatch):
    """The ONNX-vs-PyTorch figure and the fp32 variant check read one ONNX Runtime pass over the reference
    set (it used to run twice); every step's seconds land in the manifest."""

    opened = []
    real = ort.InferenceSession

    class Counting(real):
        def __init__(self, path_or_bytes, *args, **kwargs):
            opened.append(str(path_or_bytes))
            super().__init__(path_or_bytes, *args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", Counting)
    request = PrecisionRequest(("fp32",))
    result = export_run(tiny_run, tmp_path / "b", ref_count=4, progress=False, precision=request, text=False)
    assert sum(p.endswith("/model.onnx") for p in opened) == 1, opened
    checks = result.manifest["export"]["variants_vs_torch"]
    assert checks["fp32"]["max_abs_logit"] == pytest.approx(result.onnx_vs_torch_max_abs)
    steps = result.manifest["export"]["steps_s"]
    for step in ("load_model", "reference_and_fold", "onnx_export", "variants_convert", "variants_check"):
        assert steps[step] >= 0.0
    assert "hash_verify_rename" in result.steps_s
    assert sum(result.steps_s.values()) <= result.seconds + 0.5
