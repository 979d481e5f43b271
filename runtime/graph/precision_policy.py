"""What a ViT keeps in fp32 when the rest of it runs in half precision — defined once, read by three.

- the exporter's fp16 rewrite (:mod:`ringfold.exporter.precision`) leaves these nodes in float32;
- ``ringfold build-engine --fp32-layers`` (planned in :mod:`ringfold.runtime.backends.tensorrt.plan`,
  built in :mod:`ringfold.runtime.backends.tensorrt.build`) pins their TensorRT layers to fp32, and
  ``--print-trtexec`` (:mod:`ringfold.runtime.backends.tensorrt.trtexec`) names them in ``--layerPrecisions``;
- ``ringfold check`` (:mod:`ringfold.runtime.backends.tensorrt.lint`) counts them in an fp16 variant and says
  how to keep them fp32 in the engine.

Why these: LayerNormalization's variance and Softmax's exponent sum overflow float16's
±65504 range after attention; the reductions (ReduceMean/ReduceSum, ReduceL2) and the
Pow/Sqrt of a hand-written norm lose too many bits; and the final L2-normalisation of
the embedding plus the classification head after it must keep the embedding's unit norm,
so every node from the ReduceL2 onwards stays fp32 as well.

Torch-free and onnx-free: the functions read any object shaped like an ONNX ModelProto
(:func:`fp32_layer_names` alone loads a file, with ``onnx`` when it is installed).
"""

from __future__ import annotations

from pathlib import Path

#: ONNX op types computed in fp32 in every reduced-precision graph ringfold makes or builds
FP32_OPS: tuple[str, ...] = ("LayerNormalization", "Softmax", "ReduceL2", "ReduceMean", "ReduceSum", "Pow", "Sqrt")

#: The TensorRT layer types (``trt.LayerType`` member names) those ops become once parsed. ``--fp32-layers``
#: pins these too, which catches the layers a node was split into; NORMALIZATION exists from TensorRT 8.6.
FP32_TRT_LAYER_TYPES: tuple[str, ...] = ("SOFTMAX", "REDUCE", "NORMALIZATION")

#: the op that starts the final L2-normalisation of the embedding (F.normalize exports as ReduceL2)
_NORMALISATION_START = "ReduceL2"


def final_normalisation_nodes(model) -> list[str]:
    """Names of the embedding's L2-normalisation and every node after it (the head), sorted.

    The walk starts at each ReduceL2 node and follows its outputs to their consumers. It does
    not enter a QuantizeLinear: past one, the graph's own Q/DQ decides the precision (the int8
    variant quantizes the head, and a TensorRT int8 build keeps it so).
    """
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for inp in node.input:
            consumers.setdefault(inp, []).append(node)
    stack = [n for n in model.graph.node if n.op_type == _NORMALISATION_START]
    kept: set[str] = set()
    while stack:
        node = stack.pop()
        if node.name in kept or node.op_type == "QuantizeLinear":
            continue
        kept.add(node.name)
        for out in node.output:
            stack.extend(consumers.get(out, []))
    return sorted(kept)


def is_fp32_node(node, tail: set[str] | frozenset[str]) -> bool:
    """Whether ``node`` stays fp32: its op is in :data:`FP32_OPS`, or it is in ``tail`` (the final normalisation)."""
    return node.op_type in FP32_OPS or node.name in tail


def fp32_node_names(model) -> list[str]:
    """Names of the nodes of ``model``'s main graph that stay fp32, in graph order (unnamed nodes are left out)."""
    tail = set(final_normalisation_nodes(model))
    return [n.name for n in model.graph.node if n.name and is_fp32_node(n, tail)]


def fp32_layer_names(onnx_path: str | Path) -> list[str] | None:
    """ONNX node names ``--fp32-layers`` pins (None: no ``onnx`` package to read them).

    The nodes are those this policy keeps fp32: LayerNorm, Softmax, the reductions, Pow/Sqrt, and
    the final L2-normalisation with the head. TensorRT's ONNX parser names each layer after its
    node, so these are the names trtexec's ``--layerPrecisions`` takes; unnamed nodes are left to
    the layer-type rule of the build.
    """
    try:
        import onnx
    except ImportError:
        return None
    model = onnx.load(str(onnx_path), load_external_data=False)
    return fp32_node_names(model)
