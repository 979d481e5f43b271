"""Capture what onnx / onnxruntime log and print while ringfold converts a model, and summarise it.

The converters talk on three channels: python ``logging`` (often through the
root logger, e.g. onnxruntime.quantization's ``logging.warning("Bias of Gemm
node '…' is not constant …")`` once per node), ``warnings.warn`` and plain
``print``. Raw, that is dozens of lines per export that a user cannot act on
and that bury ringfold's own messages. Inside :func:`captured_library_log`
they are collected instead, node names stripped so one message per cause
remains, and the counts go to the variant's manifest entry and the export
report. Records below WARNING pass through untouched (they are not printed
unless the user asked for them), and everything is restored on exit.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

#: quoted names ('…', "…", `…`) in library messages: node and tensor names, different per node
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|`[^`]*`")
_MAX_MESSAGE = 200


def normalise(message: str) -> str:
    """One line per cause: first line only, quoted names replaced by '…', whitespace collapsed, capped."""
    lines = str(message).strip().splitlines()
    text = " ".join(_QUOTED.sub("'…'", lines[0] if lines else "").split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


@dataclass
class LibraryLog:
    """What the libraries said inside one :func:`captured_library_log` block."""

    warnings: Counter[str] = field(default_factory=Counter)  #: logging records ≥ WARNING and warnings.warn
    printed: Counter[str] = field(default_factory=Counter)  #: lines written to sys.stdout (progress chatter)

    def summary(self) -> dict[str, Any]:
        """JSON-ready counts for the manifest; empty when the libraries were quiet."""
        out: dict[str, Any] = {}
        if self.warnings:
            out["warnings"] = dict(self.warnings.most_common())
        if self.printed:
            out["printed"] = dict(self.printed.most_common())
        return out


class _Collector(logging.Handler):
    def __init__(self, log: LibraryLog) -> None:
        super().__init__(level=logging.WARNING)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a library's malformed format string must not break the export
            text = str(record.msg)
        self.log.warnings[normalise(f"{record.levelname}: {text}")] += 1


class _BelowWarning(logging.Filter):
    """Put on the root logger's other handlers: what the collector takes is not also printed."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


@contextlib.contextmanager
def captured_library_log() -> Iterator[LibraryLog]:
    """Collect logging records ≥ WARNING, warnings and stdout prints made inside the block into a LibraryLog.

    The collector sits on the root logger, where the libraries' records end up
    (and its presence stops ``logging.warning`` from installing a stderr
    handler of its own via ``basicConfig``).
    """
    log = LibraryLog()
    root = logging.getLogger()
    collector, quiet = _Collector(log), _BelowWarning()
    others = list(root.handlers)
    stdout = io.StringIO()
    for handler in others:
        handler.addFilter(quiet)
    root.addHandler(collector)
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(stdout):
            try:
                yield log
            finally:
                for w in caught:
                    log.warnings[normalise(f"{w.category.__name__}: {w.message}")] += 1
    finally:
        root.removeHandler(collector)
        for handler in others:
            handler.removeFilter(quiet)
        for line in stdout.getvalue().splitlines():
            if line.strip():
                log.printed[normalise(line)] += 1
