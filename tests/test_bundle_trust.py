"""A bundle is hostile input: every tampered field, escaping path, lying archive and mismatch is refused
in one line (exit 2) before any model runs; exports never lose a user's files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ringfold.cli import main
from ringfold.errors import BundleError
from ringfold.runtime.bundle.loader import load_bundle
from tests.bundle_tamper import (
    copy_bundle,
    edit_manifest,
    lying_npy,
    npy_bytes,
    read_reference,
    rehash,
    write_json_file,
    write_reference,
    write_reference_members,
)
from tests.helpers import one_line_error


def _classify(bundle, capsys, *needles) -> str:
    image = bundle / "reference" / "images" / "000.png"
    code = main(["classify", str(bundle), str(image), "--provider", "cpu"])
    err = one_line_error(capsys, *needles)
    assert code == 2, err
    return err


@pytest.fixture
def bundle(tiny_bundle, tmp_path):
    return copy_bundle(tiny_bundle, tmp_path / "bundle")


# ------------------------------------------------------------------------------------- path escapes
ESCAPES = ["../outside.onnx", "/etc/passwd", "reference/../../x", "./model.onnx", "a\\..\\b", ""]
FIELDS = {
    "variant": lambda m, v: m["variants"]["fp32"].__setitem__("file", v),
    "labels": lambda m, v: m.__setitem__("labels", v),
    "preprocess": lambda m, v: m.__setitem__("preprocess", v),
    "reference": lambda m, v: m["reference"].__setitem__("file", v),
    "base_model": lambda m, v: m.__setitem__("base_model", {"file": v, "precision": "fp32"}),
}


@pytest.mark.parametrize("field", sorted(FIELDS))
@pytest.mark.parametrize("escape", ESCAPES)
def test_every_named_path_must_stay_inside_the_bundle(bundle, capsys, field, escape):
    edit_manifest(bundle, lambda m: FIELDS[field](m, escape))
    _classify(bundle, capsys, "manifest.json", "field")


@pytest.mark.parametrize("escape", ["../x", "/abs/x", "a/./b"])
def test_files_set_must_not_name_paths_outside(bundle, capsys, escape):
    edit_manifest(bundle, lambda m: m["files"].__setitem__(escape, "0" * 64), hash_files=False)
    _classify(bundle, capsys, "manifest.json", "files")


def test_used_but_unhashed_file_is_refused(bundle, capsys):
    shutil.copy(bundle / "model.onnx", bundle / "other.onnx")
    edit_manifest(bundle, lambda m: m["variants"]["fp32"].__setitem__("file", "other.onnx"))
    _classify(bundle, capsys, "other.onnx", "does not hash")


def test_symlink_leaving_the_bundle_is_refused_even_with_matching_hash(bundle, tmp_path, capsys):
    outside = tmp_path / "elsewhere.onnx"
    shutil.copy(bundle / "model.onnx", outside)  # same bytes: the sha256 still matches
    (bundle / "model.onnx").unlink()
    (bundle / "model.onnx").symlink_to(outside)
    _classify(bundle, capsys, "model.onnx", "outside the bundle")


def test_symlinked_directory_leaving_the_bundle_is_refused(bundle, tmp_path, capsys):
    shutil.move(bundle / "reference", tmp_path / "ref_elsewhere")
    (bundle / "reference").symlink_to(tmp_path / "ref_elsewhere")
    _classify(bundle, capsys, "reference", "outside the bundle")


def test_symlink_inside_the_bundle_is_fine(bundle, capsys):
    (bundle / "model.onnx").rename(bundle / "real.onnx")
    (bundle / "model.onnx").symlink_to("real.onnx")
    rehash(bundle)
    image = bundle / "reference" / "images" / "000.png"
    assert main(["classify", str(bundle), str(image), "--provider", "cpu"]) == 0


@pytest.mark.parametrize("name", ["../../../etc/passwd", "/etc/passwd", "labels.json", "reference/images/999.png"])
def test_reference_image_names_are_confined_and_hashed(bundle, capsys, name):
    arrays = read_reference(bundle)
    arrays["images"] = np.array([name, *arrays["images"][1:]])
    write_reference(bundle, arrays)
    code = main(["parity", str(bundle), "--provider", "cpu", "--report", str(bundle.parent / "r")])
    one_line_error(capsys, "reference.npz", "image")
    assert code == 2 and not (bundle.parent / "r").exists()


# ------------------------------------------------------------------------------------ labels / sizes
@pytest.mark.parametrize("labels", [[f"c{i}" for i in range(10)], ["a", "b", "c"], []])
def test_label_count_must_equal_logit_width(bundle, capsys, labels):
    write_json_file(bundle, "labels.json", labels)
    _classify(bundle, capsys, "labels.json", "logits")


@pytest.mark.parametrize("labels", [["a", "b", "c", "d\x1b[2J"], ["a", "b", "c", "line\nbreak"], ["a", "b", "c", ""]])
def test_labels_must_be_printable(bundle, capsys, labels):
    write_json_file(bundle, "labels.json", labels)
    _classify(bundle, capsys, "labels.json", "label 3")


def test_labels_must_be_strings(bundle, capsys):
    write_json_file(bundle, "labels.json", ["a", "b", "c", 4])
    _classify(bundle, capsys, "labels.json", "list of class names")


def _preprocess(bundle) -> dict:
    return json.loads((bundle / "preprocess.json").read_text())


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"size": [32, 32]}, "differs from the model input"),
        ({"size": [100000, 100000]}, "differs from the model input"),
        ({"std": [1e-30, 0.2, 0.2]}, "std"),
        ({"std": [0.0, 0.2, 0.2]}, "std"),
        ({"mean": "x"}, "mean"),
        ({"interpolation": "nearest-ish"}, "interpolation"),
        ({"colour": 1}, "unknown keys"),
    ],
)
def test_preprocess_is_checked_against_the_model(bundle, capsys, change, needle):
    write_json_file(bundle, "preprocess.json", {**_preprocess(bundle), **change})
    _classify(bundle, capsys, "preprocess.json", needle)


def test_nan_is_not_json(bundle, capsys):
    (bundle / "preprocess.json").write_text(json.dumps(_preprocess(bundle)).replace("0.", "NaN, 0.", 1))
    rehash(bundle)
    _classify(bundle, capsys, "preprocess.json", "not valid JSON")


# ---------------------------------------------------------------------------------------- manifest types
MANIFEST_EDITS = {
    "format_version as string": (lambda m: m.__setitem__("format_version", "1"), "format_version"),
    "format_version zero": (lambda m: m.__setitem__("format_version", 0), "format_version"),
    "num_classes bool": (lambda m: m.__setitem__("num_classes", True), "num_classes"),
    "num_classes huge": (lambda m: m.__setitem__("num_classes", 10**9), "num_classes"),
    "variants as list": (lambda m: m.__setitem__("variants", ["model.onnx"]), "variants"),
    "unknown variant": (lambda m: m["variants"].__setitem__("fp64", m["variants"]["fp32"]), "fp64"),
    "no fp32": (lambda m: m["variants"].pop("fp32"), "fp32"),
    "precision mismatch": (lambda m: m["variants"]["fp32"].__setitem__("precision", "fp16"), "precision"),
    "bad optimisation": (lambda m: m["variants"]["fp32"].__setitem__("ort_optimization", "max"), "ort_optimization"),
    "files not hex": (lambda m: m["files"].__setitem__("absent.bin", "abc"), "sha256"),
    "files empty": (lambda m: m.__setitem__("files", {}), "files"),
    "random_weights string": (lambda m: m["model"].__setitem__("random_weights", "yes"), "random_weights"),
    "input rank 3": (lambda m: m["onnx"]["inputs"][0].__setitem__("shape", ["batch", 3, 64]), "shape"),
    "input side huge": (lambda m: m["onnx"]["inputs"][0].__setitem__("shape", ["batch", 3, 10**7, 64]), "shape"),
    "two inputs": (lambda m: m["onnx"]["inputs"].append(m["onnx"]["inputs"][0]), "inputs"),
    "logits width": (lambda m: m["onnx"]["outputs"][0].__setitem__("shape", ["batch", 7]), "logits"),
    "output renamed": (lambda m: m["onnx"]["outputs"][1].__setitem__("name", "features"), "outputs"),
    "reference count": (lambda m: m["reference"].__setitem__("count", -1), "count"),
    "manifest lists itself": (lambda m: m["files"].__setitem__("manifest.json", "0" * 64), "manifest"),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_EDITS))
def test_manifest_fields_are_type_and_range_checked(bundle, capsys, case):
    edit, needle = MANIFEST_EDITS[case]
    edit_manifest(bundle, edit)
    _classify(bundle, capsys, "manifest.json", needle)


def test_manifest_that_is_not_an_object(bundle, capsys):
    (bundle / "manifest.json").write_text("[1, 2]")
    _classify(bundle, capsys, "manifest.json", "JSON object")


def test_deeply_nested_manifest_is_one_line_not_a_recursion_error(bundle, capsys):
    (bundle / "manifest.json").write_text("[" * 200_000 + "]" * 200_000)  # 400 KB
    _classify(bundle, capsys, "manifest.json", "not valid JSON")


def test_oversized_manifest_is_refused_before_parsing(bundle, capsys, monkeypatch):
    monkeypatch.setenv("RINGFOLD_MAX_JSON_BYTES", "100")
    _classify(bundle, capsys, "manifest.json", "limit")


# ----------------------------------------------------------------------------------- model I/O vs manifest
@pytest.mark.parametrize(
    "edit,needle",
    [
        (lambda m: m["onnx"]["inputs"][0].__setitem__("name", "pixels"), "inputs"),
        (lambda m: m["onnx"]["inputs"][0].__setitem__("dtype", "float16"), "float16"),
        (lambda m: m["onnx"]["outputs"][1].__setitem__("shape", ["batch", 3]), "embedding"),
    ],
)
def test_graph_io_must_match_the_manifest(bundle, capsys, edit, needle):
    edit_manifest(bundle, edit)
    _classify(bundle, capsys, "model.onnx", needle)


# ------------------------------------------------------------------------------------ reference archive
def test_reference_header_lying_about_its_size_is_refused_before_allocating(bundle, capsys):
    arrays = read_reference(bundle)
    members = {f"{k}.npy": npy_bytes(v) for k, v in arrays.items()}
    members["pixel_values.npy"] = lying_npy((10**6, 3, 1024, 1024))  # 12 TB declared, 64 bytes held
    write_reference_members(bundle, members)
    code = main(["parity", str(bundle), "--provider", "cpu", "--report", str(bundle.parent / "r")])
    one_line_error(capsys, "reference.npz", "pixel_values")
    assert code == 2


@pytest.mark.parametrize(
    "change,needle",
    [
        (lambda a: a.__setitem__("logits", a["logits"][:, :3]), "logits"),
        (lambda a: a.__setitem__("pixel_values", a["pixel_values"][:, :, :32]), "pixel_values"),
        (lambda a: a.__setitem__("labels", np.full_like(a["labels"], 9)), "labels"),
        (lambda a: a["embedding"].__setitem__((0, 0), np.nan), "NaN"),
        (lambda a: a.__setitem__("extra", np.zeros(3)), "members"),
        (lambda a: a.__setitem__("images", np.array([1, 2], dtype=object)), "images"),
    ],
)
def test_reference_arrays_are_checked(bundle, capsys, change, needle):
    arrays = read_reference(bundle)
    change(arrays)
    if any(v.dtype == object for v in arrays.values()):
        np.savez(bundle / "reference" / "reference.npz", **arrays)  # np.savez pickles object arrays
        rehash(bundle)
    else:
        write_reference(bundle, arrays)
    code = main(["parity", str(bundle), "--provider", "cpu", "--report", str(bundle.parent / "r")])
    one_line_error(capsys, "reference.npz", needle)
    assert code == 2


def test_untampered_copy_still_loads_and_passes(bundle):
    b = load_bundle(bundle)
    assert b.reference().pixel_values.shape[1:] == (3, *b.manifest.input_size)
    assert len(b.labels) == b.manifest.num_classes == 4


# ------------------------------------------------------------------------------------------- bench caps
def test_bench_batch_memory_is_capped_before_allocating(bundle, capsys, monkeypatch):
    monkeypatch.setenv("RINGFOLD_MAX_BATCH_BYTES", str(1 << 20))
    code = main(["bench", str(bundle), "--batch-sizes", "1,4096", "--runs", "1", "--out", str(bundle.parent / "b")])
    one_line_error(capsys, "batch 4096", "RINGFOLD_MAX_BATCH_BYTES")
    assert code == 2 and not (bundle.parent / "b").exists()


def test_malformed_cap_variable_is_an_error(bundle, capsys, monkeypatch):
    monkeypatch.setenv("RINGFOLD_MAX_CLASSES", "lots")
    _classify(bundle, capsys, "RINGFOLD_MAX_CLASSES")


def test_writer_refuses_what_a_device_would_refuse(tmp_path):
    from ringfold.runtime.bundle.writer import BundleWriter

    writer = BundleWriter(tmp_path)
    writer.write_labels(["a"])
    with pytest.raises(BundleError, match="field"):
        writer.finish({"num_classes": 1, "model": {}})
    assert not (tmp_path / "manifest.json").exists()
