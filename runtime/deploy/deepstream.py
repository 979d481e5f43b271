"""DeepStream files for a bundle's raw-input model: nvinfer configs, labels, INT8 cache, a deepstream-app pipeline.

``nvinfer`` computes ``y = net-scale-factor * (x - offsets)`` on 0..255 pixels; the raw-input
variant (:mod:`ringfold.runtime.bundle.sections.raw_input`) already has open_clip's mean/std folded into its first
convolution, so every config here says ``net-scale-factor=1`` and ``offsets=0;0;0``.

Written at export into ``BUNDLE/deepstream/`` (hashed by the manifest, ``onnx-file`` relative
to the folder) and by ``ringfold deepstream BUNDLE --out DIR`` on a runtime-only install
(``onnx-file`` absolute, the bundle's INT8 cache copied). Nothing here was run on DeepStream
or TensorRT on the machine that wrote it; the keys and values are tested against NVIDIA's
documented Gst-nvinfer and deepstream-app properties (tests/test_deepstream.py).

Choices, per precision P in fp32, fp16 and (when the bundle has int8) int8:
``config_infer_primary_P.txt`` (process-mode 1, whole frame, gie-unique-id 1) and
``config_infer_secondary_P.txt`` (process-mode 2, on objects of gie 1, gie-unique-id 2).
nvinfer serialises the engine it builds beside the ONNX as
``<onnx-file>_b<batch>_gpu<id>_<fp32|fp16|int8>.engine``; ``model-engine-file`` names exactly that
file, so the second start loads it instead of rebuilding.

INT8 by TensorRT version (:mod:`ringfold.runtime.backends.tensorrt.versions`): with a Q/DQ raw-input
model (``DeepStreamTarget.int8_onnx_file``) the int8 configs name it and its engine — nvinfer builds
that engine on the device from the Q/DQ model, with no calibration cache, on every version. Without
one, nvinfer calibrates the fp32 raw model from ``int8-calib-file``, which only TensorRT up to 10.x
reads: for TensorRT 11 (``--trt-version 11.x`` or installed) the cache is not written and neither
are the int8 configs (:func:`int8_note` says why).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ringfold.atomic import write_text
from ringfold.errors import BundleError, RingfoldError
from ringfold.ownership import check_apart, check_target, owned_directory
from ringfold.runtime.backends.tensorrt.calibration import calibration_header, read_calibration_cache, with_header
from ringfold.runtime.backends.tensorrt.versions import reads_calibration_cache
from ringfold.runtime.base.text_rules import check_text
from ringfold.runtime.bundle.loader import Bundle
from ringfold.runtime.bundle.sections.deepstream import CALIBRATION, FOLDER

LABELS = "labels.txt"
APP_CONFIG = "deepstream_app_config.txt"
MARKER = "ringfold_deepstream.json"
#: nvinfer's network-mode values (Gst-nvinfer docs: 0=FP32, 1=INT8, 2=FP16)
NETWORK_MODE = {"fp32": 0, "int8": 1, "fp16": 2}
MODES = {"primary": 1, "secondary": 2}
#: deepstream-app's sample stream on every DeepStream install
SAMPLE_URI = "file:///opt/nvidia/deepstream/deepstream/samples/streams/sample_720p.mp4"


def config_name(mode: str, precision: str) -> str:
    return f"config_infer_{mode}_{precision}.txt"


@dataclass(frozen=True)
class DeepStreamTarget:
    """What the files describe: the raw model (as the configs name it), the labels and the network size."""

    onnx_file: str  # relative to the config folder, or absolute
    labels: Sequence[str]
    size: tuple[int, int]  # (height, width)
    precisions: Sequence[str]  # among NETWORK_MODE
    calibration: str | None = None  # INT8 cache text, when int8 is offered from the fp32 raw model
    int8_onnx_file: str | None = None  # a Q/DQ raw-input model: int8 from it, no cache (any TensorRT)
    batch_size: int = 1
    gpu_id: int = 0
    title: str = "ringfold bundle"


def labels_line(labels: Sequence[str]) -> str:
    """nvinfer's classifier label file: one output layer's labels on one line, separated by semicolons.

    A ';' would split a class in two and a line break would start another output layer's line, so
    either (and any character :mod:`.text_rules` refuses) is refused, naming the class."""
    fix = "rename the class (ringfold relabel / re-train) before writing DeepStream files"
    for label in labels:
        if ";" in label:
            raise RingfoldError(f"class name {label[:40]!r} holds ';', nvinfer's label separator; {fix}")
        check_text(label, "class name", f"nvinfer's label file cannot carry it; {fix}")
    return ";".join(labels) + "\n"


def engine_file(onnx_file: str, batch_size: int, gpu_id: int, precision: str) -> str:
    """The engine name nvinfer writes beside ``onnx_file`` (and reads back through model-engine-file)."""
    return f"{onnx_file}_b{batch_size}_gpu{gpu_id}_{precision}.engine"


def infer_config(target: DeepStreamTarget, mode: str, precision: str) -> dict[str, dict[str, str]]:
    """One nvinfer config as {group: {key: value}}, every value a string as it goes into the file."""
    h, w = target.size
    qdq = precision == "int8" and target.int8_onnx_file is not None
    onnx = target.int8_onnx_file if qdq else target.onnx_file
    prop = {
        "gpu-id": str(target.gpu_id),
        "onnx-file": onnx,
        "model-engine-file": engine_file(onnx, target.batch_size, target.gpu_id, precision),
        "labelfile-path": LABELS,
        "batch-size": str(target.batch_size),
        "network-mode": str(NETWORK_MODE[precision]),
        "network-type": "1",
        "process-mode": str(MODES[mode]),
        "gie-unique-id": str(MODES[mode]),
        "infer-dims": f"3;{h};{w}",
        "network-input-order": "0",
        "net-scale-factor": "1",
        "offsets": "0;0;0",
        "model-color-format": "0",
        "output-blob-names": "logits",
        "classifier-threshold": "0",
        "maintain-aspect-ratio": "0",
        "scaling-filter": "1",
    }
    if mode == "primary":
        prop["interval"] = "0"
    else:
        prop["operate-on-gie-id"] = "1"
        prop["input-object-min-width"] = "16"
        prop["input-object-min-height"] = "16"
    if precision == "int8" and not qdq:  # the Q/DQ model carries its scales: no cache to read
        prop["int8-calib-file"] = CALIBRATION
    return {"property": prop}


def app_config(target: DeepStreamTarget, precision: str) -> dict[str, dict[str, str]]:
    """A minimal deepstream-app pipeline: one file source, streammux at the network size, the primary gie, fakesink."""
    h, w = target.size
    return {
        "application": {"enable-perf-measurement": "1", "perf-measurement-interval-sec": "5"},
        "source0": {"enable": "1", "type": "3", "uri": SAMPLE_URI, "num-sources": "1", "gpu-id": "0"},
        "streammux": {
            "gpu-id": str(target.gpu_id),
            "live-source": "0",
            "batch-size": str(target.batch_size),
            "batched-push-timeout": "40000",
            "width": str(w),
            "height": str(h),
            "enable-padding": "0",
        },
        "primary-gie": {
            "enable": "1",
            "gpu-id": str(target.gpu_id),
            "batch-size": str(target.batch_size),
            "gie-unique-id": "1",
            "config-file": config_name("primary", precision),
        },
        "sink0": {"enable": "1", "type": "1", "sync": "0", "gpu-id": str(target.gpu_id)},
    }


def ini_value(value: str, key: str) -> str:
    """``value`` when a GLib key file carries it unchanged as the value of ``key``; else a one-line error.

    A line break would end the value and start keys of its own; GLib reads a backslash as an escape
    (``\\n``) and drops leading spaces; a control or invisible character (:mod:`.text_rules`) has no
    place in a path or a number either. A bundle folder whose path holds one is refused, never written."""
    fix = "move or rename the folder (or value) to one without it"
    if "\\" in value:
        raise RingfoldError(
            f"{key} {value[:80]!r} holds a backslash, which nvinfer's key file reads as an escape; {fix}"
        )
    if value != value.strip():
        raise RingfoldError(f"{key} {value[:80]!r} starts or ends with a space, which a key file drops; {fix}")
    return check_text(value, key, f"it would change the nvinfer config's structure; {fix}")


def render(groups: Mapping[str, Mapping[str, str]], header: Sequence[str]) -> str:
    """GLib key-file text (what nvinfer and deepstream-app parse); every value and comment checked first."""
    lines = [f"# {check_text(h, 'config comment', 'rename the model or bundle')}" for h in header]
    for group, keys in groups.items():
        lines += ["", f"[{group}]"] + [f"{k}={ini_value(v, k)}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


def deepstream_files(target: DeepStreamTarget) -> dict[str, str]:
    """Every file of the folder: relative name → text."""
    if "int8" in target.precisions and target.calibration is None and target.int8_onnx_file is None:
        raise ValueError("int8 needs the calibration cache text or a Q/DQ raw-input model")
    files = {LABELS: labels_line(target.labels)}
    note = (
        "input: raw RGB 0..255 NCHW, normalisation folded into the model (net-scale-factor=1, offsets=0); "
        "nvinfer stretches each frame/object to the network size (not open_clip's resize + centre crop)"
    )
    for precision in target.precisions:
        for mode in MODES:
            header = [
                f"{target.title}: nvinfer classifier, {mode} mode, {precision}",
                "written by ringfold (`ringfold deepstream`); not run on DeepStream where it was written",
                note,
                "output: logits (exp(logit_scale) * cosine); the label is the argmax above classifier-threshold",
            ]
            files[config_name(mode, precision)] = render(infer_config(target, mode, precision), header)
    preferred = "fp16" if "fp16" in target.precisions else target.precisions[0]
    files[APP_CONFIG] = render(
        app_config(target, preferred),
        [f"{target.title}: minimal deepstream-app pipeline (file source, primary classifier, fakesink)"],
    )
    if target.calibration is not None:  # with a Q/DQ model too, for a TensorRT <= 10.x user's own pipelines
        files[CALIBRATION] = target.calibration
    return files


# ------------------------------------------------------------------------------------------- writing
def write_folder(out: Path, files: Mapping[str, str]) -> None:
    """Write ``files`` into an existing folder (the export's temporary bundle), atomically one by one."""
    for name, text in files.items():
        write_text(out / name, text)


#: a cache lists one line per tensor; ViT-L/14 has a few thousand, far below this
MAX_CACHE_BYTES = 16 << 20


def _read_cache(path: Path) -> str:
    """The bundle's INT8 cache as text, checked (size, UTF-8, TensorRT's line format) before it is copied."""
    if path.stat().st_size > MAX_CACHE_BYTES:
        raise BundleError(f"{path}: larger than {MAX_CACHE_BYTES:,} bytes, not a calibration cache; re-export")
    try:
        text = path.read_bytes().decode("utf-8")
        read_calibration_cache(text, str(path))
    except (UnicodeDecodeError, RingfoldError) as exc:
        raise BundleError(f"{path}: not a TensorRT text calibration cache ({str(exc)[:120]}); re-export") from None
    return text


def target_for_bundle(
    bundle: Bundle, onnx_file: str, batch_size: int = 1, gpu_id: int = 0, trt_version: str | None = None
) -> DeepStreamTarget:
    """The DeepStream target of a loaded bundle; int8 from the raw Q/DQ model when the bundle has one (any
    TensorRT), else only where the bundle carries a calibration cache the target's TensorRT reads (up to 10.x).
    The cache is copied only for TensorRT up to 10.x.

    ``trt_version``: the target's TensorRT, whose header the cache gets (None: the bundle's, 8.6.1).
    """
    bundle.raw_model("float32")  # one line when the bundle has no raw variant
    calibration = None
    cache_rel = f"{FOLDER}/{CALIBRATION}"
    if cache_rel in bundle.manifest.deepstream_files and (not trt_version or reads_calibration_cache(trt_version)):
        calibration = _read_cache(bundle.file(cache_rel))
        if trt_version:
            calibration = with_header(calibration, calibration_header(trt_version))
    qdq = bundle.manifest.raw_input.qdq
    int8_onnx = os.path.join(os.path.dirname(onnx_file), qdq.file) if qdq else None
    return DeepStreamTarget(
        onnx_file=onnx_file,
        labels=bundle.labels,
        size=bundle.manifest.input_size,
        precisions=("fp32", "fp16", "int8") if calibration or qdq else ("fp32", "fp16"),
        calibration=calibration,
        int8_onnx_file=int8_onnx,
        batch_size=batch_size,
        gpu_id=gpu_id,
        title=f"{bundle.manifest.model_name} ({bundle.manifest.weights})",
    )


def int8_note(bundle: Bundle, trt_version: str | None) -> str | None:
    """Why the folder for ``trt_version`` has no int8 configs though the bundle has a calibration cache."""
    if not trt_version or reads_calibration_cache(trt_version):
        return None
    if f"{FOLDER}/{CALIBRATION}" not in bundle.manifest.deepstream_files:
        return None
    if bundle.manifest.raw_input is not None and bundle.manifest.raw_input.qdq is not None:
        return None  # the int8 configs name the Q/DQ model
    return (
        f"no int8 configs: TensorRT {trt_version} reads no INT8 calibration cache (strongly typed only) and the "
        "bundle has no Q/DQ raw-input model for nvinfer to build an int8 engine from; use the fp16 configs"
    )


def write_for_bundle(
    bundle: Bundle,
    out: Path,
    batch_size: int = 1,
    gpu_id: int = 0,
    overwrite: bool = False,
    trt_version: str | None = None,
) -> list[Path]:
    """``ringfold deepstream``: the folder for ``bundle`` at ``out``, ``onnx-file`` absolute (torch- and onnx-free)."""
    check_apart(out, bundle.path, "bundle")
    check_target(out, overwrite)
    onnx_path = os.path.abspath(bundle.file(bundle.raw_model("float32").file))
    files = deepstream_files(target_for_bundle(bundle, onnx_path, batch_size, gpu_id, trt_version))
    with owned_directory(out, "ringfold deepstream", overwrite) as tmp:
        write_folder(tmp, files)
        write_text(tmp / MARKER, json.dumps({"bundle": str(bundle.path), "files": sorted(files)}, indent=2) + "\n")
    return [out / name for name in sorted(files)]
