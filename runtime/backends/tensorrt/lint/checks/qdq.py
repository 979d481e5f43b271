"""Q/DQ rules: TensorRT quantizes symmetrically (zero points 0, scales > 0) into its own quantized types.

A rule of :mod:`.nodes` (QuantizeLinear and DequantizeLinear nodes); an INT32 bias under
DequantizeLinear, as onnxruntime's quantize_static writes by default, does not import.
"""

from __future__ import annotations

import numpy as np

from ..findings import Finding
from ..graph import Graphs, dtype_name, onnx_type, type_label
from ..parsers import ParserSpec

FIX_INT32_BIAS = (
    "re-export int8 with float biases: onnxruntime quantize_static(..., extra_options={'QuantizeBias': False}) "
    "keeps biases out of Q/DQ, the form TensorRT imports"
)


def check_node(g: Graphs, node, label: str, spec: ParserSpec) -> list[Finding]:
    out = []
    is_dq = node.op_type == "DequantizeLinear"
    if is_dq and node.input:
        data = g.weight(node.input[0])
        if data is not None and onnx_type(data.data_type) not in spec.qdq_data_types:
            is_bias = onnx_type(data.data_type) == "INT32"
            allowed = "/".join(type_label(name) for name in spec.qdq_data_types)
            out.append(
                Finding(
                    "blocker",
                    "qdq-dtype",
                    label,
                    f"DequantizeLinear reads the {dtype_name(data.data_type)} initializer {node.input[0]}: "
                    f"TensorRT dequantizes only {allowed} data",
                    FIX_INT32_BIAS if is_bias else "quantize weights to signed int8 (QuantType.QInt8)",
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
        if zp_t is not None and onnx_type(zp_t.data_type) == "UINT8" and not is_dq:
            out.append(
                Finding(
                    "blocker" if spec.target == "trt-8.6" else "warning",
                    "qdq-dtype",
                    label,
                    f"{node.op_type} quantizes to uint8; {spec.title} uses signed INT8 "
                    "(uint8 ranges above 127 saturate)",
                    "quantize activations as QuantType.QInt8 (symmetric)",
                )
            )
    return out
