"""The raw-pixel input variant: open_clip's mean/std folded into the patch-embedding convolution.

DeepStream, Triton and most C++ clients hand a model RGB pixels in 0..255; the
normalised bundle model wants ``(x/255 - mean_c)/std_c``. Because the first op
of a ViT image tower is a linear convolution of the input, the normalisation
folds into it exactly:

    conv(W, (x/255 - m)/s) + b = conv(W / (255·s), x) + (b - Σ_{c,kh,kw} W·m_c/s_c)

so the raw variant has the same ops as the normalised graph (a bias input on
the Conv, which open_clip's ``conv1`` (``bias=False``) did not have, is still
a Conv). The fold is done on the exported ONNX graph rather than on the torch
module: it needs no second torch export, works on any bundle's fp32
``model.onnx``, and leaves every other node and initializer byte-identical, so
the op histograms are equal by construction and the test proves it.

Refused (one line) when the fold would not be exact: the input feeding
anything but one Conv, a Conv with padding (zero padding of raw pixels is not
zero padding of normalised ones), or a weight that is not a plain initializer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ringfold.atomic import atomic_path
from ringfold.errors import RingfoldError
from ringfold.runtime.bundle.precisions import TABLE
from ringfold.runtime.bundle.sections.raw_input import RAW_INPUT_NAME, qdq_entry, raw_input_section
from ringfold.runtime.pixels.images import load_image
from ringfold.runtime.pixels.preprocess import normalise
from ringfold.runtime.pixels.raw import raw_pixels

from .deepstream_export import write_deepstream_folder

#: file per input dtype, beside the other variants
RAW_FILES = {"float32": "model_raw.onnx", "uint8": "model_raw_uint8.onnx"}
RAW_DTYPES = tuple(RAW_FILES)
#: the raw-input Q/DQ model: the int8 Q/DQ graph with the normalisation as explicit ops in front
QDQ_RAW_FILE = "model_raw_int8.onnx"
#: max |Δlogit| the raw Q/DQ model may differ from its int8 variant on the reference images: the same int8
#: graph, fed the same normalised values up to float rounding, so only a rare quantisation step may flip
QDQ_TOLERANCE = 0.05


def _fail(path: Path | str, problem: str) -> RingfoldError:
    return RingfoldError(f"{path}: cannot fold the normalisation into the first layer: {problem}")


def fold_normalisation(
    model,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    input_dtype: str = "float32",
    source: Path | str = "model.onnx",
):
    """A copy of ``model`` (an ``onnx.ModelProto``) that takes RGB 0..255 pixels instead of normalised ones.

    ``input_dtype`` "uint8" adds one ``Cast`` to float32 in front of the Conv (the only op added).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())  # never edit the caller's graph
    graph = model.graph
    if len(graph.input) != 1:
        raise _fail(source, f"the graph has {len(graph.input)} inputs, expected 1")
    old_input = graph.input[0].name
    consumers = [n for n in graph.node if old_input in n.input]
    if len(consumers) != 1 or consumers[0].op_type != "Conv" or list(consumers[0].input[:1]) != [old_input]:
        kinds = ", ".join(n.op_type for n in consumers) or "nothing"
        raise _fail(source, f"input {old_input!r} feeds {kinds}, expected exactly one Conv")
    conv = consumers[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
    if any(attrs.get("pads", [0])) or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID"):
        raise _fail(source, "the Conv pads its input (padding raw pixels with 0 is not padding normalised ones)")
    if attrs.get("group", 1) != 1:
        raise _fail(source, "the Conv is grouped")
    inits = {t.name: t for t in graph.initializer}
    weight_name = conv.input[1]
    if weight_name not in inits or sum(weight_name in n.input for n in graph.node) != 1:
        raise _fail(source, f"weight {weight_name!r} is not an initializer used by this Conv alone")
    weight = numpy_helper.to_array(inits[weight_name]).astype(np.float64)
    if weight.ndim != 4 or weight.shape[1] != 3:
        raise _fail(source, f"weight shape {list(weight.shape)} is not [out, 3, kh, kw]")
    mean64, std64 = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    bias = np.zeros(weight.shape[0])
    bias_name = conv.input[2] if len(conv.input) > 2 and conv.input[2] else ""
    if bias_name:
        if bias_name not in inits or sum(bias_name in n.input for n in graph.node) != 1:
            raise _fail(source, f"bias {bias_name!r} is not an initializer used by this Conv alone")
        bias = numpy_helper.to_array(inits[bias_name]).astype(np.float64)
    # float64 maths, one rounding to float32 at the end
    new_weight = weight / (255.0 * std64)[None, :, None, None]
    new_bias = bias - (weight * (mean64 / std64)[None, :, None, None]).sum(axis=(1, 2, 3))
    inits[weight_name].CopyFrom(numpy_helper.from_array(new_weight.astype(np.float32), weight_name))
    if bias_name:
        inits[bias_name].CopyFrom(numpy_helper.from_array(new_bias.astype(np.float32), bias_name))
    else:
        bias_name = f"{weight_name}.raw_input_bias"
        graph.initializer.append(numpy_helper.from_array(new_bias.astype(np.float32), bias_name))
        conv.input.append(bias_name)

    raw_input = graph.input[0]
    raw_input.name = RAW_INPUT_NAME
    conv_input = RAW_INPUT_NAME
    if input_dtype == "uint8":
        raw_input.type.tensor_type.elem_type = TensorProto.UINT8
        conv_input = f"{RAW_INPUT_NAME}_as_float"
        cast = helper.make_node("Cast", [RAW_INPUT_NAME], [conv_input], to=TensorProto.FLOAT, name="raw_input_cast")
        graph.node.insert(list(graph.node).index(conv), cast)
    elif input_dtype != "float32":
        raise ValueError(f"input_dtype must be one of {RAW_DTYPES}, got {input_dtype!r}")
    conv.input[0] = conv_input
    return model


def qdq_source(variants) -> str | None:
    """The int8 Q/DQ variant TensorRT would build its int8 engine from (int8-fp16 first), or None."""
    return next((s for s in TABLE["int8"].engine_sources if s != "fp32" and s in variants), None)


def prepend_normalisation(model, mean: Sequence[float], std: Sequence[float], *, source: Path | str = "model.onnx"):
    """A copy of a Q/DQ ``model`` taking float32 RGB 0..255 pixels: ``x * 1/(255·std) + (-mean/std)`` in front.

    The ops are explicit (Mul, Add in the graph's float type, a Cast first when that is fp16): folding into
    a quantized Conv's weights would change the int8 weights and their scales.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    if len(graph.input) != 1:
        raise _fail(source, f"the graph has {len(graph.input)} inputs, expected 1")
    old = graph.input[0]
    elem = old.type.tensor_type.elem_type
    if elem not in (TensorProto.FLOAT, TensorProto.FLOAT16):
        raise _fail(source, f"input {old.name!r} is not float32 or float16")
    dtype = np.float16 if elem == TensorProto.FLOAT16 else np.float32
    mean64, std64 = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    scale = (1.0 / (255.0 * std64)).reshape(1, 3, 1, 1).astype(dtype)
    offset = (-mean64 / std64).reshape(1, 3, 1, 1).astype(dtype)
    graph.initializer.extend(
        [numpy_helper.from_array(scale, "raw_input_scale"), numpy_helper.from_array(offset, "raw_input_offset")]
    )
    raw = onnx.ValueInfoProto()
    raw.CopyFrom(old)
    raw.name = RAW_INPUT_NAME
    raw.type.tensor_type.elem_type = TensorProto.FLOAT
    nodes, x = [], RAW_INPUT_NAME
    if dtype == np.float16:
        nodes.append(helper.make_node("Cast", [x], ["raw_input_fp16"], to=TensorProto.FLOAT16, name="raw_input_cast"))
        x = "raw_input_fp16"
    nodes.append(helper.make_node("Mul", [x, "raw_input_scale"], ["raw_input_scaled"], name="raw_input_mul"))
    nodes.append(helper.make_node("Add", ["raw_input_scaled", "raw_input_offset"], [old.name], name="raw_input_add"))
    for i, node in enumerate(nodes):
        graph.node.insert(i, node)
    del graph.input[:]
    graph.input.append(raw)
    return model


def write_raw_variants(
    bundle_dir: Path, source_file: str, mean: Sequence[float], std: Sequence[float], dtypes: Sequence[str]
) -> dict[str, str]:
    """Write ``model_raw*.onnx`` beside ``source_file`` (the fp32 model), checked by onnx; dtype → file."""
    import onnx

    source = bundle_dir / source_file
    model = onnx.load(str(source))
    written = {}
    for dtype in dtypes:
        folded = fold_normalisation(model, mean, std, input_dtype=dtype, source=source)
        target = bundle_dir / RAW_FILES[dtype]
        with atomic_path(target) as tmp:
            onnx.save(folded, str(tmp))
            onnx.checker.check_model(str(tmp), full_check=True)
        written[dtype] = RAW_FILES[dtype]
    return written


def add_raw_input(
    bundle_dir: Path,
    manifest: dict,
    cfg,
    dtypes: Sequence[str],
    labels: Sequence[str],
    reference_images: Sequence[str],
    title: str,
) -> None:
    """``export --raw-input``: the raw models, their check against the fp32 model, and ``deepstream/``.

    The float32 raw model is always written (DeepStream feeds float); ``dtypes`` may add uint8.

    The check runs both models with ONNX Runtime on the reference images (the raw one on the
    resized uint8 pixels, the fp32 one on their normalisation) and records max |Δlogit|.
    """
    import onnxruntime as ort

    source = manifest["variants"]["fp32"]["file"]
    dtypes = [d for d in RAW_DTYPES if d == "float32" or d in dtypes]
    files = write_raw_variants(bundle_dir, source, cfg.mean, cfg.std, dtypes)
    section = raw_input_section(cfg, files, source, manifest.get("preprocess", "preprocess.json"))
    raw = np.stack([raw_pixels(load_image(bundle_dir / name), cfg) for name in reference_images])

    def logits(file: str, feed: np.ndarray) -> np.ndarray:
        session = ort.InferenceSession(str(bundle_dir / file), providers=["CPUExecutionProvider"])
        return session.run(["logits"], {session.get_inputs()[0].name: feed})[0]

    normalised = logits(source, normalise(raw, cfg))
    section["export_check"] = {
        dtype: float(np.abs(logits(file, raw.astype(dtype)) - normalised).max()) for dtype, file in files.items()
    }
    qdq = qdq_source(manifest["variants"])
    if qdq:
        section["qdq"] = write_raw_qdq(bundle_dir, manifest["variants"][qdq]["file"], qdq, cfg, raw)
    manifest["raw_input"] = section
    manifest["deepstream"] = write_deepstream_folder(
        bundle_dir,
        files["float32"],
        labels,
        cfg,
        reference_images,
        "int8" in manifest["variants"],
        title,
        qdq_file=QDQ_RAW_FILE if qdq else None,
    )


def _run(path: Path, feed: np.ndarray) -> np.ndarray:
    """The logits of ``path`` on ``feed`` (cast to the graph's input type), as float32, on ONNX Runtime's CPU."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    feed = feed.astype(np.float16 if inp.type == "tensor(float16)" else np.float32)
    return session.run(["logits"], {inp.name: feed})[0].astype(np.float32)


def write_raw_qdq(bundle_dir: Path, variant_file: str, source: str, cfg, raw: np.ndarray) -> dict:
    """Write ``model_raw_int8.onnx`` from the ``source`` Q/DQ variant, check it on ``raw`` (the reference
    images' raw pixels) against the variant on their normalisation, and return the section's ``qdq`` entry."""
    import onnx

    model = prepend_normalisation(onnx.load(str(bundle_dir / variant_file)), cfg.mean, cfg.std, source=variant_file)
    target = bundle_dir / QDQ_RAW_FILE
    with atomic_path(target) as tmp:
        onnx.save(model, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)
    delta = float(np.abs(_run(target, raw) - _run(bundle_dir / variant_file, normalise(raw, cfg))).max())
    if not delta <= QDQ_TOLERANCE:
        raise RingfoldError(
            f"{target}: the raw Q/DQ model differs from {variant_file} by {delta:.3g} (max |Δlogit| on the reference "
            f"images, allowed {QDQ_TOLERANCE}); re-export without --raw-input or report a bug"
        )
    return qdq_entry(cfg, QDQ_RAW_FILE, source, delta)
