"""DeepStream files: every key and value ringfold writes is one NVIDIA documents, and the files agree with the bundle.

Sources for the tables below (encoded by hand; nothing here ran DeepStream or TensorRT):
- Gst-nvinfer "Gst-nvinfer Property Group Supported Keys":
  https://docs.nvidia.com/metropolis/deepstream/dev-guide/text/DS_plugin_gst-nvinfer.html
  (markdown: https://docs.nvidia.com/deepstream/text/DS_plugin_gst-nvinfer.md), and the key names in
  gstnvinfer_property_parser.h (https://docs.nvidia.com/metropolis/deepstream/dev-guide/sdk-api/
  gstnvinfer__property__parser_8h.html). Classifier label files: one line per output layer, the
  layer's labels separated by semicolons (the same page, labelfile-path).
- deepstream-app groups: https://docs.nvidia.com/metropolis/deepstream/dev-guide/text/DS_ref_app_deepstream.html
  (Configuration Groups: application, source, streammux, primary-gie, sink).
- TensorRT calibration cache: header ``TRT-<version>-<calibrator>``, then ``tensor: <hex of the
  big-endian float32 scale>`` per line (IInt8Calibrator::writeCalibrationCache).
"""

from __future__ import annotations

import configparser
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from ringfold.cli import main
from ringfold.errors import RingfoldError
from ringfold.runtime.backends.tensorrt.calibration import read_calibration_cache
from ringfold.runtime.bundle.loader import load_bundle
from ringfold.runtime.deploy.deepstream import labels_line
from ringfold.runtime.pixels.images import load_image
from ringfold.runtime.pixels.raw import raw_pixels, raw_pixels_uint8
from tests.helpers import one_line_error


def _int(lo=None, hi=None, choices=None):
    def check(v: str) -> bool:
        if not re.fullmatch(r"-?\d+", v):
            return False
        n = int(v)
        return (choices is None or n in choices) and (lo is None or n >= lo) and (hi is None or n <= hi)

    return check


def _float(lo=None, strict=False):
    def check(v: str) -> bool:
        try:
            x = float(v)
        except ValueError:
            return False
        return math.isfinite(x) and (lo is None or (x > lo if strict else x >= lo))

    return check


def _string(v: str) -> bool:
    return bool(v) and "\n" not in v


BOOLEAN = _int(choices={0, 1})


def _floats_ge0(v: str) -> bool:
    return all(_float(0)(x) for x in v.split(";"))


def _dims(v: str) -> bool:  # infer-dims: channel;height;width
    parts = v.split(";")
    return len(parts) == 3 and all(_int(1)(p) for p in parts)


def _strings(v: str) -> bool:
    return all(_string(x) for x in v.split(";"))


def _ints(v: str) -> bool:
    return all(_int(0)(x) for x in v.split(";"))


#: Gst-nvinfer [property] keys: documented type / range (the subset of the table a classifier may use)
NVINFER_PROPERTY = {
    "gpu-id": _int(0),
    "net-scale-factor": _float(0, strict=True),
    "offsets": _floats_ge0,
    "model-color-format": _int(choices={0, 1, 2}),  # 0 RGB, 1 BGR, 2 GRAY
    "onnx-file": _string,
    "model-engine-file": _string,
    "int8-calib-file": _string,
    "labelfile-path": _string,
    "batch-size": _int(1),
    "network-mode": _int(choices={0, 1, 2}),  # 0 FP32, 1 INT8, 2 FP16
    "network-type": _int(choices={0, 1, 2, 3, 100}),  # 1 classifier
    "process-mode": _int(choices={1, 2}),  # 1 primary, 2 secondary
    "gie-unique-id": _int(1),
    "operate-on-gie-id": _int(1),
    "operate-on-class-ids": _ints,
    "infer-dims": _dims,
    "network-input-order": _int(choices={0, 1}),  # 0 NCHW, 1 NHWC
    "output-blob-names": _strings,
    "classifier-threshold": _float(0),
    "classifier-async-mode": BOOLEAN,
    "secondary-reinfer-interval": _int(0),
    "interval": _int(0),
    "maintain-aspect-ratio": BOOLEAN,
    "symmetric-padding": BOOLEAN,
    "scaling-filter": _int(0, 6),  # NvBufSurfTransform_Inter: 0 nearest, 1 bilinear, ...
    "scaling-compute-hw": _int(choices={0, 1, 2}),
    "input-object-min-width": _int(0),
    "input-object-min-height": _int(0),
    "input-object-max-width": _int(0),
    "input-object-max-height": _int(0),
    "workspace-size": _int(1),
    "output-tensor-meta": BOOLEAN,
    "enable-dla": BOOLEAN,
    "use-dla-core": _int(0),
}
#: deepstream-app groups → keys → documented type / range
DEEPSTREAM_APP = {
    "application": {"enable-perf-measurement": BOOLEAN, "perf-measurement-interval-sec": _int(1)},
    "source0": {
        "enable": BOOLEAN,
        "type": _int(choices={1, 2, 3, 4, 5}),  # 1 V4L2, 2 URI, 3 MultiURI, 4 RTSP, 5 CSI
        "uri": _string,
        "num-sources": _int(0),
        "gpu-id": _int(0),
    },
    "streammux": {
        "gpu-id": _int(0),
        "live-source": BOOLEAN,
        "batch-size": _int(1),
        "batched-push-timeout": _int(-1),
        "width": _int(1),
        "height": _int(1),
        "enable-padding": BOOLEAN,
    },
    "primary-gie": {
        "enable": BOOLEAN,
        "gpu-id": _int(0),
        "batch-size": _int(1),
        "gie-unique-id": _int(1),
        "config-file": _string,
        "model-engine-file": _string,
    },
    "sink0": {"enable": BOOLEAN, "type": _int(choices={1, 2, 3, 4, 5, 6}), "sync": BOOLEAN, "gpu-id": _int(0)},
}


def _read_keyfile(path: Path) -> dict[str, dict[str, str]]:
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",), comment_prefixes=("#",), strict=True)
    parser.optionxform = str  # keys are case-sensitive in GLib key files
    parser.read_string(path.read_text())
    return {group: dict(parser[group]) for group in parser.sections()}


def _check_against(table: dict, groups: dict[str, dict[str, str]], where: Path) -> None:
    for group, keys in groups.items():
        assert group in table, f"{where}: group [{group}] is not documented"
        for key, value in keys.items():
            assert key in table[group], f"{where}: [{group}] {key} is not a documented key"
            assert table[group][key](value), f"{where}: [{group}] {key}={value!r} is not of the documented type"


def _configs(folder: Path) -> list[Path]:
    return sorted(folder.glob("config_infer_*.txt"))


def test_bundle_folder_keys_and_values_are_documented(raw_bundle):
    folder = raw_bundle / "deepstream"
    names = {p.name for p in _configs(folder)}
    assert names == {f"config_infer_{m}_{p}.txt" for m in ("primary", "secondary") for p in ("fp32", "fp16", "int8")}
    bundle = load_bundle(raw_bundle)
    h, w = bundle.manifest.input_size
    for path in _configs(folder):
        groups = _read_keyfile(path)
        _check_against({"property": NVINFER_PROPERTY}, groups, path)
        prop = groups["property"]
        precision = path.stem.rsplit("_", 1)[1]
        assert prop["network-mode"] == {"fp32": "0", "int8": "1", "fp16": "2"}[precision]
        assert (prop["net-scale-factor"], prop["offsets"], prop["model-color-format"]) == ("1", "0;0;0", "0")
        assert (prop["network-type"], prop["output-blob-names"], prop["infer-dims"]) == ("1", "logits", f"3;{h};{w}")
        assert prop["process-mode"] == ("1" if "primary" in path.name else "2")
        model = "model_raw_int8.onnx" if precision == "int8" else "model_raw.onnx"  # int8: the Q/DQ raw model
        assert (folder / prop["onnx-file"]).resolve() == (raw_bundle / model).resolve()
        assert prop["model-engine-file"] == f"{prop['onnx-file']}_b{prop['batch-size']}_gpu0_{precision}.engine"
        assert (folder / prop["labelfile-path"]).is_file()
        assert "int8-calib-file" not in prop  # the Q/DQ model carries its scales
    app = _read_keyfile(folder / "deepstream_app_config.txt")
    _check_against(DEEPSTREAM_APP, app, folder / "deepstream_app_config.txt")
    assert (app["streammux"]["width"], app["streammux"]["height"]) == (str(w), str(h))
    assert (folder / app["primary-gie"]["config-file"]).is_file()


def test_labels_file_is_one_semicolon_line(raw_bundle):
    text = (raw_bundle / "deepstream" / "labels.txt").read_text()
    assert text == ";".join(load_bundle(raw_bundle).labels) + "\n" and text.count("\n") == 1
    with pytest.raises(RingfoldError, match="';'"):
        labels_line(["cat", "a;b"])


def test_every_deepstream_file_is_hashed_and_listed(raw_bundle):
    manifest = json.loads((raw_bundle / "manifest.json").read_text())
    on_disk = {p.relative_to(raw_bundle).as_posix() for p in (raw_bundle / "deepstream").iterdir()}
    assert on_disk == set(manifest["deepstream"]["files"]) <= set(manifest["files"])
    assert manifest["deepstream"]["calibration"]["validated"] is False


def test_calibration_cache_is_tensorrts_text_format_with_measured_scales(raw_bundle):
    text = (raw_bundle / "deepstream" / "calibration_int8.cache").read_text()
    lines = text.splitlines()
    assert re.fullmatch(r"TRT-\d{4,5}-EntropyCalibration2", lines[0])
    assert all(re.fullmatch(r"[^:\s][^:\n]*: [0-9a-f]{8}", line) for line in lines[1:])
    scales = read_calibration_cache(text)
    assert len(scales) > 50 and all(0 < s < 1e6 and math.isfinite(s) for s in scales.values())
    # the input and the logits: max |x| / 127 over the reference images, stretched as nvinfer does
    bundle = load_bundle(raw_bundle)
    raw = np.stack(
        [raw_pixels(load_image(raw_bundle / n), bundle.preprocess, "deepstream") for n in bundle.reference().images]
    )
    session = ort.InferenceSession(str(raw_bundle / "model_raw.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"image_raw": raw})[0]
    assert scales["image_raw"] == pytest.approx(np.abs(raw).max() / 127, rel=1e-6)
    assert scales["logits"] == pytest.approx(np.abs(logits).max() / 127, rel=1e-4)


def test_deepstream_command_on_a_runtime_only_install(raw_bundle, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "onnx", None)
    out = tmp_path / "ds"
    assert main(["deepstream", str(raw_bundle), "--out", str(out), "--batch-size", "4"]) == 0
    for path in _configs(out):
        prop = _read_keyfile(path)["property"]
        _check_against({"property": NVINFER_PROPERTY}, {"property": prop}, path)
        assert Path(prop["onnx-file"]).is_absolute() and Path(prop["onnx-file"]).is_file()
        assert prop["batch-size"] == "4" and "_b4_gpu0_" in prop["model-engine-file"]
    assert (out / "calibration_int8.cache").read_bytes() == (
        raw_bundle / "deepstream/calibration_int8.cache"
    ).read_bytes()
    _check_against(DEEPSTREAM_APP, _read_keyfile(out / "deepstream_app_config.txt"), out)
    capsys.readouterr()
    assert main(["deepstream", str(raw_bundle), "--out", str(out)]) == 2  # exists: never silently replaced
    one_line_error(capsys, "already exists", "--overwrite")
    assert main(["deepstream", str(raw_bundle), "--out", str(out), "--overwrite"]) == 0  # ours: replaceable
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    capsys.readouterr()
    assert main(["deepstream", str(raw_bundle), "--out", str(foreign), "--overwrite"]) == 2
    one_line_error(capsys, "mine", "ringfold did not write it")
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_deepstream_command_refuses_a_bundle_without_raw_input(tiny_bundle, tmp_path, capsys):
    assert main(["deepstream", str(tiny_bundle), "--out", str(tmp_path / "ds")]) == 2
    one_line_error(capsys, "has no raw-input variant", "--raw-input")
    assert not (tmp_path / "ds").exists()


# --------------------------------------------------------------------------------- preprocessing cost
def test_deepstream_geometry_keeps_the_whole_frame():
    """A 2:1 frame with a red left eighth: open_clip's centre crop drops it, nvinfer's stretch keeps it."""
    from PIL import Image

    from ringfold.runtime.pixels.preprocess import PreprocessConfig

    frame = np.zeros((64, 128, 3), dtype=np.uint8)
    frame[:, :16] = (255, 0, 0)
    cfg = PreprocessConfig(size=(32, 32), mean=(0.5,) * 3, std=(0.5,) * 3)
    img = Image.fromarray(frame)
    assert raw_pixels_uint8(img, cfg, "openclip")[0].max() == 0
    stretched = raw_pixels_uint8(img, cfg, "deepstream")
    assert stretched.shape == (3, 32, 32) and (stretched[0, :, :3] == 255).all() and stretched[0, :, 6:].max() == 0
    boxed = raw_pixels_uint8(img, cfg, "deepstream-letterbox")  # 32x16 centred: black bars above and below
    assert boxed[:, :8].max() == 0 and boxed[:, 24:].max() == 0 and boxed[0, 8:24, :3].min() == 255


def test_parity_compares_the_two_preprocessings(raw_bundle, demo_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)
    images = demo_data / "test"
    argv = ["parity", str(raw_bundle), "--images", str(images), "--compare-preprocess", "deepstream"]
    assert main([*argv, "--report", str(tmp_path / "r")]) == 0
    result = json.loads((tmp_path / "r" / "preprocess_compare.json").read_text())
    n = sum(1 for _ in images.rglob("*.png"))
    assert result["n"] == result["labelled"] == n
    assert 0 <= result["top1_agreement"] <= 1 and 0 <= result["accuracy_openclip"] <= 1
    assert len(result["disagreements"]) == round((1 - result["top1_agreement"]) * n)
    assert "top-1 agreement" in capsys.readouterr().out


def test_deepstream_command_refuses_a_damaged_cache(raw_bundle, tmp_path, capsys):
    from tests import bundle_tamper as tamper

    bundle = tamper.copy_bundle(raw_bundle, tmp_path / "b")
    (bundle / "deepstream" / "calibration_int8.cache").write_bytes(b"TRT-8601-EntropyCalibration2\nx: \xff\xfe\n")
    tamper.rehash(bundle)  # hashes match: the content check must hold on its own
    assert main(["deepstream", str(bundle), "--out", str(tmp_path / "ds")]) == 2
    one_line_error(capsys, "calibration_int8.cache", "not a TensorRT text calibration cache")
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize(("version", "header"), [("8.6.1", "TRT-8601"), ("8.6", "TRT-8600"), ("10.3", "TRT-100300")])
def test_cache_header_names_the_devices_tensorrt(raw_bundle, tmp_path, capsys, version, header):
    """NV_TENSORRT_VERSION: major·1000+minor·100+patch up to 8.x, major·10000+minor·100+patch from 10."""
    out = tmp_path / "ds"
    assert main(["deepstream", str(raw_bundle), "--out", str(out), "--trt-version", version]) == 0
    text = (out / "calibration_int8.cache").read_text()
    bundled = (raw_bundle / "deepstream" / "calibration_int8.cache").read_text()
    assert text.splitlines()[0] == f"{header}-EntropyCalibration2"
    assert text.splitlines()[1:] == bundled.splitlines()[1:]


def test_cache_header_note_without_tensorrt(raw_bundle, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("ringfold.commands.installed_trt_version", lambda: None)
    assert main(["deepstream", str(raw_bundle), "--out", str(tmp_path / "ds")]) == 0
    assert "pass --trt-version" in capsys.readouterr().err


@pytest.mark.parametrize(("version", "cache"), [("11.4", False), ("10.3", True)])
def test_int8_configs_name_the_qdq_raw_model_on_every_tensorrt(raw_bundle, tmp_path, capsys, version, cache):
    """TensorRT 11 reads no calibration cache: the int8 configs name model_raw_int8.onnx (nvinfer builds the
    engine from its Q/DQ scales) and no cache is written; up to 10.x the cache is still copied beside them."""
    out = tmp_path / "ds"
    assert main(["deepstream", str(raw_bundle), "--out", str(out), "--trt-version", version]) == 0
    assert "no int8 configs" not in capsys.readouterr().err
    for mode in ("primary", "secondary"):
        prop = _read_keyfile(out / f"config_infer_{mode}_int8.txt")["property"]
        assert Path(prop["onnx-file"]) == (raw_bundle / "model_raw_int8.onnx").resolve()
        assert prop["model-engine-file"] == f"{prop['onnx-file']}_b1_gpu0_int8.engine"
        assert prop["network-mode"] == "1" and "int8-calib-file" not in prop
        fp16 = _read_keyfile(out / f"config_infer_{mode}_fp16.txt")["property"]
        assert Path(fp16["onnx-file"]).name == "model_raw.onnx"
    assert (out / "calibration_int8.cache").exists() is cache


def test_bundle_without_the_qdq_raw_model_has_no_int8_configs_for_trt11(raw_bundle, tmp_path, capsys):
    """An older bundle (raw_input without ``qdq``): TensorRT 11 reads no cache, so no int8 configs, said once."""
    from tests import bundle_tamper as tamper

    bundle = tamper.copy_bundle(raw_bundle, tmp_path / "b")
    tamper.edit_manifest(bundle, lambda m: m["raw_input"].pop("qdq"))
    out = tmp_path / "ds"
    assert main(["deepstream", str(bundle), "--out", str(out), "--trt-version", "11.4"]) == 0
    assert "no int8 configs: TensorRT 11.4 reads no INT8 calibration cache" in capsys.readouterr().err
    assert not list(out.glob("*int8*")) and not (out / "calibration_int8.cache").exists()
