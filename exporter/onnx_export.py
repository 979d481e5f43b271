"""ONNX export of the classifier graph.

Uses torch's TorchScript-based exporter: at opset 17 it emits native
LayerNormalization, which Jetson TensorRT 8.6/10.x parse, while the dynamo
exporter in this torch release only targets opset ≥ 18 (its down-conversion
fails for these graphs).
"""

from __future__ import annotations

import collections
import warnings
from pathlib import Path

import torch

from ringfold.atomic import atomic_path
from ringfold.errors import RingfoldError

DEFAULT_OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAMES = ("logits", "embedding")


def export_onnx(
    classifier: torch.nn.Module, image_size: tuple[int, int], path: Path, opset: int = DEFAULT_OPSET
) -> None:
    """Write ``classifier`` as ONNX with a dynamic batch axis, then run onnx's full checker."""

    classifier = classifier.eval()
    dummy = torch.zeros(2, 3, *image_size)
    axes = {INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in OUTPUT_NAMES}}
    fastpath = torch.backends.mha.get_fastpath_enabled()
    # nn.MultiheadAttention's inference fast path is a fused op with no ONNX symbolic
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        _export(classifier, dummy, axes, path, opset)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def _export(classifier: torch.nn.Module, dummy: torch.Tensor, axes: dict, path: Path, opset: int) -> None:
    import onnx

    with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            classifier,
            (dummy,),
            str(tmp),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except onnx.checker.ValidationError as exc:
            raise RingfoldError(f"{path}: exported graph failed onnx.checker ({str(exc).splitlines()[0]})") from None


#: Aliases the exporter inserts when it de-duplicates identical initializers (e.g. the all-zero
#: biases of a random-init model): no compute, and their number depends on weight values.
NON_COMPUTE_OPS = frozenset({"Identity"})


def op_histogram(path: str | Path, compute_only: bool = True) -> dict[str, int]:
    """Count of each op type in a model's main graph (the zero-overhead check compares these)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    ops = (n.op_type for n in model.graph.node if not (compute_only and n.op_type in NON_COMPUTE_OPS))
    return dict(sorted(collections.Counter(ops).items()))
