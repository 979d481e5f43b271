"""The README.md beside each Triton model ringfold writes: what the model expects and where it came from.

Triton serves tensors, not images: the model takes the bundle's normalised NCHW float input, so a
client must reproduce ``preprocess.json`` exactly; this page says how, in numbers, next to the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ringfold.runtime.bundle.loader import Bundle
from ringfold.runtime.bundle.sections.raw_input import RAW_INPUT_NAME, client_recipe

from .triton_config import TritonModelConfig


def _preprocessing(bundle: Bundle) -> str:
    p = bundle.preprocess
    h, w = p.size
    resize = {
        "shortest": f"resize the shortest side to {min(h, w)} ({p.interpolation}), centre-crop {h}×{w}",
        "longest": f"resize keeping the aspect ratio so the image fits {h}×{w} ({p.interpolation}), "
        f"centre-pad to {h}×{w} with {p.fill_color}",
        "squash": f"resize to {h}×{w} ({p.interpolation}), ignoring the aspect ratio",
    }.get(p.resize_mode, f"resize mode {p.resize_mode} to {h}×{w}")
    mean = ", ".join(f"{m:.8g}" for m in p.mean)
    std = ", ".join(f"{s:.8g}" for s in p.std)
    return (
        f"1. decode as RGB; {resize};\n"
        f"2. scale to 0..1 (divide by 255), subtract the mean ({mean}) and divide by the std ({std}) per channel;\n"
        f"3. lay out as float32 [3, {h}, {w}] (channels first) and batch along a leading axis.\n\n"
        "This is open_clip's evaluation transform, stored in the bundle's `preprocess.json`; "
        "`ringfold.runtime` implements it without torch (`load_image` + `preprocess_image`)."
    )


def _client_example(config: TritonModelConfig) -> str:
    image, logits = config.inputs[0], config.outputs[0]
    if image.dtype != "float32" or image.name == RAW_INPUT_NAME:
        return _raw_client_example(config)
    return f"""```python
# Not run against a server where this was written (no Triton server there); tritonclient's gRPC API.
import numpy as np
import tritonclient.grpc as grpcclient
from ringfold.runtime import load_bundle, load_image, preprocess_image

bundle = load_bundle("BUNDLE")
# [1, {", ".join(map(str, image.dims))}] float32, exactly as the bundle's preprocess.json says
pixels = preprocess_image(load_image("cat.jpg"), bundle.preprocess)[None]
client = grpcclient.InferenceServerClient("localhost:8001")
request = grpcclient.InferInput("{image.name}", list(pixels.shape), "FP32")
request.set_data_from_numpy(pixels.astype(np.float32))
wanted = grpcclient.InferRequestedOutput("{logits.name}", class_count=3)  # top 3 as "score:index:label"
result = client.infer("{config.name}", [request], outputs=[wanted])
print(result.as_numpy("{logits.name}"))
```"""


def _raw_client_example(config: TritonModelConfig) -> str:
    image, logits = config.inputs[0], config.outputs[0]
    triton_type, make = ("UINT8", "raw_pixels_uint8") if image.dtype == "uint8" else ("FP32", "raw_pixels")
    return f"""```python
# Not run against a server where this was written (no Triton server there); tritonclient's gRPC API.
import tritonclient.grpc as grpcclient
from ringfold.runtime import load_bundle, load_image
from ringfold.runtime.pixels.raw import {make}

bundle = load_bundle("BUNDLE")
# [1, {", ".join(map(str, image.dims))}] {image.dtype} RGB 0..255: resize + centre crop only, no normalisation
pixels = {make}(load_image("cat.jpg"), bundle.preprocess)[None]
client = grpcclient.InferenceServerClient("localhost:8001")
request = grpcclient.InferInput("{image.name}", list(pixels.shape), "{triton_type}")
request.set_data_from_numpy(pixels)
wanted = grpcclient.InferRequestedOutput("{logits.name}", class_count=3)  # top 3 as "score:index:label"
result = client.infer("{config.name}", [request], outputs=[wanted])
print(result.as_numpy("{logits.name}"))
```"""


def _input_contract(bundle: Bundle, image) -> str:
    if image.name != RAW_INPUT_NAME:
        return "The model takes the bundle's normalised tensor, not raw pixels:\n\n" + _preprocessing(bundle)
    return (
        "The model takes raw RGB values 0..255 (open_clip's mean/std are folded into its first convolution); "
        f"the client resizes and crops exactly like this: {client_recipe(bundle.preprocess)}."
    )


def model_readme(bundle: Bundle, config: TritonModelConfig, precision: str, provenance: Mapping[str, Any]) -> str:
    """Markdown for ``DIR/<model>/README.md``."""
    image = config.inputs[0]
    dims = ", ".join(map(str, image.dims))
    weights = "random weights — predictions are not meaningful" if bundle.random_weights else bundle.manifest.weights
    if config.platform == "tensorrt_plan":
        key = provenance["engine_key"]
        source = (
            f"`{provenance['engine']}` of the bundle, a {precision} TensorRT engine built from "
            f"its {provenance['built_from']} ONNX model.\n\n"
            f"**This plan only loads on a {key['device']} GPU (compute capability {key['compute_capability']}) "
            f"with TensorRT {key['trt_version']}**: serve it with the Triton release whose TensorRT is that "
            "version, on that GPU. Anywhere else rebuild the engine there (`ringfold build-engine BUNDLE`, then "
            "`ringfold triton` again) or serve the ONNX model, which runs everywhere. Batch profile "
            f"min/opt/max {'/'.join(map(str, key['batch']))}; `max_batch_size` is at most its maximum."
        )
    else:
        source = f"`{provenance['bundle_file']}` of the bundle ({precision}), copied byte for byte (sha256 checked)."
    return f"""# {config.name}

Triton model written by `ringfold triton` from the bundle `{bundle.path.name}`
({bundle.manifest.model_name}, {weights}; {bundle.manifest.num_classes} classes).

Source: {source}

Precision variants are separate models (`<name>`, `<name>_fp16`, `<name>_int8`,
`<name>_int8_dynamic`, `<name>_raw` / `<name>_raw_uint8` for raw-pixel input, and
`<name>_trt_<precision>` for TensorRT plans): a client picks one by name.

## Input and outputs

- `{image.name}`: {image.dtype} `[batch, {dims}]`, batch 1..{config.max_batch_size}; dynamic batching joins
  requests within {config.queue_delay_us} µs.
- `{config.outputs[0].name}`: float32 `[batch, {bundle.manifest.num_classes}]`, one score per line of
  `labels.txt` (Triton's classification extension returns `score:index:label`).
- `{config.outputs[1].name}`: float32 `[batch, {", ".join(map(str, config.outputs[1].dims))}]`, the
  L2-normalised image embedding.

## Preprocessing (the client's job)

{_input_contract(bundle, image)}

## Client sketch

{_client_example(config)}

`ringfold-triton.json` records the bundle and precision this folder came from; `.ringfold-files.json`
records the sha256 of every file ringfold wrote here, and `ringfold triton --overwrite` replaces this
folder only while they are all unchanged and nothing else was added.
"""
