"""The precisions a bundle's model comes in, and what each one is: the one table every layer reads.

A precision names a variant in the manifest, a ``--precision`` value, a TensorRT engine's key and a
Triton model's suffix. Its properties (file, weight dtype, which backends run it, whether TensorRT
builds engines of it, which tolerances judge it) are written here once; the exporter, the TensorRT
planner, parity, the lint and the Triton writer look them up instead of spelling them again.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Precision:
    """One precision variant and its properties."""

    name: str
    #: what a name derived from the fp32 one gets appended: ``model{suffix}.onnx``, Triton's ``<name>{suffix}``
    suffix: str
    #: the dtype of the weights the variant's matmuls read
    weight_dtype: str
    #: the backends that run it (see :mod:`ringfold.runtime.backends.registry`)
    backends: tuple[str, ...]
    #: the precision whose numerics it shares: parity's and the lint's tolerances are keyed by it
    numerics: str
    #: the bundle variants a TensorRT engine of this precision may be built from, most usual first
    #: (empty: TensorRT builds no engine of it)
    engine_sources: tuple[str, ...] = ()
    #: runs on ONNX Runtime's CPU provider only (quantises activations at run time)
    cpu_only: bool = False
    #: the backends the variant is meant for (empty: every one of ``backends``); a backend in ``backends`` but
    #: not here runs it for parity only (int8-fp16 on ONNX Runtime's CPU provider, which has few fp16 kernels)
    meant_for: tuple[str, ...] = ()

    @property
    def file(self) -> str:
        """The variant's file in a bundle ``ringfold export`` writes."""
        return f"model{self.suffix}.onnx"

    @property
    def targets(self) -> tuple[str, ...]:
        """The backends this variant is meant for (the manifest writes it beside the variant)."""
        return self.meant_for or self.backends

    @property
    def tensorrt(self) -> bool:
        """Whether TensorRT builds engines of this precision."""
        return bool(self.engine_sources)


TABLE: dict[str, Precision] = {
    p.name: p
    for p in (
        Precision("fp32", "", "float32", ("onnxruntime", "tensorrt"), "fp32", ("fp32",)),
        # an fp16 engine: the fp32 graph with the FP16 flag, or strongly typed from the fp16 graph
        Precision("fp16", "_fp16", "float16", ("onnxruntime", "tensorrt"), "fp16", ("fp32", "fp16")),
        # an int8 engine: strongly typed from the int8-fp16 QDQ graph (TensorRT >= 10), else the int8 QDQ graph,
        # or the fp32 graph with the legacy calibrator (TensorRT 8.6)
        Precision("int8", "_int8", "int8", ("onnxruntime", "tensorrt"), "int8", ("int8-fp16", "int8", "fp32")),
        Precision("int8-dynamic", "_int8_dynamic", "int8", ("onnxruntime",), "int8", cpu_only=True),
        # the int8 QDQ graph with its float parts fp16: the source of TensorRT's int8 engine, not an engine
        # precision of its own; ONNX Runtime runs it for parity only
        Precision("int8-fp16", "_int8_fp16", "int8", ("tensorrt", "onnxruntime"), "int8-fp16", meant_for=("tensorrt",)),
    )
}
#: every precision a bundle variant may have, in report order
PRECISIONS = tuple(TABLE)
#: the precisions TensorRT builds engines of
ENGINE_PRECISIONS = tuple(name for name, p in TABLE.items() if p.tensorrt)


def numerics(precision: str) -> str:
    """The precision whose tolerances judge ``precision`` (int8-dynamic: int8; int8-fp16 its own; unknown: int8)."""
    known = TABLE.get(precision)
    return known.numerics if known else "int8"
