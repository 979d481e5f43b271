"""Triton Inference Server ``config.pbtxt``: one model's configuration, rendered as protobuf text.

Written by hand rather than through Triton's ``model_config_pb2`` because this module ships to
devices whose runtime install has numpy, Pillow and ONNX Runtime only; the tests parse every
rendered file with Triton's own ``ModelConfig`` message (``tritonclient``), so a field or enum
value Triton does not know fails there. Names are restricted to characters that need no
escaping in protobuf text format, so the renderer never has to quote anything but plain text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from ringfold.errors import RingfoldError
from ringfold.runtime.base.text_rules import check_text

#: manifest dtype -> Triton's DataType enum name
TRITON_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "uint8": "TYPE_UINT8"}
#: Triton's instance group kinds ringfold writes (KIND_AUTO: GPU when the server has one, else CPU)
INSTANCE_KINDS = ("KIND_AUTO", "KIND_GPU", "KIND_CPU")
#: bundle ``ort_optimization`` -> the onnxruntime backend's ``optimization.graph.level``
#: (its README: -1 basic, 1 basic + extended, absent = everything, which is ORT's default)
ORT_GRAPH_LEVELS = {"all": None, "extended": 1, "basic": -1}

_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,255}")
#: a model's name is also its folder in the model repository
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def is_model_name(text: str) -> bool:
    """Whether ``text`` is a Triton model (folder) name ringfold writes: letters, digits, ``_ . -``, at most 100."""
    return bool(_MODEL_NAME.fullmatch(text)) and ".." not in text


def safe_name(text: str, what: str) -> str:
    """``text`` when it can be written inside a pbtxt string without escaping; a one-line error otherwise."""
    if not _SAFE_NAME.fullmatch(text) or ".." in text:
        raise RingfoldError(
            f"{what} {text[:60]!r} cannot be used in a Triton config (letters, digits, _ . : / - only); "
            "rename it in the bundle"
        )
    return text


def labels_text(labels: Sequence[str]) -> str:
    """Triton's ``label_filename`` file: one class per line, so a class may hold no line break (nor any
    character :mod:`.text_rules` refuses), and an empty one would shift every class after it."""
    for i, label in enumerate(labels):
        if not label:
            raise RingfoldError(f"class {i} is empty; Triton's label file needs one name per line — re-export")
        check_text(label, f"class {i}", "Triton's one-class-per-line label file cannot carry it; rename the class")
    return "".join(f"{label}\n" for label in labels)


def comment_lines(texts: Sequence[str]) -> list[str]:
    """``# …`` lines for protobuf text format (a comment ends at the line break: one per line of ``texts``),
    each line refused when it holds a character :mod:`.text_rules` refuses (a bundle or model name)."""
    lines = [line for text in texts for line in text.split("\n")]
    return [f"# {check_text(line, 'config comment', 'rename the bundle or model')}".rstrip() for line in lines]


@dataclass(frozen=True)
class TritonTensor:
    """One input or output: dims without the batch axis (the config has ``max_batch_size`` > 0)."""

    name: str
    dtype: str  # a key of TRITON_DTYPES
    dims: tuple[int, ...]
    label_filename: str | None = None

    def render(self) -> str:
        lines = [
            f'    name: "{safe_name(self.name, "tensor name")}"',
            f"    data_type: {TRITON_DTYPES[self.dtype]}",
            f"    dims: [ {', '.join(str(d) for d in self.dims)} ]",
        ]
        if self.label_filename:
            lines.append(f'    label_filename: "{safe_name(self.label_filename, "label file")}"')
        return "  {\n" + "\n".join(lines) + "\n  }"


@dataclass(frozen=True)
class TritonModelConfig:
    """What Triton needs to serve one model folder: backend, batching, tensors, instances."""

    name: str
    platform: str  # onnxruntime_onnx | tensorrt_plan
    backend: str  # onnxruntime | tensorrt
    default_model_filename: str
    max_batch_size: int
    queue_delay_us: int
    inputs: tuple[TritonTensor, ...]
    outputs: tuple[TritonTensor, ...]
    instance_kind: str = "KIND_AUTO"
    instance_count: int = 1
    ort_graph_level: int | None = None
    comments: Sequence[str] = field(default_factory=tuple)

    def to_pbtxt(self) -> str:
        """The ``config.pbtxt`` text; ``#`` comments first (protobuf text format ignores them)."""
        if self.instance_kind not in INSTANCE_KINDS:
            raise ValueError(f"instance kind {self.instance_kind!r} is not one of {INSTANCE_KINDS}")
        out = comment_lines(self.comments)
        out += [
            f'name: "{safe_name(self.name, "model name")}"',
            f'platform: "{self.platform}"',
            f'backend: "{self.backend}"',
            f'default_model_filename: "{self.default_model_filename}"',
            f"max_batch_size: {self.max_batch_size}",
            "dynamic_batching {",
            f"  max_queue_delay_microseconds: {self.queue_delay_us}",
            "}",
            "input [",
            ",\n".join(t.render() for t in self.inputs),
            "]",
            "output [",
            ",\n".join(t.render() for t in self.outputs),
            "]",
            "instance_group [",
            "  {",
            f"    count: {self.instance_count}",
            f"    kind: {self.instance_kind}",
            "  }",
            "]",
        ]
        if self.ort_graph_level is not None:
            out += ["optimization {", "  graph {", f"    level: {self.ort_graph_level}", "  }", "}"]
        return "\n".join(out) + "\n"
