"""Replace the classification head baked into a bundle model (``logits = embedding @ W``), without ``onnx``.

The exporter's head is one bias-free MatMul from the ``embedding`` output to the
``logits`` output whose second input is an initializer ``W`` of shape
[embed_dim, num_classes] holding ``logit_scale · class_embeddingsᵀ`` (DESIGN §5).
Two forms are rewritten:

- **float** (fp32 variant, and fp16, whose final normalisation and head stay fp32,
  see :mod:`.precision_policy`): the initializer is replaced;
- **dynamic int8** (``onnxruntime.quantization.quantize_dynamic``): ``DynamicQuantizeLinear``
  → ``MatMulInteger`` with int8 weights, per-column scales and zero points → ``Cast`` →
  ``Mul`` by (activation scale × weight scales). The new weights are quantized the way
  quantize_dynamic quantizes them (symmetric per column: scale = max|w|/127, zero point 0,
  round half to even), so the variant equals a re-export's up to rounding ties.

The static int8 (QDQ) variant also quantizes the logits with a scale calibrated on the
old classes; it is not rewritten (:class:`HeadNotRewritable`).
"""

from __future__ import annotations

import numpy as np

from ringfold.runtime.bundle.spec import EMBEDDING, LOGITS

from .onnx_subset import FLOAT, FLOAT16, INT8, parse_model, serialize

#: nodes that may sit between the head's MatMul and the logits output without changing values' meaning
_PASS_THROUGH = ("Identity", "Cast")
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL
_FLOAT_DTYPES = {FLOAT: np.dtype("<f4"), FLOAT16: np.dtype("<f2")}


class HeadNotRewritable(Exception):
    """The graph's head is not one of the forms above; the message says what was found."""


def rewrite_head(data: bytes, weight: np.ndarray) -> bytes:
    """The model ``data`` with its head set to ``weight`` ([classes, embed_dim], float32) and the logits' class
    dimension updated in the graph output and value_info. Everything else is kept byte for byte.
    """
    from google.protobuf.message import DecodeError

    try:
        model = parse_model(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise HeadNotRewritable(f"not a readable ONNX model ({str(exc)[:80]})") from None
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    chain, name = [LOGITS], LOGITS
    node = producers.get(name)
    while node is not None and node.op_type in _PASS_THROUGH and node.input:
        name = node.input[0]
        chain.append(name)
        node = producers.get(name)
    if node is not None and node.op_type == "MatMul" and list(node.input[:1]) == [EMBEDDING]:
        _rewrite_float(graph, node, weight)
    elif node is not None and node.op_type == "Mul":
        chain += _rewrite_dynamic_int8(graph, producers, node, weight)
    else:
        found = node.op_type if node is not None else "nothing"
        raise HeadNotRewritable(f"logits come from {found}, not a MatMul(embedding, W) head ringfold can rewrite")
    for info in [*graph.output, *graph.value_info]:
        if info.name in chain and info.type.HasField("tensor_type"):
            dims = info.type.tensor_type.shape.dim
            if len(dims) == 2 and dims[1].HasField("dim_value"):
                dims[1].dim_value = weight.shape[0]
    return serialize(model)


def _initializer(graph, name: str, expected: str):
    """The one initializer ``name``, used by a single node, stored in the file (not external data)."""
    found = [t for t in graph.initializer if t.name == name]
    users = sum(name in n.input for n in graph.node)
    if len(found) != 1 or users != 1 or found[0].data_location == _EXTERNAL:
        raise HeadNotRewritable(f"the head's {expected} is not one in-file initializer used by the head alone")
    return found[0]


def _set(tensor, dims: list[int], values: np.ndarray) -> None:
    del tensor.dims[:]
    tensor.dims.extend(dims)
    del tensor.float_data[:]
    del tensor.int32_data[:]
    tensor.raw_data = np.ascontiguousarray(values).tobytes()


def _rewrite_float(graph, matmul, weight: np.ndarray) -> None:
    tensor = _initializer(graph, matmul.input[1], "weight")
    dtype = _FLOAT_DTYPES.get(tensor.data_type)
    if dtype is None or len(tensor.dims) != 2:
        raise HeadNotRewritable(f"the head's weight is type {tensor.data_type} {list(tensor.dims)}, not a float matrix")
    if tensor.dims[0] != weight.shape[1]:
        raise HeadNotRewritable(f"the head takes {tensor.dims[0]}-d embeddings, the new classes have {weight.shape[1]}")
    _set(tensor, [weight.shape[1], weight.shape[0]], weight.T.astype(dtype))


def quantize_per_column(weight_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 [D, C] and float32 [C] scales, symmetric per column like quantize_dynamic's per-channel weights."""
    absmax = np.abs(weight_t).max(axis=0).astype(np.float32)
    scale = np.where(absmax > 0, absmax / np.float32(127), np.float32(1)).astype(np.float32)
    return np.clip(np.round(weight_t / scale), -127, 127).astype(np.int8), scale


def _rewrite_dynamic_int8(graph, producers, mul, weight: np.ndarray) -> list[str]:
    """Rewrite Mul(Cast(MatMulInteger(q(embedding), Wq, zp, Wzp)), Mul(embedding scale, Wscale)); return the
    intermediate tensors whose shapes carry the class count."""
    parts = {producers[i].op_type: producers[i] for i in mul.input if i in producers}
    cast, scales = parts.get("Cast"), parts.get("Mul")
    matmul = producers.get(cast.input[0]) if cast is not None else None
    quantize = producers.get(matmul.input[0]) if matmul is not None else None
    if (
        scales is None
        or matmul is None
        or matmul.op_type != "MatMulInteger"
        or len(matmul.input) != 4
        or quantize is None
        or quantize.op_type != "DynamicQuantizeLinear"
        or list(quantize.input) != [EMBEDDING]
    ):
        raise HeadNotRewritable("logits come from a Mul that is not quantize_dynamic's MatMulInteger head")
    q = _initializer(graph, matmul.input[1], "int8 weight")
    zero = _initializer(graph, matmul.input[3], "weight zero point")
    scale_names = [i for i in scales.input if i not in producers]
    if len(scale_names) != 1:
        raise HeadNotRewritable("the head's weight scales are not one initializer")
    scale = _initializer(graph, scale_names[0], "weight scales")
    if (q.data_type, zero.data_type, scale.data_type) != (INT8, INT8, FLOAT) or len(q.dims) != 2:
        raise HeadNotRewritable("the dynamic int8 head is not int8 weights with int8 zero points and float scales")
    if q.dims[0] != weight.shape[1]:
        raise HeadNotRewritable(f"the head takes {q.dims[0]}-d embeddings, the new classes have {weight.shape[1]}")
    classes = weight.shape[0]
    values, column_scale = quantize_per_column(weight.T.astype(np.float32))
    _set(q, [weight.shape[1], classes], values)
    _set(zero, [classes], np.zeros(classes, np.int8))
    _set(scale, [classes], column_scale.astype("<f4"))
    return [*matmul.output, *cast.output, *scales.output]
