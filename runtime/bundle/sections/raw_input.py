"""The manifest's optional ``raw_input`` section: the raw-pixel models and the client's preprocessing.

The section says exactly what the raw models expect (name, dtype, shape, value range, RGB,
NCHW) and that resizing and cropping are the client's job, with the recipe from
``preprocess.json`` spelled out. Bundles without the section load as before; a bundle whose
section is malformed is refused in one line. The models are opened by
:func:`ringfold.runtime.backends.onnxruntime.model.open_raw_model`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ringfold.runtime.base.fields import Fields
from ringfold.runtime.pixels.preprocess import PreprocessConfig

from ..spec import SectionContext, TensorSpec

SECTION = "raw_input"
#: the raw models' input name (the normalised models take the manifest's ``onnx.inputs[0]``)
RAW_INPUT_NAME = "image_raw"
RAW_DTYPES = ("float32", "uint8")
VALUE_RANGE = [0, 255]
CHANNEL_ORDER = "RGB"
LAYOUT = "NCHW"


@dataclass(frozen=True)
class RawModel:
    file: str
    input: TensorSpec


@dataclass(frozen=True)
class RawInput:
    """The parsed ``raw_input`` section: input dtype → model."""

    models: Mapping[str, RawModel]
    #: the raw-input Q/DQ model (float32 pixels, normalisation as explicit ops in front of the int8 graph);
    #: None in bundles exported before it existed or without an int8 Q/DQ variant
    qdq: RawModel | None = None
    #: the variant it was built from ("int8-fp16" or "int8"): whose precision rules judge it
    qdq_source: str = ""


def client_recipe(cfg: PreprocessConfig) -> str:
    """In words, what the client must do to an image before the raw model (what ``preprocess.json`` encodes)."""
    h, w = cfg.size
    resample = "bilinear" if cfg.interpolation == "bilinear" else "bicubic"
    if cfg.resize_mode == "squash":
        geometry = f"resize to {w}x{h} (width x height) ignoring the aspect ratio, {resample}"
    elif cfg.resize_mode == "longest":
        geometry = (
            f"resize so the longer side fits {w}x{h} keeping the aspect ratio ({resample}), then centre-pad to "
            f"{w}x{h} with value {cfg.fill_color}"
        )
    elif h == w:
        geometry = (
            f"resize the shorter side to {h} keeping the aspect ratio ({resample}, Pillow/torchvision antialiased; "
            f"longer side truncated), then centre-crop {w}x{h} (offsets rounded as torchvision CenterCrop)"
        )
    else:
        geometry = f"resize keeping the aspect ratio to cover {w}x{h} (bicubic), then centre-crop {w}x{h}"
    return (
        f"decode to 8-bit RGB; {geometry}; lay out as NCHW; values 0..255 as they are "
        "(float32, not rounded further, or uint8 for the uint8 model): no /255, no mean/std, "
        "the model does that in its first convolution"
    )


#: the variants a raw Q/DQ model may be built from (the int8 engine's Q/DQ sources)
QDQ_SOURCES = ("int8-fp16", "int8")


def qdq_entry(cfg: PreprocessConfig, file: str, source: str, max_delta: float) -> dict:
    """The section's ``qdq`` entry: the raw-input Q/DQ model DeepStream builds its int8 engine from."""
    h, w = cfg.size
    return {
        "file": file,
        "source": source,
        "input": {"name": RAW_INPUT_NAME, "shape": ["batch", 3, h, w], "dtype": "float32"},
        "note": f"normalisation as explicit Mul/Add in front of the {source} Q/DQ graph (not folded)",
        "export_check": max_delta,
    }


def raw_input_section(cfg: PreprocessConfig, files: Mapping[str, str], source: str, preprocess_file: str) -> dict:
    """The manifest section the exporter writes for the raw models in ``files`` (input dtype → file)."""
    h, w = cfg.size
    models = {}
    for dtype, file in files.items():
        models[dtype] = {
            "file": file,
            "input": {"name": RAW_INPUT_NAME, "shape": ["batch", 3, h, w], "dtype": dtype},
            "note": "Cast to float32 is the graph's first op" if dtype == "uint8" else "float32 input as given",
        }
    return {
        "models": models,
        "source": source,
        "value_range": VALUE_RANGE,
        "channel_order": CHANNEL_ORDER,
        "layout": LAYOUT,
        "normalization": {
            "folded_into": "the patch-embedding Conv: W' = W / (255 * std_c), b' = b - sum(W * mean_c / std_c)",
            "mean": list(cfg.mean),
            "std": list(cfg.std),
        },
        "client_preprocessing": {
            "preprocess": preprocess_file,
            "recipe": client_recipe(cfg),
            "resize": {k: v for k, v in cfg.to_dict().items() if k not in ("mean", "std")},
        },
        "outputs": "as the normalised model: logits [batch, num_classes], embedding [batch, embed_dim]",
    }


def parse_raw_input(f: Fields, ctx: SectionContext) -> RawInput:
    """The ``raw_input`` section, every field the runtime relies on checked; ``ctx.member`` checks a hashed path."""
    input_size = ctx.input_size
    if f.raw("value_range") != VALUE_RANGE:
        raise f.fail(f"must be {VALUE_RANGE}", "value_range")
    f.string("channel_order", choices=(CHANNEL_ORDER,))
    f.string("layout", choices=(LAYOUT,))
    models_f = f.section("models")
    if not 1 <= len(models_f.data) <= len(RAW_DTYPES):
        raise models_f.fail(f"must name 1..{len(RAW_DTYPES)} models ({', '.join(RAW_DTYPES)})")
    models = {}
    for dtype in models_f.data:
        if dtype not in RAW_DTYPES:
            raise models_f.fail(f"has an unknown input dtype {str(dtype)[:40]!r} (known: {', '.join(RAW_DTYPES)})")
        entry = models_f.section(dtype)
        in_f = entry.section("input")
        spec = TensorSpec.parse(in_f, ctx.max_dim)
        if spec.dtype != dtype:
            raise in_f.fail(f"is {spec.dtype!r} under the model for {dtype!r}", "dtype")
        if len(spec.shape) != 4 or spec.shape[1] != 3 or tuple(spec.shape[2:]) != tuple(input_size):
            raise in_f.fail(f"must be [batch, 3, {input_size[0]}, {input_size[1]}], got {list(spec.shape)}", "shape")
        models[dtype] = RawModel(ctx.member(entry, "file"), spec)
    qdq_f = f.section("qdq", None)
    if qdq_f is None:  # bundles exported before the raw Q/DQ model, or without an int8 variant
        return RawInput(models)
    source = qdq_f.string("source", choices=QDQ_SOURCES)
    in_f = qdq_f.section("input")
    spec = TensorSpec.parse(in_f, ctx.max_dim)
    if spec.dtype != "float32" or spec.name != RAW_INPUT_NAME:
        raise in_f.fail(f"must be float32 {RAW_INPUT_NAME!r}, got {spec.dtype} {spec.name[:40]!r}")
    if len(spec.shape) != 4 or spec.shape[1] != 3 or tuple(spec.shape[2:]) != tuple(input_size):
        raise in_f.fail(f"must be [batch, 3, {input_size[0]}, {input_size[1]}], got {list(spec.shape)}", "shape")
    return RawInput(models, RawModel(ctx.member(qdq_f, "file"), spec), source)
