"""Class names are data, never syntax: every refusal of a hostile class list or label, in one line, exit 2.

``--classes`` (relabel, classify): a mistyped path, an empty value, one class, names the tokenizer makes
identical, control/format/separator characters. Writers of files other tools parse (labels.json,
DeepStream's label file and nvinfer ini, Triton's labels and model names) refuse what would change the
file's structure. The open-vocabulary wrapper is a Backend whose every method scores the NEW classes.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from ringfold.cli import main
from ringfold.errors import BundleError, RingfoldError
from ringfold.runtime.backends.base import Backend
from ringfold.runtime.backends.onnxruntime.model import open_bundle_model
from ringfold.runtime.bundle.loader import load_bundle
from tests.bundle_tamper import copy_bundle, write_json_file
from tests.helpers import one_line_error

LONG = "word " * 40  # the tiny bundle's context length is 32 tokens: what follows this is cut off

BAD_CLASS_LISTS = {
    "mistyped path": ("./my_classes.txt", ["--classes './my_classes.txt'", "no such file"]),
    "one class": ("cat", ["one class ('cat')", "at least two"]),
    "html entity": ("R&amp;D,R&D", ["'R&amp;D' and 'R&D'", "same prompt"]),
    "truncated": (f"{LONG}cat,{LONG}dog", ["same prompt", "32 tokens"]),
    "empty to the tokenizer": ("cat,&nbsp;", ["'&nbsp;'", "empty to the tokenizer"]),
    "bidi override": ("cat,d\u202eog", ["U+202E (RIGHT-TO-LEFT OVERRIDE)"]),
    "zero width": ("cat,do\u200bg", ["U+200B (ZERO WIDTH SPACE)"]),
    "line separator": ("cat,do\u2028g", ["U+2028 (LINE SEPARATOR)"]),
    "bell": ("cat,do\x07g", ["U+0007", "control character"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CLASS_LISTS))
def test_relabel_refuses_bad_class_lists_in_one_line(case, tiny_bundle, tmp_path, monkeypatch, capsys):
    value, needles = BAD_CLASS_LISTS[case]
    monkeypatch.chdir(tmp_path)
    assert main(["relabel", str(tiny_bundle), "--classes", value, "--out", str(tmp_path / "new")]) == 2
    one_line_error(capsys, *needles)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("value, needle", [("", "no class names"), ("cat,d\u202eog", "U+202E"), ("dog", "one class")])
def test_classify_refuses_bad_class_lists_before_the_model_loads(tiny_bundle, demo_data, value, needle, capsys):
    """'' is a given (empty) value, never "use the bundle's classes"; the model is not opened for a bad list."""
    from unittest import mock

    with mock.patch("ringfold.runtime.backends.registry.open_model", side_effect=AssertionError("model opened")):
        assert main(["classify", str(tiny_bundle), str(demo_data / "test"), "--classes", value]) == 2
    one_line_error(capsys, "--classes", needle)


def test_class_file_comments_and_bad_lines(tiny_bundle, tmp_path, capsys):
    """'#' lines are comments (documented); a line separator inside a line is refused, naming the code point."""
    from ringfold.runtime.vocab.class_list import parse_classes

    path = tmp_path / "classes.txt"
    path.write_text("# comment\nred fox\n\n#barn owl\nbarn owl\n", encoding="utf-8")
    assert parse_classes(str(path)) == ["red fox", "barn owl"]
    path.write_text("red fox\nbarn\u2029owl\n", encoding="utf-8")
    assert main(["relabel", str(tiny_bundle), "--classes", str(path), "--out", str(tmp_path / "n")]) == 2
    one_line_error(capsys, "U+2029 (PARAGRAPH SEPARATOR)")
    assert not (tmp_path / "n").exists()


def test_a_list_with_slashes_is_still_a_list_and_a_path_shaped_folder_is_refused(tmp_path):
    from ringfold.runtime.vocab.class_list import parse_classes

    assert parse_classes("T-shirt/top,trouser") == ["T-shirt/top", "trouser"]
    with pytest.raises(RingfoldError, match="is not a regular file"):
        parse_classes(str(tmp_path))


def test_a_bundle_whose_labels_hold_a_line_separator_is_refused_at_load(tiny_bundle, demo_data, tmp_path, capsys):
    bad = copy_bundle(tiny_bundle, tmp_path / "bad")
    labels = json.loads((bad / "labels.json").read_text())
    labels[0] = "ca\u2028t"
    write_json_file(bad, "labels.json", labels)  # re-hashed, as an attacker would
    with pytest.raises(BundleError, match="label 0 .* holds U\\+2028"):
        load_bundle(bad)
    assert main(["classify", str(bad), str(demo_data / "test")]) == 2
    one_line_error(capsys, "labels.json", "U+2028")


def test_bundle_writer_refuses_a_label_a_device_would_refuse(tmp_path):
    from ringfold.runtime.bundle.writer import BundleWriter

    with pytest.raises(RingfoldError, match="U\\+200B"):
        BundleWriter(tmp_path).write_labels(["cat", "do\u200bg"])
    assert not (tmp_path / "labels.json").exists()


# ------------------------------------------------------------------------------------------ DeepStream
def test_deepstream_refuses_a_bundle_path_with_a_newline_before_writing(raw_bundle, tmp_path, capsys):
    bad = tmp_path / "bun\ndle"
    shutil.copytree(raw_bundle, bad)
    out = tmp_path / "ds"
    assert main(["deepstream", str(bad), "--out", str(out)]) == 2
    one_line_error(capsys, "U+000A")
    assert not out.exists()


def test_deepstream_ini_refuses_values_that_change_its_structure():
    from ringfold.runtime.deploy.deepstream import DeepStreamTarget, deepstream_files

    base = DeepStreamTarget(onnx_file="model_raw.onnx", labels=["cat", "dog"], size=(32, 32), precisions=["fp32"])
    assert "onnx-file=model_raw.onnx" in deepstream_files(base)["config_infer_primary_fp32.txt"]
    for onnx_file, needle in [
        ("/data/x\n[property]\nnetwork-mode=1/m.onnx", "U+000A"),
        ("/data/x\u2028y/m.onnx", "U+2028"),
        ("/data/x\\ny/m.onnx", "backslash"),
    ]:
        with pytest.raises(RingfoldError, match=needle.replace("+", "\\+")) as err:
            deepstream_files(dataclasses.replace(base, onnx_file=onnx_file))
        assert "onnx-file" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(RingfoldError, match="U\\+000A"):
        deepstream_files(dataclasses.replace(base, title="model\ninterval=5"))


@pytest.mark.parametrize("label, needle", [("a;b", "holds ';'"), ("a\u2028b", "U+2028"), ("a\u202eb", "U+202E")])
def test_deepstream_label_file_refuses_separators_in_a_class(label, needle):
    from ringfold.runtime.deploy.deepstream import labels_line

    with pytest.raises(RingfoldError, match=needle.replace("+", "\\+")) as err:
        labels_line(["cat", label])
    assert repr(label) in str(err.value) and "\n" not in str(err.value)


def test_relabel_of_a_deepstream_bundle_refuses_a_semicolon_before_the_text_tower(raw_bundle, tmp_path, capsys):
    from unittest import mock

    with mock.patch("ringfold.runtime.vocab.relabel.open_text_tower", side_effect=AssertionError("text tower opened")):
        assert main(["relabel", str(raw_bundle), "--classes", "cat,red;fox", "--out", str(tmp_path / "n")]) == 2
    one_line_error(capsys, "'red;fox'", "holds ';'")
    assert not (tmp_path / "n").exists()


# ---------------------------------------------------------------------------------------------- Triton
def test_triton_refuses_a_label_with_a_line_break_before_writing(tiny_bundle, tmp_path):
    from ringfold.runtime.deploy.triton_repo import plan_repository

    bundle = load_bundle(tiny_bundle)
    for bad, needle in [("b\nc", "U+000A"), ("b\u2028c", "U+2028"), ("", "empty")]:
        hostile = dataclasses.replace(bundle, labels=[*bundle.labels[:-1], bad])
        with pytest.raises(RingfoldError, match=needle.replace("+", "\\+")):
            plan_repository(hostile, "m", ["fp32"])


def test_triton_refuses_an_engine_whose_sidecar_shapes_a_nested_model_name(tiny_bundle, tmp_path, capsys):
    from ringfold.runtime.bundle.engines import EngineKey, record_engine

    bundle = copy_bundle(tiny_bundle, tmp_path / "eb")
    sha = load_bundle(bundle).model_sha256("fp32")
    for batch, payload in (((1, 8, 16), b"one"), ((1, 4, 4), b"two")):  # two engines: the long, versioned name
        key = EngineKey(sha, "10/evil.3.0", "Orin", "8.7", "fp16", batch)
        path = bundle / "engines" / key.file_name()
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(payload)
        record_engine(path, key)
    repo = tmp_path / "repo"
    assert main(["triton", str(bundle), "--out", str(repo), "--precision", "fp16"]) == 2
    one_line_error(capsys, "Triton model name", "not a folder name")
    assert not repo.exists()


def test_pbtxt_comments_refuse_control_characters():
    from ringfold.runtime.deploy.triton_config import comment_lines

    assert comment_lines(["one\ntwo"]) == ["# one", "# two"]
    with pytest.raises(RingfoldError, match="U\\+000D"):
        comment_lines(['bundle\rname: "x"'])


# ---------------------------------------------------------------------------------- open vocabulary
def test_open_vocabulary_model_is_a_backend_scoring_only_the_new_classes(tiny_bundle):
    from ringfold.runtime.vocab.open_vocab import OpenVocabularyModel, with_classes

    bundle = load_bundle(tiny_bundle)
    classes = ["red fox", "barn owl", "golden retriever", "tabby cat", "oak tree"]
    assert len(bundle.labels) != len(classes)
    inner = open_bundle_model(bundle)
    _, model = with_classes(bundle, inner, classes)
    pixels = bundle.reference().pixel_values
    single = model.run(pixels)["logits"]
    batched = model.run_batched(pixels, batch=2)["logits"]
    assert isinstance(model, Backend) and single.shape == batched.shape == (len(pixels), len(classes))
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-5)
    assert not np.allclose(batched[:, : len(bundle.labels)], inner.run(pixels)["logits"][:, : len(classes)])
    _, outputs = model.io()
    assert dict((n, s[-1]) for n, _, s in outputs)["logits"] == len(classes)
    assert "__getattr__" not in vars(OpenVocabularyModel) and not hasattr(model, "session")
    assert (model.backend, model.provider, model.max_batch) == (inner.backend, inner.provider, inner.max_batch)


def test_templates_follow_the_same_character_rule(tiny_bundle, tmp_path, capsys):
    argv = ["relabel", str(tiny_bundle), "--classes", "cat,dog", "--out", str(tmp_path / "n")]
    assert main([*argv, "--templates", "a photo of a {}\u202e."]) == 2
    one_line_error(capsys, "--templates", "U+202E (RIGHT-TO-LEFT OVERRIDE)")
    assert not (tmp_path / "n").exists()
