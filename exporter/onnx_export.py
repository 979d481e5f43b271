"""ONNX export of the classifier graph.

Uses torch's TorchScript-based exporter: at opset 17 it emits native
LayerNormalization, which Jetson TensorRT 8.6/10.x parse, while the dynamo
exporter in this torch release only targets opset ≥ 18 (its down-conversion
fails for these graphs).
"""

from __future__ import annotations

import collections
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from ringfold.atomic import atomic_path
from ringfold.errors import RingfoldError

from .attention_export import split_attention

DEFAULT_OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAMES = ("logits", "embedding")


def export_onnx(
    classifier: torch.nn.Module, image_size: tuple[int, int], path: Path, opset: int = DEFAULT_OPSET
) -> None:
    """Write ``classifier`` as ONNX with a dynamic batch axis, then run onnx's full checker."""
    dummy = torch.zeros(2, 3, *image_size)
    export_module(classifier, dummy, INPUT_NAME, OUTPUT_NAMES, path, opset)


def export_module(
    module: torch.nn.Module,
    dummy: torch.Tensor,
    input_name: str,
    output_names: Sequence[str],
    path: Path,
    opset: int = DEFAULT_OPSET,
    what: str = "graph",
) -> None:
    """Export ``module`` (one input; batch axis 0 dynamic everywhere) atomically, then run onnx's full checker.

    The one place the TorchScript exporter is called, for the classifier and the text tower alike.
    ``what`` names the graph in the one-line error when the checker refuses it.
    """
    import onnx

    module = module.eval()
    axes = {name: {0: "batch"} for name in (input_name, *output_names)}
    fastpath = torch.backends.mha.get_fastpath_enabled()
    # nn.MultiheadAttention's inference fast path is a fused op with no ONNX symbolic
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        # q/k/v as three MatMul+Add (same weights, sliced): the form ONNX Runtime's attention fusion matches
        with split_attention(module), atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (dummy,),
                str(tmp),
                input_names=[input_name],
                output_names=list(output_names),
                dynamic_axes=axes,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
            try:
                onnx.checker.check_model(str(tmp), full_check=True)
            except onnx.checker.ValidationError as exc:
                reason = str(exc).splitlines()[0]
                raise RingfoldError(f"{path}: exported {what} failed onnx.checker ({reason})") from None
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


#: Aliases the exporter inserts when it de-duplicates identical initializers (e.g. the all-zero
#: biases of a random-init model): no compute, and their number depends on weight values.
NON_COMPUTE_OPS = frozenset({"Identity"})


def op_histogram(path: str | Path, compute_only: bool = True) -> dict[str, int]:
    """Count of each op type in a model's main graph (the zero-overhead check compares these)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    ops = (n.op_type for n in model.graph.node if not (compute_only and n.op_type in NON_COMPUTE_OPS))
    return dict(sorted(collections.Counter(ops).items()))
