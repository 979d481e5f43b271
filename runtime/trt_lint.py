"""``ringfold check``: will TensorRT's ONNX parser take this bundle? A static lint, no GPU and no TensorRT needed.

Every ONNX graph of a bundle is checked against what the TensorRT ONNX parser
(onnx-tensorrt) of the target release accepts:

- ``trt-8.6`` — TensorRT 8.6 (JetPack 6.0): opsets 7–17, no INT64 tensors
  (INT64 weights are cast down to INT32), INT8-only Q/DQ.
- ``trt-10`` — TensorRT 10.0–10.3 (JetPack 6.1/6.2): opsets 9–20, native
  INT64, INT8/FP8/INT4 Q/DQ. Operators that only later 10.x releases added
  are reported with the release that has them.

Checks: operators the parser lacks (and custom-domain / ONNX Runtime contrib
ops), restrictions on attributes and constant inputs the parser imposes,
opset and IR version, graph input/output dtypes, dynamic dimensions other
than the batch axis, float64 weights and casts, Q/DQ rules (zero points 0,
INT8 data, positive scales — an INT32 bias under DequantizeLinear does not
import), INT64 weights for 8.6, and the 2 GiB protobuf limit.

Sources of the operator tables, written here in our own words: onnx-tensorrt
``docs/operators.md`` for TensorRT 8.5 (opset <= 17) plus its
``docs/Changelog.md`` entries for 8.6 EA/GA (LayerNormalization,
GroupNormalization, IsInf, N-D Trilu added) — the release/8.6-GA table itself
was not reachable, so 8.6 is the 8.5 table plus that changelog; for 10.x the
10.0 header of ``docs/operators.md`` (opset 9–20, INT64 and quantized types)
and its 10.15 table, with the 10.1–10.15 changelog entries used to date the
later additions (DeformConv 10.1, tensor Slice axes 10.3, window ops 10.4,
STFT 10.5, dynamic Squeeze axes 10.7, dynamic CumSum axes 10.8, opset-21
GroupNorm 10.9, Attention 10.14, RMSNormalization/RotaryEmbedding/TensorScatter
10.15). The INT32-bias DequantizeLinear rule comes from onnx-tensorrt#850 and
onnxruntime#14229 ("only activation types allowed as input to this layer") and
the 10.x importer source (Q/DQ data must be a quantized type). A lint is not
the parser: a clean report means "nothing known to fail", and
``--polygraphy`` (TensorRT + CUDA machines) builds and runs the engine.

Torch-free: imports numpy, and onnx lazily.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ringfold.errors import RingfoldError

SEVERITIES = ("blocker", "warning", "info")
_SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}


@dataclass(frozen=True)
class Finding:
    severity: str  # blocker | warning | info
    code: str
    node: str | None
    message: str
    fix: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class OpSupport:
    supported: bool
    note: str = ""  # partial support / restrictions, in our words
    since: str | None = None  # TensorRT release that added it, when later than the target's baseline


@dataclass(frozen=True)
class ParserSpec:
    target: str
    title: str
    version: str
    opset_min: int
    opset_max: int
    ir_max: int  # newest ONNX IR version of the onnx release the parser is built with
    int64: bool  # native INT64 tensors
    qdq_data_types: tuple[int, ...]  # TensorProto types allowed as DequantizeLinear data
    ops: dict[str, OpSupport] = field(repr=False)


# ----------------------------------------------------------------------------------------------- tables
# TensorProto element types (ints, so the table needs no onnx import)
FLOAT, UINT8, INT8, UINT16, INT16, INT32, INT64, STRING, BOOL = 1, 2, 3, 4, 5, 6, 7, 8, 9
FLOAT16, DOUBLE, UINT32, UINT64, COMPLEX64, COMPLEX128, BFLOAT16 = 10, 11, 12, 13, 14, 15, 16
FLOAT8E4M3FN, FLOAT8E4M3FNUZ, FLOAT8E5M2, FLOAT8E5M2FNUZ, UINT4, INT4, FLOAT4E2M1 = 17, 18, 19, 20, 21, 22, 23
DTYPE_NAMES = {
    FLOAT: "float32",
    UINT8: "uint8",
    INT8: "int8",
    UINT16: "uint16",
    INT16: "int16",
    INT32: "int32",
    INT64: "int64",
    STRING: "string",
    BOOL: "bool",
    FLOAT16: "float16",
    DOUBLE: "float64",
    UINT32: "uint32",
    UINT64: "uint64",
    COMPLEX64: "complex64",
    COMPLEX128: "complex128",
    BFLOAT16: "bfloat16",
    FLOAT8E4M3FN: "float8e4m3fn",
    FLOAT8E4M3FNUZ: "float8e4m3fnuz",
    FLOAT8E5M2: "float8e5m2",
    FLOAT8E5M2FNUZ: "float8e5m2fnuz",
    UINT4: "uint4",
    INT4: "int4",
    FLOAT4E2M1: "float4e2m1",
}
_ITEMSIZE = {
    FLOAT: 4, UINT8: 1, INT8: 1, UINT16: 2, INT16: 2, INT32: 4, INT64: 8, BOOL: 1, FLOAT16: 2, DOUBLE: 8,
    UINT32: 4, UINT64: 8, COMPLEX64: 8, COMPLEX128: 16, BFLOAT16: 2, FLOAT8E4M3FN: 1, FLOAT8E4M3FNUZ: 1,
    FLOAT8E5M2: 1, FLOAT8E5M2FNUZ: 1, UINT4: 0.5, INT4: 0.5, FLOAT4E2M1: 0.5,
}  # fmt: skip

# Operators both parsers import (8.5's table + 8.6 additions; every one of them is also in 10.x).
_COMMON_OPS = """
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil Celu Clip
Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear Div Dropout Einsum
Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool
GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization GRU HardSigmoid HardSwish Identity If ImageScaler
InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM
LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization Min Mod Mul Neg NonMaxSuppression NonZero
Not OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin
ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round ScaledTanh Scan Scatter
ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth
Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split()
# In TensorRT 10.0–10.3 but not in 8.6.
_TRT10_ONLY_OPS = "CastLike DeformConv Gelu Hardmax Mish".split()
# Added by a 10.x release after 10.3 (JetPack 6.1/6.2 ship 10.3): op -> release.
_TRT10_LATER_OPS = {
    "BlackmanWindow": "10.4",
    "HammingWindow": "10.4",
    "HannWindow": "10.4",
    "STFT": "10.5",
    "Attention": "10.14",
    "RMSNormalization": "10.15",
    "RotaryEmbedding": "10.15",
    "TensorScatter": "10.15",
}
# Listed as unsupported by the parser docs (any other op is simply not in the table, also unsupported).
_UNSUPPORTED_OPS = """
AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor CenterCropPad Col2Im Compress
ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear ImageDecoder MatMulInteger MaxRoiPool MaxUnpool
MelWeightMatrix Multinomial NegativeLogLikelihoodLoss Optional OptionalGetElement OptionalHasElement QLinearConv
QLinearMatMul RegexFullMatch SequenceAt SequenceConstruct SequenceEmpty SequenceErase SequenceInsert SequenceLength
SequenceMap SoftmaxCrossEntropyLoss SplitToSequence StringConcat StringNormalizer StringSplit TfIdfVectorizer Unique
""".split()
# ONNX Runtime's integer / dynamic-quantization ops: what an int8-dynamic variant is made of.
DYNAMIC_QUANT_OPS = ("DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul")

_NOTES_COMMON = {
    "AveragePool": "2-D/3-D pooling only; dilations must be 1",
    "MaxPool": "2-D/3-D pooling only; the Indices output is not supported; dilations must be 1",
    "LpPool": "dilations must be 1",
    "Cast": "TensorRT types only; DOUBLE is cast down to FLOAT",
    "Conv": "2-D/3-D convolutions; weights should be an initializer",
    "ConvTranspose": "2-D/3-D deconvolutions; weights should be an initializer",
    "CumSum": "axis must be an initializer",
    "DequantizeLinear": "data must be INT8 (no INT32 bias); zero point must be 0; scales positive",
    "QuantizeLinear": "INT8 output; zero point must be 0; scales positive",
    "Dropout": "inference only: training_mode must be a constant False",
    "Einsum": "no ellipsis or diagonal terms; no broadcasting between inputs",
    "If": "both branches must produce outputs of the same rank, with distinct names",
    "InstanceNormalization": "scale and bias should be initializers; input rank 3–5",
    "LayerNormalization": "only the first output (Y); fp16 builds can overflow — keep it in fp32",
    "LSTM": "both directions must use the same activations; input_forget and layout must be 0",
    "GRU": "both directions must use the same activations",
    "RNN": "both directions must use the same activations",
    "Loop": "scan-output length cannot be dynamic",
    "NonMaxSuppression": "max_output_boxes_per_class, iou_threshold, score_threshold should be initializers",
    "RandomNormal": "seed is ignored",
    "RandomNormalLike": "seed is ignored",
    "RandomUniform": "seed is ignored",
    "RandomUniformLike": "seed is ignored",
    "Range": "float start/limit/delta should be initializers",
    "Resize": "modes nearest/linear; no cubic, no tf_crop_and_resize, no antialias; aspect policy stretch",
    "ScatterND": "reduction must be none",
    "Slice": "axes must be an initializer (tensor axes from TensorRT 10.3)",
    "Squeeze": "axes must be a constant (dynamic axes from TensorRT 10.7)",
    "Unsqueeze": "axes must be a constant (dynamic axes from TensorRT 10.7)",
    "TopK": "K below 3840 (10.x docs); dynamic K from 8.6",
    "Pad": "constant axes (tensor axes from TensorRT 10.4)",
    "GroupNormalization": "opset-18 definition (opset 21 from TensorRT 10.9)",
    "ReduceMean": "axes must be an initializer",
    "ReduceSum": "axes must be an initializer",
}
_NOTES_86 = {
    "Pad": "modes constant/reflect/edge (wrap from TensorRT 10)",
    "ScatterElements": "no reduction attribute (from TensorRT 10)",
    "ConstantOfShape": "value cast to a TensorRT type (INT64 → INT32)",
}
_NOTES_10 = {
    "DequantizeLinear": "data INT8/FP8/INT4 (no INT32 bias, no UINT8); zero point must be 0; scales positive",
    "QuantizeLinear": "INT8/FP8/INT4 output; zero point must be 0; scales positive",
    "EyeLike": "input must have static dimensions",
    "Constant": "sparse_value and string values are not supported",
}
_LATER_86 = {  # unsupported in 8.6 but available in TensorRT 10 (→ suggest --target trt-10)
    op: "10.0" for op in _TRT10_ONLY_OPS
} | {"Hardmax": "9.2"}


def _build_ops(target: str) -> dict[str, OpSupport]:
    ops: dict[str, OpSupport] = {}
    extra_notes = _NOTES_86 if target == "trt-8.6" else _NOTES_10
    for op in _COMMON_OPS:
        ops[op] = OpSupport(True, extra_notes.get(op) or _NOTES_COMMON.get(op, ""))
    for op in _UNSUPPORTED_OPS:
        ops[op] = OpSupport(False)
    if target == "trt-8.6":
        for op, since in _LATER_86.items():
            ops[op] = OpSupport(False, since=since)
        for op, since in _TRT10_LATER_OPS.items():
            ops[op] = OpSupport(False, since=since)
    else:
        for op in _TRT10_ONLY_OPS:
            ops[op] = OpSupport(True, "from TensorRT 10.1; 1-D/2-D spatial input" if op == "DeformConv" else "")
        for op, since in _TRT10_LATER_OPS.items():
            ops[op] = OpSupport(False, since=since)
    return ops


PARSERS: dict[str, ParserSpec] = {
    "trt-8.6": ParserSpec(
        target="trt-8.6",
        title="TensorRT 8.6 ONNX parser (JetPack 6.0)",
        version="8.6",
        opset_min=7,
        opset_max=17,
        ir_max=8,  # onnx 1.13.1
        int64=False,
        qdq_data_types=(INT8,),
        ops=_build_ops("trt-8.6"),
    ),
    "trt-10": ParserSpec(
        target="trt-10",
        title="TensorRT 10.0–10.3 ONNX parser (JetPack 6.1/6.2)",
        version="10.3",
        opset_min=9,
        opset_max=20,
        ir_max=10,  # onnx 1.16
        int64=True,
        qdq_data_types=(INT8, FLOAT8E4M3FN, INT4, FLOAT4E2M1),
        ops=_build_ops("trt-10"),
    ),
}
TARGETS = tuple(PARSERS)

# Graph I/O element types each parser binds.
_IO_TYPES = {
    "trt-8.6": {FLOAT, FLOAT16, INT32, INT8, UINT8, BOOL},
    "trt-10": {FLOAT, FLOAT16, BFLOAT16, INT32, INT64, INT8, UINT8, BOOL, FLOAT8E4M3FN},
}
_CAST_TYPES = {
    "trt-8.6": {FLOAT, FLOAT16, INT32, INT64, INT8, UINT8, BOOL},
    "trt-10": {FLOAT, FLOAT16, BFLOAT16, INT32, INT64, UINT8, BOOL, INT8},
}

LARGE_TOTAL_BYTES = 2 * 1024**3  # protobuf's hard limit for one serialized model
LARGE_SINGLE_BYTES = 500 * 1024**2

_FIX_DYNAMIC_QUANT = (
    "use the static QDQ int8 variant for TensorRT (`ringfold export --precision int8 --calib DIR`); "
    "int8-dynamic is for ONNX Runtime on CPU"
)
_FIX_INT32_BIAS = (
    "re-export int8 with float biases: onnxruntime quantize_static(..., extra_options={'QuantizeBias': False}) "
    "keeps biases out of Q/DQ, the form TensorRT imports"
)
#: node-level findings folded into one row when many nodes hit the same rule
_GROUPED_CODES = frozenset(
    {"qdq-dtype", "qdq-zero-point", "qdq-scale", "non-constant-input", "unsupported-attribute", "double",
     "cast-int8", "unsupported-dtype"}
)  # fmt: skip
_FIX_FOLD = "fold constants first (`polygraphy surgeon sanitize model.onnx --fold-constants`) or re-export"


def parser_spec(target: str) -> ParserSpec:
    if target not in PARSERS:
        raise RingfoldError(f"--target {target!r}: unknown TensorRT target; use one of {', '.join(TARGETS)}")
    return PARSERS[target]


# ------------------------------------------------------------------------------------------- graph walk
def _import_onnx():
    try:
        import onnx
    except ImportError:
        raise RingfoldError(
            "`ringfold check` needs the onnx package to read the graph: pip install onnx (or 'ringfold[check]')"
        ) from None
    return onnx


def _load(path: Path):
    onnx = _import_onnx()
    if not path.is_file():
        raise RingfoldError(f"{path}: no such ONNX file; pass a bundle directory or an .onnx file")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise RingfoldError(f"{path}: not a readable ONNX model ({exc.__class__.__name__}); re-export it") from None


def _iter_graphs(graph):
    """The graph and every subgraph (If/Loop/Scan bodies), depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == 5:  # GRAPH
                yield from _iter_graphs(attr.g)
            elif attr.type == 10:  # GRAPHS
                for g in attr.graphs:
                    yield from _iter_graphs(g)


def _node_label(node, index: int) -> str:
    return node.name or f"{node.op_type}#{index}"


def _attr(node, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            if a.type == 1:
                return a.f
            if a.type == 2:
                return a.i
            if a.type == 3:
                return a.s.decode(errors="replace")
            if a.type == 4:
                return a.t
            if a.type == 6:
                return list(a.floats)
            if a.type == 7:
                return list(a.ints)
            return a
    return default


def _tensor_nbytes(t) -> float:
    n = int(np.prod(t.dims, dtype=np.int64)) if len(t.dims) else 1
    return n * _ITEMSIZE.get(t.data_type, 1)


def _is_external(t) -> bool:
    return t.data_location == 1  # TensorProto.EXTERNAL


class _Graphs:
    """Everything the checks need from a model, gathered once across all (sub)graphs."""

    def __init__(self, model) -> None:
        from onnx import numpy_helper

        self._to_array = numpy_helper.to_array
        self.model = model
        self.graphs = list(_iter_graphs(model.graph))
        self.initializers: dict[str, Any] = {}
        self.constants: dict[str, Any] = {}  # Constant node output -> TensorProto
        self.nodes: list[tuple[Any, str]] = []
        index = 0
        for g in self.graphs:
            for t in g.initializer:
                self.initializers[t.name] = t
            for node in g.node:
                self.nodes.append((node, _node_label(node, index)))
                index += 1
                if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output:
                    value = self._constant_value(node)
                    if value is not None:
                        self.constants[node.output[0]] = value
        # Identity of a weight is still a weight to the parser
        self.aliases: dict[str, str] = {}
        for node, _ in self.nodes:
            if node.op_type == "Identity" and node.input and node.output:
                self.aliases[node.output[0]] = node.input[0]

    def _constant_value(self, node):
        """A Constant node's value as a TensorProto (value, or value_float(s)/value_int(s) made into one)."""
        from onnx import numpy_helper

        for a in node.attribute:
            if a.name == "value":
                return a.t
            if a.name == "value_float":
                return numpy_helper.from_array(np.array(a.f, dtype=np.float32))
            if a.name == "value_floats":
                return numpy_helper.from_array(np.array(list(a.floats), dtype=np.float32))
            if a.name == "value_int":
                return numpy_helper.from_array(np.array(a.i, dtype=np.int64))
            if a.name == "value_ints":
                return numpy_helper.from_array(np.array(list(a.ints), dtype=np.int64))
        return None  # sparse / string constants: flagged by the Constant rule

    def _resolve(self, name: str) -> str:
        seen = set()
        while name in self.aliases and name not in seen:
            seen.add(name)
            name = self.aliases[name]
        return name

    def weight(self, name: str):
        """The TensorProto behind ``name`` when the parser sees it as weights (initializer / Constant), else None."""
        name = self._resolve(name)
        found = self.initializers.get(name)
        return found if found is not None else self.constants.get(name)

    def is_weight(self, name: str) -> bool:
        return self.weight(name) is not None

    def value(self, name: str) -> np.ndarray | None:
        t = self.weight(name)
        if t is None or _is_external(t):
            return None
        try:
            return self._to_array(t)
        except Exception:
            return None


# ----------------------------------------------------------------------------------------------- checks
def _opset(model) -> int | None:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return None


def _check_versions(model, spec: ParserSpec) -> list[Finding]:
    out = []
    opset = _opset(model)
    if opset is None:
        out.append(
            Finding(
                "blocker",
                "opset",
                None,
                "the model imports no default-domain (ai.onnx) opset",
                "re-export the model with a standard opset (ringfold exports opset 17)",
            )
        )
    elif not spec.opset_min <= opset <= spec.opset_max:
        out.append(
            Finding(
                "blocker",
                "opset",
                None,
                f"opset {opset} is outside the {spec.title}'s range {spec.opset_min}–{spec.opset_max}",
                f"re-export with an opset in {spec.opset_min}–{spec.opset_max} (`ringfold export --opset 17`)"
                + (" or target TensorRT 10 (--target trt-10)" if spec.target == "trt-8.6" and opset <= 20 else ""),
            )
        )
    if model.ir_version > spec.ir_max:
        out.append(
            Finding(
                "warning",
                "ir-version",
                None,
                f"ONNX IR version {model.ir_version} is newer than the parser's onnx (IR {spec.ir_max}); "
                "parsing may fail on new fields",
                "save the model with an older onnx, or set model.ir_version to "
                f"{spec.ir_max} when it uses no newer features",
            )
        )
    return out


def _check_ops(g: _Graphs, spec: ParserSpec) -> list[Finding]:
    local_functions = {(f.domain, f.name) for f in g.model.functions}
    unsupported: dict[tuple[str, str], list[str]] = defaultdict(list)
    for node, label in g.nodes:
        domain = node.domain or ""
        if (domain, node.op_type) in local_functions:
            if spec.target == "trt-8.6":
                unsupported[("local-function", node.op_type)].append(label)
            continue
        if domain not in ("", "ai.onnx"):
            unsupported[(f"custom:{domain}", node.op_type)].append(label)
            continue
        support = spec.ops.get(node.op_type)
        if support is None or not support.supported:
            unsupported[("op", node.op_type)].append(label)
    out = []
    for (kind, op), labels in unsupported.items():
        names = ", ".join(labels[:3]) + (", …" if len(labels) > 3 else "")
        count = f"{len(labels)} node{'s' if len(labels) > 1 else ''}: {names}"
        if kind == "local-function":
            out.append(
                Finding(
                    "blocker",
                    "local-function",
                    labels[0],
                    f"{op} is an ONNX local function; TensorRT 8.6 cannot import functions ({count})",
                    "inline functions (onnx.inliner.inline_local_functions) or target trt-10",
                )
            )
            continue
        if kind.startswith("custom:"):
            domain = kind.split(":", 1)[1]
            if op in DYNAMIC_QUANT_OPS or domain == "com.microsoft":
                fix = (
                    _FIX_DYNAMIC_QUANT
                    if op in DYNAMIC_QUANT_OPS
                    else "export without ONNX Runtime-specific fusions (they emit com.microsoft contrib ops)"
                )
            else:
                fix = f"replace the op, or build with a TensorRT plugin registered as {op!r}"
            out.append(
                Finding(
                    "blocker",
                    "custom-op",
                    labels[0],
                    f"{domain}::{op} is not an ONNX standard op; the {spec.title} has no importer for it ({count})",
                    fix,
                )
            )
            continue
        support = spec.ops.get(op)
        if op in DYNAMIC_QUANT_OPS:
            fix = _FIX_DYNAMIC_QUANT
        elif support is not None and support.since:
            fix = (
                f"supported from TensorRT {support.since}"
                + (" (--target trt-10, JetPack 6.1+)" if spec.target == "trt-8.6" else "")
                + "; or rewrite it with supported ops"
            )
        else:
            fix = "rewrite it with supported ops in the PyTorch model and re-export, or supply a TensorRT plugin"
        listed = "is listed as unsupported by" if support is not None else "is not in the operator table of"
        out.append(Finding("blocker", "unsupported-op", labels[0], f"{op} {listed} the {spec.title} ({count})", fix))
    return out


def _check_constant_input(g: _Graphs, node, label, index: int, what: str, severity: str, since: str | None):
    if len(node.input) > index and node.input[index] and not g.is_weight(node.input[index]):
        later = f" (TensorRT {since}+ accepts a tensor)" if since else ""
        return Finding(
            severity,
            "non-constant-input",
            label,
            f"{node.op_type} {what} is computed at run time; the parser needs it as an initializer{later}",
            _FIX_FOLD,
        )
    return None


def _check_node_rules(g: _Graphs, spec: ParserSpec) -> list[Finding]:
    """Restrictions the parser puts on attributes and constant inputs of ops it otherwise imports."""
    is86 = spec.target == "trt-8.6"
    out: list[Finding | None] = []
    reduce_ops = {o for o in spec.ops if o.startswith("Reduce")}
    for node, label in g.nodes:
        if node.domain not in ("", "ai.onnx"):
            continue
        op = node.op_type

        def issue(message: str, fix: str, code: str = "unsupported-attribute", severity: str = "blocker") -> None:
            out.append(Finding(severity, code, label, message, fix))  # noqa: B023 (called within this iteration)

        if op in ("Squeeze", "Unsqueeze"):
            out.append(_check_constant_input(g, node, label, 1, "axes", "blocker", "10.7"))
        elif op == "Slice" and is86:
            out.append(_check_constant_input(g, node, label, 3, "axes", "blocker", "10.3"))
        elif op == "CumSum":
            out.append(_check_constant_input(g, node, label, 1, "axis", "blocker", "10.8"))
        elif op in reduce_ops:
            out.append(_check_constant_input(g, node, label, 1, "axes", "blocker", None))
        elif op == "Dropout" and len(node.input) > 2 and node.input[2]:
            value = g.value(node.input[2])
            if value is None or bool(np.asarray(value).any()):
                issue("Dropout in training mode (or a run-time training_mode) cannot be imported", "export in eval()")
        elif op == "Resize":
            problems = []
            if (mode := _attr(node, "mode", "nearest")) not in ("nearest", "linear"):
                problems.append(f"mode={mode}")
            if (ctm := _attr(node, "coordinate_transformation_mode", "")) == "tf_crop_and_resize":
                problems.append(f"coordinate_transformation_mode={ctm}")
            if _attr(node, "antialias", 0):
                problems.append("antialias=1")
            if (policy := _attr(node, "keep_aspect_ratio_policy", "stretch")) != "stretch":
                problems.append(f"keep_aspect_ratio_policy={policy}")
            if problems:
                issue(
                    f"Resize with {', '.join(problems)} is not supported by the {spec.title}",
                    "use mode nearest/linear without antialiasing (e.g. F.interpolate bilinear, antialias=False)",
                )
        elif op in ("MaxPool", "AveragePool", "LpPool"):
            if op == "MaxPool" and len(node.output) > 1 and node.output[1]:
                issue("MaxPool's Indices output is not supported", "do not use return_indices")
            dilations = _attr(node, "dilations", None)
            if dilations and any(d != 1 for d in dilations):
                issue(f"{op} with dilations {dilations} is not supported", "use dilation 1")
        elif op == "LayerNormalization" and any(o for o in node.output[1:]):
            issue("LayerNormalization's Mean/InvStdDev outputs are not supported", "use only the normalized output")
        elif op == "LSTM" and (_attr(node, "input_forget", 0) or _attr(node, "layout", 0)):
            issue("LSTM with input_forget=1 or layout=1", "export with input_forget=0 and layout=0 (batch_first=False)")
        elif op == "Einsum" and "..." in (_attr(node, "equation", "") or ""):
            issue(
                f"Einsum with an ellipsis ({_attr(node, 'equation')}) is not supported before TensorRT 10.12",
                "write the equation with explicit axes, or use MatMul",
            )
        elif op in ("ScatterND", "ScatterElements") and (red := _attr(node, "reduction", "none")) != "none":
            if op == "ScatterND" or is86:
                issue(f"{op} with reduction={red} is not supported", "use reduction none")
        elif op == "Pad" and is86 and _attr(node, "mode", "constant") == "wrap":
            issue("Pad mode wrap needs TensorRT 10", "use constant/reflect/edge padding or --target trt-10")
        elif op == "Constant":
            bad = [a.name for a in node.attribute if a.name in ("sparse_value", "value_string", "value_strings")]
            if bad:
                issue(f"Constant with {bad[0]} is not supported", "use a dense numeric tensor")
        elif op == "Cast":
            to = _attr(node, "to", FLOAT)
            if to == DOUBLE:
                issue("Cast to float64 (DOUBLE): TensorRT has no float64", "export in float32 (no .double())", "double")
            elif to == INT8 and not is86:
                issue(
                    "Cast to INT8: TensorRT 10 treats INT8 as a quantized type only",
                    "express it as QuantizeLinear, or keep the tensor in int32/float",
                    "cast-int8",
                    "warning",
                )
            elif to not in _CAST_TYPES[spec.target]:
                issue(
                    f"Cast to {DTYPE_NAMES.get(to, to)} is not a TensorRT type in the {spec.title}",
                    "cast to float32/float16/int32 instead",
                    "unsupported-dtype",
                )
        elif op in ("QuantizeLinear", "DequantizeLinear"):
            out.extend(_check_qdq(g, node, label, spec))
    return [f for f in out if f is not None]


def _check_qdq(g: _Graphs, node, label: str, spec: ParserSpec) -> list[Finding]:
    out = []
    is_dq = node.op_type == "DequantizeLinear"
    if is_dq and node.input:
        data = g.weight(node.input[0])
        if data is not None and data.data_type not in spec.qdq_data_types:
            dtype = DTYPE_NAMES.get(data.data_type, str(data.data_type))
            fix = _FIX_INT32_BIAS if data.data_type == INT32 else "quantize weights to signed int8 (QuantType.QInt8)"
            allowed = "/".join(DTYPE_NAMES[t] for t in spec.qdq_data_types)
            out.append(
                Finding(
                    "blocker",
                    "qdq-dtype",
                    label,
                    f"DequantizeLinear reads the {dtype} initializer {node.input[0]}: TensorRT dequantizes only "
                    f"{allowed} data",
                    fix,
                )
            )
    if len(node.input) > 1 and node.input[1]:
        scale = g.value(node.input[1])
        if scale is not None and scale.size and not bool((np.asarray(scale, dtype=np.float64) > 0).all()):
            out.append(
                Finding(
                    "blocker",
                    "qdq-scale",
                    label,
                    f"{node.op_type} has non-positive scales",
                    "recalibrate; every scale must be > 0",
                )
            )
    if len(node.input) > 2 and node.input[2]:
        zp_t = g.weight(node.input[2])
        zp = g.value(node.input[2])
        if zp is not None and bool(np.asarray(zp).astype(np.int64).any()):
            out.append(
                Finding(
                    "blocker",
                    "qdq-zero-point",
                    label,
                    f"{node.op_type} has a non-zero zero point: TensorRT quantizes symmetrically only",
                    "quantize with ActivationSymmetric/WeightSymmetric (zero points 0)",
                )
            )
        if zp_t is not None and zp_t.data_type == UINT8 and not is_dq:
            severity = "blocker" if spec.target == "trt-8.6" else "warning"
            out.append(
                Finding(
                    severity,
                    "qdq-dtype",
                    label,
                    f"{node.op_type} quantizes to uint8; {spec.title} uses signed INT8 "
                    "(uint8 ranges above 127 saturate)",
                    "quantize activations as QuantType.QInt8 (symmetric)",
                )
            )
    return out


def _check_io(g: _Graphs, spec: ParserSpec) -> list[Finding]:
    out = []
    graph = g.model.graph
    init_names = {t.name for t in graph.initializer}
    for kind, values in (("input", [v for v in graph.input if v.name not in init_names]), ("output", graph.output)):
        for v in values:
            tt = v.type.tensor_type if v.type.HasField("tensor_type") else None
            if tt is None:
                out.append(
                    Finding(
                        "blocker",
                        "io-dtype",
                        v.name,
                        f"graph {kind} {v.name} is not a tensor",
                        "export tensors only (no sequences/maps/optionals) at the model boundary",
                    )
                )
                continue
            et = tt.elem_type
            name = DTYPE_NAMES.get(et, str(et))
            if et == INT64 and not spec.int64:
                out.append(
                    Finding(
                        "blocker",
                        "io-dtype",
                        v.name,
                        f"graph {kind} {v.name} is int64: TensorRT 8.6 has no INT64 tensors",
                        f"export the {kind} as int32 (or target trt-10)",
                    )
                )
            elif et == INT64:
                out.append(
                    Finding(
                        "info",
                        "io-dtype",
                        v.name,
                        f"graph {kind} {v.name} is int64: TensorRT 10 binds it as INT64",
                        "feed/read int64 buffers",
                    )
                )
            elif et == BOOL:
                out.append(
                    Finding(
                        "warning",
                        "io-dtype",
                        v.name,
                        f"graph {kind} {v.name} is bool: TensorRT binds BOOL, but ringfold's runtime "
                        "feeds float32 images",
                        "export the model boundary as float32",
                    )
                )
            elif et == DOUBLE:
                out.append(
                    Finding("blocker", "double", v.name, f"graph {kind} {v.name} is float64", "export in float32")
                )
            elif et not in _IO_TYPES[spec.target]:
                out.append(
                    Finding(
                        "blocker",
                        "io-dtype",
                        v.name,
                        f"graph {kind} {v.name} is {name}: not a {spec.title} binding type",
                        "export the model boundary as float32 (or int32)",
                    )
                )
            if kind != "input":
                continue
            if not tt.HasField("shape"):
                out.append(
                    Finding(
                        "blocker",
                        "dynamic-shape",
                        v.name,
                        f"input {v.name} has no shape at all",
                        "export with a fixed input shape (dynamic batch only)",
                    )
                )
                continue
            dims = list(tt.shape.dim)
            shape = [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in dims]
            dynamic = [i for i, d in enumerate(dims) if not (d.HasField("dim_value") and d.dim_value > 0)]
            other = [i for i in dynamic if i != 0]
            if other:
                out.append(
                    Finding(
                        "blocker",
                        "dynamic-shape",
                        v.name,
                        f"input {v.name} {shape} has dynamic dimension(s) {other} besides the batch axis; "
                        "a bundle has one preprocessing size",
                        "export with fixed spatial size (only the batch axis dynamic)",
                    )
                )
            if 0 in dynamic:
                out.append(
                    Finding(
                        "info",
                        "dynamic-batch",
                        v.name,
                        f"input {v.name} {shape} has a dynamic batch axis: the engine needs an optimization profile",
                        "build with a batch profile: `ringfold build-engine BUNDLE --batch min,opt,max`",
                    )
                )
    return out


def _check_weights(g: _Graphs, spec: ParserSpec) -> list[Finding]:
    out = []
    tensors: list[tuple[str, Any]] = list(g.initializers.items()) + list(g.constants.items())
    double = [name for name, t in tensors if t.data_type == DOUBLE]
    if double:
        out.append(
            Finding(
                "blocker",
                "double",
                double[0],
                f"{len(double)} float64 weight(s) ({', '.join(double[:3])}"
                f"{', …' if len(double) > 3 else ''}): TensorRT has no float64 and clamps them to float32",
                "export in float32 (call model.float() before export)",
            )
        )
    if not spec.int64:
        int64 = [name for name, t in tensors if t.data_type == INT64]
        if int64:
            out.append(
                Finding(
                    "warning",
                    "int64-weights",
                    int64[0],
                    f"{len(int64)} INT64 weight(s)/constant(s): TensorRT 8.6 casts them to INT32 "
                    "(values beyond ±2^31 are clamped; shape constants are fine)",
                    "nothing to do for shape constants; keep real int64 data within int32 range",
                )
            )
    sizes = [(name, _tensor_nbytes(t), _is_external(t)) for name, t in tensors]
    total = sum(s for _, s, _ in sizes)
    inline = sum(s for _, s, ext in sizes if not ext)
    if inline > LARGE_TOTAL_BYTES:
        out.append(
            Finding(
                "blocker",
                "model-size",
                None,
                f"{inline / 1024**3:.2f} GiB of inline weights exceed protobuf's 2 GiB limit",
                "save with external data (onnx.save_model(..., save_as_external_data=True)) "
                "and build from the file path",
            )
        )
    elif total > LARGE_TOTAL_BYTES:
        out.append(
            Finding(
                "info",
                "model-size",
                None,
                f"{total / 1024**3:.2f} GiB of weights, stored as external data",
                "keep the external data files next to the .onnx and build from its path",
            )
        )
    for name, size, _ in sizes:
        if size > LARGE_SINGLE_BYTES:
            out.append(
                Finding(
                    "warning",
                    "large-weight",
                    name,
                    f"single weight of {size / 1024**2:.0f} MiB: heavy on builder memory (Jetson)",
                    "check the builder workspace / device memory; consider int8/fp16",
                )
            )
    return out


def _check_precision_notes(g: _Graphs, spec: ParserSpec, precision: str | None) -> list[Finding]:
    out = []
    ln = [label for node, label in g.nodes if node.op_type == "LayerNormalization"]
    if precision == "fp16" and ln:
        out.append(
            Finding(
                "info",
                "fp16-layernorm",
                ln[0],
                f"{len(ln)} LayerNormalization node(s): under the FP16 builder flag TensorRT may run them in fp16 "
                "and overflow",
                "build with `ringfold build-engine --fp32-layers` (or --strongly-typed on TensorRT 10)",
            )
        )
    return out


def _grouped(findings: Iterable[Finding]) -> list[Finding]:
    """One row per (severity, code, fix) for node-level rules hit many times; blockers first."""
    groups: dict[tuple[str, str, str], list[Finding]] = defaultdict(list)
    order: list[tuple[str, str, str] | Finding] = []
    for f in findings:
        if f.code in _GROUPED_CODES:
            key = (f.severity, f.code, f.fix)
            if key not in groups:
                order.append(key)
            groups[key].append(f)
        else:
            order.append(f)
    out = []
    for item in order:
        if isinstance(item, Finding):
            out.append(item)
            continue
        first, *rest = groups[item]
        if rest:
            names = ", ".join(str(f.node) for f in rest[:3]) + (", …" if len(rest) > 3 else "")
            first = Finding(
                first.severity,
                first.code,
                first.node,
                f"{first.message} — and {len(rest)} more node(s) like it: {names}",
                first.fix,
            )
        out.append(first)
    return sorted(out, key=lambda f: _SEVERITY_RANK[f.severity])


def lint_model(path: str | Path, target: str = "trt-10", precision: str | None = None) -> list[Finding]:
    """Findings (blockers first) for one ONNX file against ``target`` (trt-8.6 | trt-10)."""
    spec = parser_spec(target)
    model = _load(Path(path))
    g = _Graphs(model)
    findings = (
        _check_versions(model, spec)
        + _check_ops(g, spec)
        + _check_node_rules(g, spec)
        + _check_io(g, spec)
        + _check_weights(g, spec)
        + _check_precision_notes(g, spec, precision)
    )
    return _grouped(findings)


def lint_bundle(
    bundle, target: str = "trt-10", precisions: Sequence[str] | str | None = None
) -> dict[str, list[Finding]]:
    """Findings per precision variant of a bundle (a :class:`Bundle` or its path); ``None``/"all": every variant."""
    from ringfold.runtime.bundle import Bundle, load_bundle

    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    parser_spec(target)
    if precisions is None or precisions == "all" or (not isinstance(precisions, str) and "all" in precisions):
        names = list(bundle.variants) or ["fp32"]
    else:
        names = [precisions] if isinstance(precisions, str) else list(dict.fromkeys(precisions))
    paths = {p: bundle.model_path(p) for p in names}  # one-line BundleError for a variant the bundle lacks
    return {p: lint_model(path, target, p) for p, path in paths.items()}


def count(findings: Iterable[Finding], severity: str) -> int:
    return sum(1 for f in findings if f.severity == severity)


def has_blocker(results: dict[str, list[Finding]]) -> bool:
    return any(count(f, "blocker") for f in results.values())


# ------------------------------------------------------------------------------------------------ report
def _cell(text: str | None) -> str:
    return (text or "—").replace("|", "\\|").replace("\n", " ")


def format_table(findings: list[Finding]) -> str:
    if not findings:
        return "no findings"
    rows = ["| severity | code | node | message | fix |", "|---|---|---|---|---|"]
    rows += [f"| {f.severity} | {f.code} | {_cell(f.node)} | {_cell(f.message)} | {_cell(f.fix)} |" for f in findings]
    return "\n".join(rows)


def format_report(bundle, target: str, results: dict[str, list[Finding]]) -> str:
    spec = parser_spec(target)
    parts = [f"TensorRT check of {bundle.path} against the {spec.title} ({target})"]
    for precision, findings in results.items():
        b, w, i = (count(findings, s) for s in SEVERITIES)
        verdict = "FAIL" if b else "ok"
        file = bundle.variants[precision].file if precision in bundle.variants else "?"
        parts.append(f"\n{precision} ({file}): {verdict} — {b} blocker(s), {w} warning(s), {i} info")
        parts.append(format_table(findings))
    return "\n".join(parts)


def to_json(bundle, target: str, results: dict[str, list[Finding]], extra: dict | None = None) -> str:
    spec = parser_spec(target)
    doc: dict[str, Any] = {
        "bundle": str(bundle.path),
        "target": target,
        "parser": spec.title,
        "passed": not has_blocker(results),
        "precisions": {
            p: {
                "file": bundle.variants[p].file if p in bundle.variants else None,
                **{f"{s}s" if s != "info" else s: count(f, s) for s in SEVERITIES},
                "findings": [x.to_dict() for x in f],
            }
            for p, f in results.items()
        },
    }
    if extra:
        doc.update(extra)
    return json.dumps(doc, indent=2)


# -------------------------------------------------------------------------------------------- polygraphy
#: atol/rtol of Polygraphy's elementwise check, TensorRT vs ONNX Runtime (CPU) on the same ONNX graph
POLYGRAPHY_TOLERANCES = {"fp32": (1e-3, 1e-3), "fp16": (2e-2, 2e-2), "int8": (1e-1, 1e-1)}


@dataclass
class PolygraphyResult:
    model: str
    precision: str
    passed: bool
    trt_version: str
    atol: float
    rtol: float
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None  # the engine could not be built or run (parser/builder error)

    def summary(self) -> str:
        if self.error:
            return f"polygraphy {self.precision}: FAIL — TensorRT {self.trt_version} could not build/run: {self.error}"
        worst = ", ".join(
            f"{name} max|Δ| {o['max_absdiff']:.3g}" if o.get("max_absdiff") is not None else name
            for name, o in self.outputs.items()
        )
        verdict = "PASS" if self.passed else "FAIL"
        return (
            f"polygraphy {self.precision}: {verdict} — TensorRT {self.trt_version} vs ONNX Runtime CPU "
            f"(atol {self.atol:g}, rtol {self.rtol:g}): {worst or 'no outputs compared'}"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cuda_device_count() -> int:
    """CUDA devices the CUDA runtime library sees (the one Polygraphy's runner loads); 0 when there is none."""
    from ringfold.runtime.trt_engine import cuda_device_count

    return cuda_device_count()


def polygraphy_missing() -> list[str]:
    """What ``--polygraphy`` lacks on this machine (empty: polygraphy, TensorRT and a CUDA device are all here)."""
    missing = []
    try:
        import polygraphy  # noqa: F401
    except ImportError:
        missing.append("polygraphy (pip install 'ringfold[trt]')")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        missing.append("TensorRT (JetPack's python3-libnvinfer, or pip install 'ringfold[tensorrt]')")
    except Exception as exc:  # a broken install: libnvinfer not found, CUDA driver mismatch
        missing.append(f"a working TensorRT (import failed: {exc.__class__.__name__})")
    if _cuda_device_count() < 1:
        missing.append("a CUDA device")
    return missing


def require_polygraphy() -> None:
    missing = polygraphy_missing()
    if missing:
        raise RingfoldError(
            "--polygraphy builds a TensorRT engine and compares it with ONNX Runtime; this machine lacks "
            + ", ".join(missing)
            + " — run it on the Jetson/GPU host, or drop --polygraphy for the static check"
        )


def _synthetic_inputs(model_path: Path, batch: int) -> dict[str, np.ndarray]:
    model = _load(model_path)
    init_names = {t.name for t in model.graph.initializer}
    rng = np.random.default_rng(0)
    feed = {}
    for v in model.graph.input:
        if v.name in init_names:
            continue
        tt = v.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else batch for d in tt.shape.dim]
        if tt.elem_type != FLOAT:
            raise RingfoldError(f"{model_path}: input {v.name} is not float32; pass inputs= to polygraphy_compare")
        feed[v.name] = rng.standard_normal(shape).astype(np.float32)
    return feed


def polygraphy_compare(
    model_path: str | Path,
    precision: str = "fp32",
    inputs: dict[str, np.ndarray] | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    max_batch: int | None = None,
) -> PolygraphyResult:
    """Build a TensorRT engine from ``model_path`` with Polygraphy and compare it against ONNX Runtime (CPU).

    ``inputs``: one feed dict (e.g. the bundle's reference pixel values); default: seeded random data at batch 2.
    The engine gets one optimization profile covering batch 1 .. ``max_batch`` (default: the feed's batch).
    Raises :class:`RingfoldError` (one line naming what is missing) without polygraphy, TensorRT or a CUDA device;
    an engine that fails to build or run gives a failed result with ``error`` set.
    """
    require_polygraphy()
    import tensorrt as trt
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from polygraphy.backend.trt import TrtRunner
    from polygraphy.comparator import Comparator, CompareFunc

    from ringfold.runtime.trt_build import BuildPlan, polygraphy_loaders
    from ringfold.runtime.trt_engine import polygraphy_log

    model_path = Path(model_path)
    feed = dict(inputs) if inputs is not None else _synthetic_inputs(model_path, batch=2)
    profile = []
    for name, array in feed.items():
        shape = tuple(int(s) for s in array.shape)
        if shape:
            top = max(shape[0], max_batch or shape[0])
            profile.append((name, (1, *shape[1:]), shape, (top, *shape[1:])))
    default_atol, default_rtol = POLYGRAPHY_TOLERANCES.get(precision.split("-")[0], POLYGRAPHY_TOLERANCES["int8"])
    atol = default_atol if atol is None else atol
    rtol = default_rtol if rtol is None else rtol
    trt_version = str(getattr(trt, "__version__", "?"))
    # the builder configuration of `ringfold build-engine` (same loaders), without its workspace cap
    plan = BuildPlan(
        onnx=model_path,
        precision=precision,
        trt_version=trt_version,
        profile=tuple(profile),
        fp16=precision == "fp16",
        int8=precision == "int8",
        source_kind=precision,
    )
    engine = polygraphy_loaders(plan).engine()
    session = SessionFromOnnx(str(model_path), providers=["CPUExecutionProvider"])
    try:
        with polygraphy_log("INFO"):  # its usual log, but on stderr: `check --json` owns stdout
            run_results = Comparator.run([TrtRunner(engine), OnnxrtRunner(session)], data_loader=[feed])
    except Exception as exc:  # parser/builder failures surface here (Polygraphy has logged the details)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "see the log above"
        return PolygraphyResult(
            str(model_path), precision, False, trt_version, atol, rtol, error=f"{exc.__class__.__name__}: {first}"
        )
    with polygraphy_log("INFO"):
        accuracy = Comparator.compare_accuracy(run_results, compare_func=CompareFunc.simple(atol=atol, rtol=rtol))
    outputs: dict[str, dict[str, Any]] = {}
    for _pair, iterations in accuracy.items():
        for iteration in iterations:
            for name, res in iteration.items():
                entry = outputs.setdefault(name, {"passed": True, "max_absdiff": None, "max_reldiff": None})
                entry["passed"] = entry["passed"] and bool(res)
                for key in ("max_absdiff", "max_reldiff"):
                    value = getattr(res, key, None)
                    if value is not None:
                        value = float(np.max(value))
                        entry[key] = value if entry[key] is None else max(entry[key], value)
    return PolygraphyResult(
        model=str(model_path),
        precision=precision,
        passed=bool(accuracy),
        trt_version=trt_version,
        atol=atol,
        rtol=rtol,
        outputs=outputs,
    )
