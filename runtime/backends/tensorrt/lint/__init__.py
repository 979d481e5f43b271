"""``ringfold check``: will TensorRT's ONNX parser take this bundle? A static lint, no GPU and no TensorRT needed.

Every ONNX graph of a bundle is checked against what the TensorRT ONNX parser
(onnx-tensorrt) of the target release accepts:

- ``trt-8.6`` — TensorRT 8.6 (JetPack 6.0): opsets 7–17, no INT64 tensors
  (INT64 weights are cast down to INT32), INT8-only Q/DQ.
- ``trt-10`` — TensorRT 10.0–10.3 (JetPack 6.1/6.2): opsets 9–20, native
  INT64, INT8/FP8/INT4 Q/DQ. Operators that only later 10.x releases added
  are reported with the release that has them.
- ``trt-11`` — TensorRT 11.x (JetPack ≥ 7.2.2, desktop): the 10.x parser with
  every later 10.x operator, always strongly typed (the ONNX's types are the
  engine's precisions: no FP16/INT8 flags, no calibrator).

What is judged is every graph TensorRT gets (``subjects.py``): the precision
variants the precision table sends to TensorRT, the raw-pixel models and the
text tower; int8-dynamic (ONNX Runtime CPU only) is listed, never failed.

The package, in reading order:

- ``ops/trt-*.json`` — what each parser imports (operators, types, opsets), as data;
  ``ops/README.md`` gives the fields and the sources. ``parsers.py`` loads them.
- ``graph.py`` — the model read once: nodes of every subgraph, weights, constants.
- ``checks/`` — one module per check family (opset/IR, operators, node rules, Q/DQ,
  graph I/O, weights, fp16 precision); each returns :class:`Finding` rows.
- ``findings.py`` — the Finding row and how many-node rules fold into one.
- ``subjects.py`` — which graphs of a bundle TensorRT gets, read from the precision table.
- ``lint.py`` — :func:`lint_model` (one ONNX file) and :func:`lint_bundle` (every graph).
- ``report.py`` — the markdown table and the JSON of ``ringfold check [--json]``.
- ``bundle_check.py`` — :func:`check_bundle`: the verdict of ``ringfold check`` (exit 0 / 1).
- ``compare.py`` — ``--polygraphy``: build the engine and compare it with ONNX Runtime.

A lint is not the parser: a clean report means "nothing known to fail", and
``--polygraphy`` (TensorRT + CUDA machines) builds and runs the engine.

Torch-free: imports numpy, and onnx only when a graph is read (``ringfold[check]``).
"""

from __future__ import annotations

from .bundle_check import CheckResult, check_bundle
from .compare import POLYGRAPHY_TOLERANCES, PolygraphyResult, polygraphy_compare, polygraphy_missing, require_polygraphy
from .findings import SEVERITIES, Finding, count, has_blocker
from .lint import lint_bundle, lint_model
from .parsers import PARSERS, TARGETS, OpSupport, ParserSpec, parser_spec
from .report import format_report, format_table, to_json
from .subjects import Subject, bundle_subjects, for_tensorrt

__all__ = [
    "CheckResult",
    "PARSERS",
    "POLYGRAPHY_TOLERANCES",
    "SEVERITIES",
    "Subject",
    "TARGETS",
    "Finding",
    "OpSupport",
    "ParserSpec",
    "PolygraphyResult",
    "bundle_subjects",
    "check_bundle",
    "count",
    "format_report",
    "for_tensorrt",
    "format_table",
    "has_blocker",
    "lint_bundle",
    "lint_model",
    "parser_spec",
    "polygraphy_compare",
    "polygraphy_missing",
    "require_polygraphy",
    "to_json",
]
