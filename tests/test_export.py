import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from ringfold.errors import BundleError
from ringfold.exporter.export import export_run
from ringfold.exporter.onnx_export import export_onnx, op_histogram
from ringfold.runtime.bundle import load_bundle
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

    from ringfold.runtime.images import load_image

    return hashlib.sha256(np.asarray(load_image(path)).tobytes()).hexdigest()


@pytest.mark.parametrize("layout", ["folder", "csv"])
def test_reference_images_come_from_the_split_the_run_held_out(demo_data, tmp_path, layout):
    """A flat folder or a CSV without a split column is split at random from --seed: the exporter must draw
    the same split, or the bundle's "test" reference images can be images the adapters were trained on."""
    from ringfold.runtime.bundle import REFERENCE_IMAGES_DIR
    from ringfold.trainer.data import load_splits

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
