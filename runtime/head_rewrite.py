"""Replace the classification head baked into a bundle model (``logits = embedding @ W``), without ``onnx``.

The exporter's head is one bias-free MatMul from the ``embedding`` output to the
``logits`` output whose second input is an initializer ``W`` of shape
[embed_dim, num_classes] holding ``logit_scale · class_embeddingsᵀ`` (DESIGN §5).
The fp32 variant has it in float32, and so does the fp16 variant (the final
normalisation and the head stay fp32, see :mod:`ringfold.runtime.precision_policy`).
The int8 variants quantize the head with calibrated or per-channel scales; they
are not rewritten here (:class:`HeadNotRewritable`).
"""

from __future__ import annotations

import numpy as np

from .onnx_subset import FLOAT, FLOAT16, parse_model, serialize

LOGITS, EMBEDDING = "logits", "embedding"
#: nodes that may sit between the head's MatMul and the logits output without changing values' meaning
_PASS_THROUGH = ("Identity", "Cast")
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


class HeadNotRewritable(Exception):
    """The graph's head is not the exporter's float MatMul; the message says what was found."""


def rewrite_head(data: bytes, weight: np.ndarray) -> bytes:
    """The model ``data`` with its head initializer set to ``weight.T`` (``weight``: [classes, embed_dim]) and the
    logits' class dimension updated in the graph output and value_info. Everything else is kept byte for byte.
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
    if node is None or node.op_type != "MatMul" or len(node.input) != 2 or node.input[0] != EMBEDDING:
        found = node.op_type if node is not None else "nothing"
        raise HeadNotRewritable(f"logits come from {found}, not the exporter's MatMul(embedding, W) head")
    initializers = [t for t in graph.initializer if t.name == node.input[1]]
    users = sum(node.input[1] in n.input for n in graph.node)
    if len(initializers) != 1 or users != 1:
        raise HeadNotRewritable("the head's weight is not one initializer used by the head alone")
    tensor = initializers[0]
    dtype = {FLOAT: np.dtype("<f4"), FLOAT16: np.dtype("<f2")}.get(tensor.data_type)
    if dtype is None or tensor.data_location == _EXTERNAL or len(tensor.dims) != 2:
        raise HeadNotRewritable(f"the head's weight is type {tensor.data_type} {list(tensor.dims)}, not a float matrix")
    if tensor.dims[0] != weight.shape[1]:
        raise HeadNotRewritable(f"the head takes {tensor.dims[0]}-d embeddings, the new classes have {weight.shape[1]}")
    num_classes = int(weight.shape[0])
    del tensor.dims[:]
    tensor.dims.extend([weight.shape[1], num_classes])
    del tensor.float_data[:]
    tensor.raw_data = np.ascontiguousarray(weight.T, dtype=dtype).tobytes()
    for info in [*graph.output, *graph.value_info]:
        if info.name in chain and info.type.HasField("tensor_type"):
            dims = info.type.tensor_type.shape.dim
            if len(dims) == 2 and dims[1].HasField("dim_value"):
                dims[1].dim_value = num_classes
    return serialize(model)
