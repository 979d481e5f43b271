"""The raw-pixel variant: mean/std folded into the first Conv, exact to 1e-4, described by the manifest."""

from __future__ import annotations

import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from ringfold.cli import main
from ringfold.errors import RingfoldError
from ringfold.exporter.onnx_export import op_histogram
from ringfold.exporter.raw_input import QDQ_TOLERANCE, fold_normalisation
from ringfold.runtime.bundle.loader import load_bundle
from ringfold.runtime.pixels.preprocess import preprocess_image
from ringfold.runtime.pixels.raw import raw_pixels, raw_pixels_uint8, unnormalise
from tests import bundle_tamper as tamper
from tests.helpers import one_line_error

MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "cat")


def _session(model_or_path):
    source = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"])


def _logits(path, feed):
    session = _session(path)
    return session.run(["logits"], {session.get_inputs()[0].name: feed})[0]


@pytest.fixture(scope="module")
def photos():
    skdata = pytest.importorskip("skimage.data")
    return [Image.fromarray(getattr(skdata, name)()).convert("RGB") for name in PHOTOS]


def test_raw_graph_has_the_normalised_ops(raw_bundle):
    base = op_histogram(raw_bundle / "model.onnx")
    assert op_histogram(raw_bundle / "model_raw.onnx") == base  # no Sub/Div/Mul added: folded into the Conv
    assert op_histogram(raw_bundle / "model_raw_uint8.onnx") == {**base, "Cast": base.get("Cast", 0) + 1}
    graph = onnx.load(str(raw_bundle / "model_raw.onnx")).graph
    (conv,) = [n for n in graph.node if "image_raw" in n.input]
    assert conv.op_type == "Conv" and len(conv.input) == 3  # open_clip's conv1 had no bias; the fold added one
    uint8 = onnx.load(str(raw_bundle / "model_raw_uint8.onnx")).graph
    assert uint8.input[0].type.tensor_type.elem_type == TensorProto.UINT8


def test_raw_equals_normalised_on_real_photos(raw_bundle, photos):
    """skimage photos through the bundle's preprocess: max |Δlogit| ≤ 1e-4 in fp32, on every input path."""
    cfg = load_bundle(raw_bundle).preprocess
    normalised = _logits(raw_bundle / "model.onnx", np.stack([preprocess_image(p, cfg) for p in photos]))
    raw = np.stack([raw_pixels(p, cfg) for p in photos])
    assert raw.min() >= 0 and raw.max() <= 255 and raw.max() > 200  # real 0..255 pixels, not normalised ones
    assert np.abs(_logits(raw_bundle / "model_raw.onnx", raw) - normalised).max() <= 1e-4
    reconstructed = unnormalise(np.stack([preprocess_image(p, cfg) for p in photos]), cfg)  # float, not rounded
    assert np.abs(_logits(raw_bundle / "model_raw.onnx", reconstructed) - normalised).max() <= 1e-4
    as_uint8 = np.stack([raw_pixels_uint8(p, cfg) for p in photos])
    assert np.abs(_logits(raw_bundle / "model_raw_uint8.onnx", as_uint8) - normalised).max() <= 1e-4
    assert normalised.argmax(-1).tolist() == _logits(raw_bundle / "model_raw.onnx", raw).argmax(-1).tolist()


def _conv_graph(pads=(0, 0, 0, 0), bias=True, extra_consumer=False, seed=0):
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.normal(size=(4, 3, 2, 2)).astype(np.float32), "w")]
    inputs = ["image", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "b"))
        inputs.append("b")
    nodes = [helper.make_node("Conv", inputs, ["y"], kernel_shape=[2, 2], strides=[2, 2], pads=list(pads))]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if extra_consumer:
        nodes.append(helper.make_node("Relu", ["image"], ["z"]))
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 4, 4])], outputs, inits
    )
    # IR 8: what the exporter writes at opset 17, and loadable by every ONNX Runtime in the range (1.17 reads ≤ 9)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("bias", [True, False])
def test_fold_is_exact_with_and_without_a_bias(bias):
    model = _conv_graph(bias=bias)
    raw = np.random.default_rng(1).integers(0, 256, size=(1, 3, 4, 4)).astype(np.float32)
    normalised = (raw / 255 - np.array(MEAN, np.float32)[:, None, None]) / np.array(STD, np.float32)[:, None, None]
    want = _session(model).run(None, {"image": normalised.astype(np.float32)})[0]
    got = _session(fold_normalisation(model, MEAN, STD)).run(None, {"image_raw": raw})[0]
    assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max())


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [({"pads": (1, 1, 1, 1)}, "pads its input"), ({"extra_consumer": True}, "expected exactly one Conv")],
)
def test_fold_refuses_what_it_cannot_fold_exactly(kwargs, needle):
    with pytest.raises(RingfoldError, match=needle):
        fold_normalisation(_conv_graph(**kwargs), MEAN, STD, source="m.onnx")


def test_manifest_says_what_the_raw_models_expect(raw_bundle):
    manifest = json.loads((raw_bundle / "manifest.json").read_text())
    raw = manifest["raw_input"]
    h, w = load_bundle(raw_bundle).manifest.input_size
    assert raw["models"]["float32"]["input"] == {"name": "image_raw", "shape": ["batch", 3, h, w], "dtype": "float32"}
    assert raw["models"]["uint8"]["input"]["dtype"] == "uint8"
    assert (raw["value_range"], raw["channel_order"], raw["layout"]) == ([0, 255], "RGB", "NCHW")
    assert raw["client_preprocessing"]["preprocess"] == "preprocess.json"
    assert (
        "centre-crop" in raw["client_preprocessing"]["recipe"]
        and "no mean/std" in raw["client_preprocessing"]["recipe"]
    )
    assert max(raw["export_check"].values()) <= 1e-4
    assert {"model_raw.onnx", "model_raw_uint8.onnx"} <= set(manifest["files"])
    assert set(load_bundle(raw_bundle).manifest.raw_input.models) == {"float32", "uint8"}


def test_old_bundle_without_the_sections_loads(tiny_bundle, capsys, tmp_path):
    bundle = load_bundle(tiny_bundle)
    assert bundle.manifest.raw_input is None and bundle.manifest.deepstream_files == ()
    assert main(["classify", str(tiny_bundle), str(tiny_bundle / "reference/images"), "--input", "raw"]) == 2
    one_line_error(capsys, "has no raw-input variant", "--raw-input")


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (
            lambda m: m["raw_input"]["models"]["float32"]["input"].update(dtype="uint8"),
            "raw_input.models.float32.input",
        ),
        (lambda m: m["raw_input"].update(value_range=[0, 1]), "raw_input.value_range"),
        (lambda m: m["raw_input"]["models"]["float32"].update(file="elsewhere.onnx"), "does not hash"),
        (lambda m: m["raw_input"]["models"].update(float16=m["raw_input"]["models"].pop("uint8")), "unknown input"),
        (lambda m: m["deepstream"]["files"].append("model.onnx"), "is not under deepstream/"),
        (lambda m: m["raw_input"]["qdq"]["input"].update(dtype="uint8"), "raw_input.qdq.input"),
        (lambda m: m["raw_input"]["qdq"].update(source="int8-dynamic"), "raw_input.qdq.source"),
        (lambda m: m["raw_input"]["qdq"].update(file="elsewhere.onnx"), "does not hash"),
    ],
)
def test_tampered_sections_are_refused_in_one_line(raw_bundle, tmp_path, capsys, edit, needle):
    bundle = tamper.copy_bundle(raw_bundle, tmp_path / "b")
    tamper.edit_manifest(bundle, edit)
    assert main(["classify", str(bundle), str(bundle / "reference/images")]) == 2
    one_line_error(capsys, "manifest.json", needle)


def test_classify_raw_matches_normalised_without_torch(raw_bundle, demo_data, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "onnx", None)  # a Jetson has neither
    results = {}
    for choice in ("normalised", "raw", "raw-uint8"):
        assert main(["classify", str(raw_bundle), str(demo_data / "test"), "--input", choice, "--json"]) == 0
        results[choice] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for choice in ("raw", "raw-uint8"):
        for a, b in zip(results["normalised"], results[choice], strict=True):
            assert [t["label"] for t in a["top"]] == [t["label"] for t in b["top"]]
            assert np.allclose([t["probability"] for t in a["top"]], [t["probability"] for t in b["top"]], atol=1e-5)


def test_parity_gates_the_raw_models(raw_bundle, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    assert main(["parity", str(raw_bundle), "--report", str(tmp_path / "ok")]) == 0
    report = json.loads((tmp_path / "ok" / "parity.json").read_text())
    raw = [c for c in report["comparisons"] if c["subject"].startswith("raw input")]
    assert len(raw) == 3 and all(c["passed"] and c["max_abs_logit"] <= 1e-4 for c in raw)
    # a raw model whose fold is off in one channel's bias (a shift of all channels alike would vanish in the
    # LayerNorm after the patch embedding), re-hashed as an attacker would: the gate catches it
    bundle = tamper.copy_bundle(raw_bundle, tmp_path / "bad")
    model = onnx.load(str(bundle / "model_raw.onnx"))
    (conv,) = [n for n in model.graph.node if "image_raw" in n.input]
    (bias,) = [t for t in model.graph.initializer if t.name == conv.input[2]]
    shifted = numpy_helper.to_array(bias).copy()
    shifted[0] += np.float32(0.5)
    bias.CopyFrom(numpy_helper.from_array(shifted, bias.name))
    onnx.save(model, str(bundle / "model_raw.onnx"))
    tamper.rehash(bundle)
    assert main(["parity", str(bundle), "--report", str(tmp_path / "bad_report")]) == 1


@pytest.mark.parametrize(
    ("flags", "expected"),
    [([], ()), (["--raw-input"], ["float32"]), (["--raw-input", "uint8"], ["uint8"])],
)
def test_export_flag_reaches_the_exporter(monkeypatch, tmp_path, flags, expected):
    seen = {}

    def fake_export(run, out, **kwargs):
        seen.update(kwargs)
        raise RingfoldError("stop here")

    monkeypatch.setattr("ringfold.exporter.export.export_run", fake_export)
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "b"), *flags]) == 2
    assert tuple(seen["raw_input"]) == tuple(expected)


def test_raw_qdq_model_matches_the_int8_variant_on_the_reference_images(raw_bundle):
    """model_raw_int8.onnx: the int8 Q/DQ graph with Mul/Add in front, raw pixels in; its max |Δlogit| from
    the int8 variant fed the normalised pixels of the bundle's reference images stays within QDQ_TOLERANCE."""
    manifest = json.loads((raw_bundle / "manifest.json").read_text())
    qdq = manifest["raw_input"]["qdq"]
    h, w = load_bundle(raw_bundle).manifest.input_size
    assert (qdq["file"], qdq["source"]) == ("model_raw_int8.onnx", "int8")
    assert qdq["input"] == {"name": "image_raw", "shape": ["batch", 3, h, w], "dtype": "float32"}
    assert "model_raw_int8.onnx" in manifest["files"] and qdq["export_check"] <= QDQ_TOLERANCE
    raw_input = load_bundle(raw_bundle).manifest.raw_input
    assert (raw_input.qdq.file, raw_input.qdq_source) == ("model_raw_int8.onnx", "int8")
    base = op_histogram(raw_bundle / "model_int8.onnx")
    assert op_histogram(raw_bundle / "model_raw_int8.onnx") == {
        **base,
        "Mul": base.get("Mul", 0) + 1,
        "Add": base.get("Add", 0) + 1,
    }
    bundle = load_bundle(raw_bundle)
    cfg = bundle.preprocess
    images = sorted((raw_bundle / "reference/images").iterdir())
    raw = np.stack([raw_pixels(Image.open(p).convert("RGB"), cfg) for p in images]).astype(np.float32)
    normalised = np.stack([preprocess_image(Image.open(p).convert("RGB"), cfg) for p in images])
    int8 = _logits(raw_bundle / "model_int8.onnx", normalised)
    delta = np.abs(_logits(raw_bundle / "model_raw_int8.onnx", raw) - int8).max()
    assert len(images) == 8 and delta <= QDQ_TOLERANCE
    fp32_raw = _logits(raw_bundle / "model_raw.onnx", raw)
    assert np.abs(fp32_raw - int8).max() > delta  # it is the int8 graph, not the fp32 one


def test_manifest_without_the_qdq_entry_still_loads(raw_bundle, tmp_path):
    bundle = tamper.copy_bundle(raw_bundle, tmp_path / "b")
    tamper.edit_manifest(bundle, lambda m: m["raw_input"].pop("qdq"))
    raw_input = load_bundle(bundle).manifest.raw_input
    assert raw_input.qdq is None and set(raw_input.models) == {"float32", "uint8"}
