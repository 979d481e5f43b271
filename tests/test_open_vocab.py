"""Open vocabulary on the device: text.onnx vs PyTorch's adapted text tower, classify --classes, relabel.

The relabelled bundle is compared with a bundle exported from the same run with those classes
(tiny random-weights model: numerics, not accuracy).
"""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import torch

from ringfold.cli import main
from ringfold.errors import BundleError
from ringfold.runtime.backends.onnxruntime.model import open_bundle_model
from ringfold.runtime.bundle.loader import load_bundle
from ringfold.runtime.graph.onnx_subset import parse_model, serialize
from ringfold.runtime.vocab.open_vocab import with_classes
from ringfold.runtime.vocab.text_model import open_text_tower
from tests.helpers import one_line_error

NEW_CLASSES = ["red fox", "barn owl", "golden retriever"]
NEW_TEMPLATES = ["a photo of a {}.", "a blurry photo of the {}."]
PROMPTS = [
    "a photo of a cat.",
    "crème brûlée 🍮",
    "東京タワー",
    "it's a dog's life",
    "word " * 60,  # over the context length: truncated, EOT kept
    "",
]


@pytest.fixture(scope="module")
def relabelled(tiny_bundle, tmp_path_factory):
    from ringfold.runtime.vocab.relabel import relabel_bundle

    out = tmp_path_factory.mktemp("relabel") / "bundle"
    result = relabel_bundle(tiny_bundle, out, NEW_CLASSES, tuple(NEW_TEMPLATES))
    return out, result


@pytest.fixture(scope="module")
def exported_with_new_classes(tiny_run, tmp_path_factory):
    """The same run exported with the new classes and templates (reference images: synthetic)."""
    from ringfold.exporter.export import export_run

    run = tmp_path_factory.mktemp("run_new") / "run"
    shutil.copytree(tiny_run, run)
    record = json.loads((run / "run.json").read_text())
    record["classnames"], record["templates"] = NEW_CLASSES, NEW_TEMPLATES
    record["data"]["path"] = str(run / "no-data-here")
    (run / "run.json").write_text(json.dumps(record))
    out = tmp_path_factory.mktemp("bundle_new") / "bundle"
    export_run(run, out, ref_count=4, synthetic_ref=True, progress=False)
    return out


def test_text_onnx_equals_the_adapted_pytorch_text_tower(tiny_run, tiny_bundle):
    from ringfold.trainer.run import load_adapted_model

    _, loaded, _ = load_adapted_model(tiny_run)  # adapters NOT folded: the model that was trained
    tower = open_text_tower(load_bundle(tiny_bundle))
    ids = tower.tokenizer(PROMPTS)
    np.testing.assert_array_equal(ids, loaded.tokenizer(PROMPTS).numpy())
    with torch.no_grad():
        want = loaded.model.encode_text(torch.from_numpy(ids), normalize=True).numpy()
    got = tower.model.embed(ids, batch=4)  # two calls: the batch axis is dynamic
    assert got.shape == want.shape == (len(PROMPTS), 64)
    assert np.abs(got - want).max() <= 1e-4
    text = json.loads((tiny_bundle / "manifest.json").read_text())["text"]
    assert text["check"]["onnx_vs_torch_max_abs"] <= 1e-4 and text["normalised"] is True
    assert (
        text["context_length"] == 32
        and text["file"] in json.loads((tiny_bundle / "manifest.json").read_text())["files"]
    )


def test_text_onnx_graph_io_and_eot_argmax(tiny_bundle):
    import onnx

    model = onnx.load(str(tiny_bundle / "text.onnx"))
    onnx.checker.check_model(model, full_check=True)
    (inp,), (out,) = model.graph.input, model.graph.output
    shape = [d.dim_value or d.dim_param for d in inp.type.tensor_type.shape.dim]
    assert (inp.name, inp.type.tensor_type.elem_type, shape) == ("input_ids", onnx.TensorProto.INT64, ["batch", 32])
    assert (out.name, out.type.tensor_type.elem_type) == ("text_embedding", onnx.TensorProto.FLOAT)
    assert "ArgMax" in {n.op_type for n in model.graph.node}  # open_clip's EOT pooling: argmax over the ids


def test_unsupported_text_towers_are_skipped_with_a_reason(tiny_run):
    from ringfold.exporter.text_export import unsupported_reason
    from ringfold.trainer.run import load_adapted_model

    _, loaded, _ = load_adapted_model(tiny_run)
    assert unsupported_reason(loaded.model, loaded.tokenizer) is None
    assert "tokenizer" in unsupported_reason(loaded.model, object())
    assert "only open_clip.CLIP" in unsupported_reason(torch.nn.Linear(2, 2), loaded.tokenizer)


def test_a_text_tower_off_its_tolerance_is_left_out_with_a_note(tiny_run, tmp_path, monkeypatch):
    from ringfold.exporter import text_export
    from ringfold.exporter.export import export_run

    monkeypatch.setattr(text_export, "TEXT_TOLERANCE", -1.0)  # every text.onnx now "differs"
    result = export_run(tiny_run, tmp_path / "b", ref_count=2, progress=False)
    assert (
        "text" not in result.manifest
        and "differs from the PyTorch text tower" in result.manifest["export"]["text_skipped"]
    )
    assert not (tmp_path / "b" / "text.onnx").exists() and load_bundle(tmp_path / "b").manifest.text is None


def test_device_class_embeddings_equal_the_exporters(tiny_run, tiny_bundle):
    from ringfold.trainer.run import load_adapted_model
    from ringfold.trainer.text import class_embeddings

    _, loaded, _ = load_adapted_model(tiny_run)
    with torch.no_grad():
        want = class_embeddings(loaded.model, loaded.tokenizer, NEW_CLASSES, NEW_TEMPLATES).numpy()
    got = open_text_tower(load_bundle(tiny_bundle)).class_embeddings(NEW_CLASSES, NEW_TEMPLATES)
    assert np.abs(got - want).max() <= 1e-4
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_relabelled_bundle_equals_a_bundle_exported_with_those_classes(relabelled, exported_with_new_classes):
    out, result = relabelled
    new, exported = load_bundle(out), load_bundle(exported_with_new_classes)
    assert new.labels == exported.labels == NEW_CLASSES
    assert new.manifest.num_classes == 3 and new.manifest.text.templates == tuple(NEW_TEMPLATES)
    pixels = np.concatenate([new.reference().pixel_values, exported.reference().pixel_values])
    got = open_bundle_model(new).run(pixels)
    want = open_bundle_model(exported).run(pixels)
    assert got["logits"].shape == (len(pixels), 3)
    assert np.abs(got["logits"] - want["logits"]).max() <= 1e-4
    assert np.array_equal(got["logits"].argmax(1), want["logits"].argmax(1))
    assert result.max_abs_logit <= 1e-4 and result.variants == ["fp32"]


def test_relabelled_bundle_passes_parity_and_onnx_checker(relabelled, tmp_path, capsys):
    import onnx

    out, _ = relabelled
    assert main(["parity", str(out), "--report", str(tmp_path / "parity")]) == 0
    model = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    dims = [d.dim_value or d.dim_param for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert model.graph.output[0].name == "logits" and dims == ["batch", 3]
    manifest = json.loads((out / "manifest.json").read_text())
    assert "relabel" in manifest and "base_model" not in manifest
    assert manifest["onnx"]["outputs"][0]["shape"] == ["batch", 3]


def test_protobuf_subset_round_trip_keeps_every_field(tiny_bundle):
    import onnx

    data = (tiny_bundle / "model.onnx").read_bytes()
    again = serialize(parse_model(data))
    assert onnx.load_from_string(again) == onnx.load_from_string(data)


def test_classify_with_classes_equals_the_relabelled_bundle(tiny_bundle, relabelled, demo_data, capsys):
    out, _ = relabelled
    images = str(demo_data / "test")
    bundle = load_bundle(tiny_bundle)
    view, model = with_classes(bundle, open_bundle_model(bundle), NEW_CLASSES, NEW_TEMPLATES)
    relabel_model = open_bundle_model(load_bundle(out))
    pixels = bundle.reference().pixel_values
    assert np.abs(model.run(pixels)["logits"] - relabel_model.run(pixels)["logits"]).max() <= 1e-4
    assert view.labels == NEW_CLASSES and bundle.labels != NEW_CLASSES  # the loaded bundle is not changed

    assert main(["classify", str(tiny_bundle), images, "--classes", ",".join(NEW_CLASSES), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows and all({t["label"] for t in r["top"]} == set(NEW_CLASSES) for r in rows)


def test_classes_file_and_template_file(tiny_bundle, demo_data, tmp_path, capsys):
    classes = tmp_path / "classes.txt"
    classes.write_text("# my classes\nred fox\n\nbarn owl, juvenile\n")
    templates = tmp_path / "templates.json"
    templates.write_text(json.dumps(NEW_TEMPLATES))
    argv = ["classify", str(tiny_bundle), str(demo_data / "test"), "--classes", str(classes)]
    assert main([*argv, "--templates", str(templates), "--top-k", "2", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {t["label"] for t in rows[0]["top"]} == {"red fox", "barn owl, juvenile"}


BAD_CLASSES = {
    "empty": ("", "no class names"),
    "blank item": ("cat,,dog", "empty class name"),
    "duplicate": ("cat,dog,Cat", "same class"),
    "spaces duplicate": ("red fox,red  fox", "same class"),
    "too long": ("cat," + "x" * 1001, "printable characters"),
    "unprintable": ("cat,do\x07g", "U+0007"),
}


@pytest.mark.parametrize("case", sorted(BAD_CLASSES))
def test_bad_class_lists_are_one_line_exit_2(case, tiny_bundle, tmp_path, capsys):
    value, needle = BAD_CLASSES[case]
    assert main(["relabel", str(tiny_bundle), "--classes", value, "--out", str(tmp_path / "new")]) == 2
    one_line_error(capsys, "--classes", needle)
    assert not (tmp_path / "new").exists()


def test_too_many_classes_and_bad_templates(tiny_bundle, demo_data, tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "new")
    monkeypatch.setenv("RINGFOLD_MAX_CLASSES", "2")
    assert main(["relabel", str(tiny_bundle), "--classes", "a,b,c", "--out", out]) == 2
    one_line_error(capsys, "over the 2 cap", "RINGFOLD_MAX_CLASSES")
    monkeypatch.delenv("RINGFOLD_MAX_CLASSES")
    for templates, needle in [("no braces here", "holds no '{}'"), ("{} and {}", "exactly one '{}'")]:
        assert main(["relabel", str(tiny_bundle), "--classes", "a,b", "--templates", templates, "--out", out]) == 2
        one_line_error(capsys, "--templates", needle)
    assert main(["classify", str(tiny_bundle), str(demo_data), "--templates", "a {}"]) == 2
    one_line_error(capsys, "--templates needs --classes")
    assert not (tmp_path / "new").exists()


def test_relabel_refuses_foreign_or_same_folder(tiny_bundle, tmp_path, capsys):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"mine")
    assert main(["relabel", str(tiny_bundle), "--classes", "a,b", "--out", str(foreign), "--overwrite"]) == 2
    one_line_error(capsys, "photos", "ringfold only replaces what it wrote")
    assert (foreign / "holiday.jpg").read_bytes() == b"mine"
    for out in (tiny_bundle, tiny_bundle / "reference" / "new"):
        assert main(["relabel", str(tiny_bundle), "--classes", "a,b", "--out", str(out), "--overwrite"]) == 2
        one_line_error(capsys, "lies inside the bundle being relabelled")
    assert not (tiny_bundle / "reference" / "new").exists()


@pytest.fixture()
def bundle_without_text(tiny_bundle, tmp_path):
    """An old bundle: no text section, no text files."""
    old = tmp_path / "old"
    shutil.copytree(tiny_bundle, old)
    manifest = json.loads((old / "manifest.json").read_text())
    text = manifest.pop("text")
    for rel in (text["file"], text["vocabulary"]):
        del manifest["files"][rel]
        (old / rel).unlink()
    (old / "manifest.json").write_text(json.dumps(manifest))
    return old


def test_old_bundle_without_text_loads_and_refuses_open_vocabulary(bundle_without_text, demo_data, tmp_path, capsys):
    assert load_bundle(bundle_without_text).manifest.text is None
    assert main(["classify", str(bundle_without_text), str(demo_data / "test"), "--classes", "a,b"]) == 2
    one_line_error(capsys, "has no text tower", "re-export")
    assert main(["relabel", str(bundle_without_text), "--classes", "a,b", "--out", str(tmp_path / "n")]) == 2
    one_line_error(capsys, "has no text tower")


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda t: t.update(file="missing.onnx"), "text.file"),
        (lambda t: t.update(templates=["no placeholder"]), "text.templates[0]"),
        (lambda t: t.update(templates=[]), "text.templates"),
        (lambda t: t.update(normalised=False), "text.normalised"),
        (lambda t: t.update(context_length=True), "text.context_length"),
        (lambda t: t.update(logit_scale=-1), "text.logit_scale"),
        (lambda t: t.update(input="ids"), "text.input"),
    ],
)
def test_tampered_text_section_is_refused(tiny_bundle, tmp_path, edit, needle):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_bundle, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    edit(manifest["text"])
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        load_bundle(bad)


def test_text_tower_of_another_width_is_one_line(tiny_bundle, demo_data, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_bundle, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["text"]["embed_dim"] = 65
    (bad / "manifest.json").write_text(json.dumps(manifest))
    assert main(["classify", str(bad), str(demo_data / "test"), "--classes", "a,b"]) == 2
    one_line_error(capsys, "gives 64-d embeddings", "says 65", "re-export")


def test_tampered_vocabulary_fails_its_hash(tiny_bundle, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_bundle, bad)
    (bad / "bpe_simple_vocab_16e6.txt.gz").write_bytes(b"\x1f\x8b not the vocabulary")
    with pytest.raises(BundleError, match="sha256 differs"):
        load_bundle(bad)


def test_relabel_and_classify_need_no_torch_or_onnx(tiny_bundle, demo_data, tmp_path, monkeypatch, capsys):
    for module in ("torch", "open_clip", "onnx", "ftfy", "regex"):
        monkeypatch.setitem(sys.modules, module, None)  # `import X` now fails, as on a device
    out = tmp_path / "new"
    assert main(["relabel", str(tiny_bundle), "--classes", ",".join(NEW_CLASSES), "--out", str(out)]) == 0
    assert main(["classify", str(tiny_bundle), str(demo_data / "test"), "--classes", "cat,dog", "--top-k", "1"]) == 0
    assert load_bundle(out).labels == NEW_CLASSES
    # no --templates: the bundle's own, read from the manifest relabel verifies
    assert load_bundle(out).manifest.text.templates == load_bundle(tiny_bundle).manifest.text.templates


@pytest.mark.slow
def test_vit_b32_text_tower_and_relabel(tmp_path):
    """A ViT-B-32-sized model (random weights, random ARC adapters): text.onnx within 1e-4 of the unfolded
    PyTorch text tower, and a relabelled bundle equal to classify --classes and passing parity."""
    from ringfold.exporter.export import export_run
    from ringfold.runtime.parity.stored import bundle_parity
    from ringfold.runtime.vocab.relabel import relabel_bundle
    from ringfold.trainer.run import write_synthetic_run

    run = write_synthetic_run(tmp_path / "run", "ViT-B-32", {"method": "arc", "rank": 16, "layers": "all"}, ["a", "b"])
    result = export_run(run, tmp_path / "bundle", ref_count=4, synthetic_ref=True, progress=False)
    assert result.manifest["text"]["check"]["onnx_vs_torch_max_abs"] <= 1e-4
    assert result.manifest["text"]["context_length"] == 77
    relabel_bundle(tmp_path / "bundle", tmp_path / "new", NEW_CLASSES, tuple(NEW_TEMPLATES))
    new, old = load_bundle(tmp_path / "new"), load_bundle(tmp_path / "bundle")
    _, model = with_classes(old, open_bundle_model(old), NEW_CLASSES, NEW_TEMPLATES)
    pixels = old.reference().pixel_values
    assert np.abs(open_bundle_model(new).run(pixels)["logits"] - model.run(pixels)["logits"]).max() <= 1e-4
    assert bundle_parity(new, open_bundle_model(new, provider="cpu")).passed


def test_relabel_of_a_raw_input_bundle_rewrites_raw_heads_and_deepstream_labels(raw_bundle, tmp_path, capsys):
    """The raw models and deepstream/labels.txt follow the new head; INT8 DeepStream is left out with a note."""
    out = tmp_path / "relabelled_raw"
    assert main(["relabel", str(raw_bundle), "--classes", ",".join(NEW_CLASSES), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "calibration cache not carried over" in err
    # parity gates the raw models (both dtypes) against the reference recomputed for the new head
    assert main(["parity", str(out), "--report", str(tmp_path / "parity")]) == 0
    report = json.loads((tmp_path / "parity" / "parity.json").read_text())
    raw_rows = [c for c in report["comparisons"] if c["subject"].startswith("raw input")]
    assert {c["subject"] for c in raw_rows} == {"raw input float32", "raw input uint8"}
    assert all(c["passed"] and c["max_abs_logit"] <= 1e-4 for c in raw_rows)
    bundle = load_bundle(out)
    from ringfold.runtime.backends.onnxruntime.model import open_raw_model

    raw_logits = open_raw_model(bundle, "float32").run(np.full((2, 3, *bundle.manifest.input_size), 128.0, np.float32))
    assert raw_logits["logits"].shape == (2, len(NEW_CLASSES))
    ds = {rel.split("/", 1)[1] for rel in bundle.manifest.deepstream_files}
    assert "labels.txt" in ds and not any("int8" in name for name in ds)
    assert (out / "deepstream" / "labels.txt").read_text().strip() == ";".join(NEW_CLASSES)
    # the raw Q/DQ model's int8 head was quantised on the old classes: dropped, not copied stale
    assert bundle.manifest.raw_input.qdq is None and not (out / "model_raw_int8.onnx").exists()
    assert "classifier-threshold" in (out / "deepstream" / "config_infer_primary_fp16.txt").read_text()
