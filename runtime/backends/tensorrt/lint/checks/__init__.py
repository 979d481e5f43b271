"""The lint's check families, one module each, all with the signature ``check(g, spec, precision)``.

| module | what it checks |
|---|---|
| ``versions`` | the model's opset and IR version against the parser's range |
| ``ops`` | operators the parser lacks, custom-domain (e.g. ONNX Runtime contrib) ops, local functions |
| ``nodes`` | restrictions on attributes and constant inputs of ops the parser otherwise imports (Q/DQ: ``qdq``) |
| ``graph_io`` | graph input/output element types, dynamic dimensions other than the batch axis |
| ``weights`` | float64 and (for 8.6) INT64 weights, weight sizes against the 2 GiB protobuf limit |
| ``precision`` | in an fp16 variant, the nodes ringfold keeps fp32 and how to keep them fp32 in the engine |
"""

from __future__ import annotations

from ..checks import graph_io, nodes, ops, precision, versions, weights
from ..findings import Finding
from ..graph import Graphs
from ..parsers import ParserSpec

#: run in this order; the report sorts by severity and keeps this order within one
CHECKS = (versions.check, ops.check, nodes.check, graph_io.check, weights.check, precision.check)


def run_checks(g: Graphs, spec: ParserSpec, precision_name: str | None) -> list[Finding]:
    """Every family's findings for one model, in :data:`CHECKS` order (not grouped yet)."""
    return [finding for check in CHECKS for finding in check(g, spec, precision_name)]
