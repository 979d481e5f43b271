"""argparse ``type=`` callables for the ``ringfold`` command's numeric and list options.

Every value is checked when the command line is parsed, before any model or bundle is loaded:
a bad value raises :class:`argparse.ArgumentTypeError`, which argparse turns into one line on
stderr (``ringfold train: error: argument --lr: ...``) and exit code 2. Nothing is coerced
silently: ``--epochs 2.5`` is an error, not 2, and ``nan``/``inf`` are never accepted.

The messages say the value given and what is allowed; argparse prefixes the option name.
This module imports only the standard library, so the torch-free runtime install can use it.
"""

from __future__ import annotations

import argparse
import math

#: ONNX opsets ``ringfold export`` accepts. 13 is the first with per-channel
#: QuantizeLinear/DequantizeLinear, which the int8 variants and TensorRT's explicit
#: quantization need; 17 (the default, ``DEFAULT_OPSET``) is the first with a native
#: LayerNormalization, which Jetson TensorRT 8.6/10.x parse; 20 is the newest that
#: torch's TorchScript exporter (``dynamo=False``, which ``exporter/onnx_export.py`` uses)
#: supports (``ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET``; above it torch only warns that the
#: opset is unsupported). Literals, so that parsing the command line does not import torch.
MIN_OPSET = 13
MAX_OPSET = 20

#: Most entries a comma list (``--batch-sizes``) may have: more is a typo, not a benchmark plan.
MAX_LIST_ENTRIES = 64

#: Largest seed: the 32-bit range every RNG the trainer seeds (Python, NumPy, torch) accepts.
MAX_SEED = 2**32 - 1


def _shown(text: str) -> str:
    """The value as the user typed it; quoted when it would otherwise be invisible or span lines."""
    if not text or text != text.strip() or any(ch.isspace() or not ch.isprintable() for ch in text):
        return repr(text)
    return text


def _as_int(text: str, what: str, allowed: str) -> int:
    """``int(text)``, or an ArgumentTypeError saying ``text is not WHAT (ALLOWED)``."""
    try:
        return int(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{_shown(text)} is not {what} ({allowed})") from None


def _as_float(text: str, what: str, allowed: str) -> float:
    """``float(text)`` when finite, else an ArgumentTypeError: nan and inf are never meaningful settings."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{_shown(text)} is not {what} ({allowed})")
    return value


def _bounded_int(text: str, what: str, allowed: str, low: int, high: int | None = None) -> int:
    value = _as_int(text, what, allowed)
    if value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"{_shown(text)} is not {what} ({allowed})")
    return value


def positive_int(text: str) -> int:
    """A count that must be at least 1 (``--top-k``, ``--runs``, ``--batch-size``, ``--rank`` ...).

    Zero of these would make an empty batch, an empty benchmark or a zero-width adapter.
    """
    return _bounded_int(text, "a positive integer", "give 1 or more", 1)


def non_negative_int(text: str) -> int:
    """A count where 0 is meaningful (``--warmup 0``: no warm-up; ``--shots 0``: all images)."""
    return _bounded_int(text, "a non-negative integer", "give 0 or more", 0)


def seed(text: str) -> int:
    """A random seed: 0 .. 2**32-1, the range Python, NumPy and torch generators all accept."""
    return _bounded_int(text, "a valid seed", f"give an integer from 0 to {MAX_SEED}", 0, MAX_SEED)


def opset(text: str) -> int:
    """An ONNX opset the exporter can write (see :data:`MIN_OPSET` and :data:`MAX_OPSET`)."""
    return _bounded_int(
        text,
        "a supported ONNX opset",
        f"give {MIN_OPSET} to {MAX_OPSET}; 17 suits Jetson TensorRT",
        MIN_OPSET,
        MAX_OPSET,
    )


def finite_float(text: str) -> float:
    """Any finite number (``--scale`` may be negative or zero, but not nan/inf)."""
    return _as_float(text, "a finite number", "give a number such as 1.0 or 1e-3")


def positive_float(text: str) -> float:
    """A finite number above 0 (``--lr``): zero would train nothing, a negative one would ascend."""
    allowed = "give a finite number above 0, e.g. 2e-3"
    value = _as_float(text, "a positive number", allowed)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{_shown(text)} is not a positive number ({allowed})")
    return value


def non_negative_float(text: str) -> float:
    """A finite number of 0 or more (``--weight-decay``, ``--warmup-epochs``, ``--max-abs-logit``)."""
    allowed = "give a finite number, 0 or more"
    value = _as_float(text, "a non-negative number", allowed)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{_shown(text)} is not a non-negative number ({allowed})")
    return value


def unit_interval(text: str) -> float:
    """A fraction from 0 to 1 inclusive (``--min-top1``: top-1 agreement)."""
    allowed = "give a number from 0 to 1"
    value = _as_float(text, "a fraction", allowed)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{_shown(text)} is not a fraction ({allowed})")
    return value


def dropout_rate(text: str) -> float:
    """A dropout probability in [0, 1): at 1 every bottleneck activation is dropped and nothing is learned."""
    allowed = "give a number from 0 up to, not including, 1"
    value = _as_float(text, "a dropout probability", allowed)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{_shown(text)} is not a dropout probability ({allowed})")
    return value


def cosine(text: str) -> float:
    """A cosine similarity bound, -1 to 1 inclusive (``--min-cosine``); outside it no pair could pass or fail."""
    allowed = "give a number from -1 to 1"
    value = _as_float(text, "a cosine similarity", allowed)
    if not -1 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{_shown(text)} is not a cosine similarity ({allowed})")
    return value


def _int_entries(text: str, allowed: str, max_entries: int) -> list[int]:
    """The comma-separated positive integers of ``text``; empty entries and non-integers are errors."""
    entries = text.split(",")
    if len(entries) > max_entries:
        raise argparse.ArgumentTypeError(f"{_shown(text)} has {len(entries)} entries, too many ({allowed})")
    values = []
    for entry in entries:
        if not entry.strip():
            raise argparse.ArgumentTypeError(f"{_shown(text)} has an empty entry ({allowed})")
        # name the bad entry, and the whole value too when it has more than one
        where = _shown(entry) if len(entries) == 1 else f"{_shown(text)}: entry {_shown(entry.strip())}"
        try:
            value = int(entry)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{where} is not an integer ({allowed})") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{where} is not a positive integer ({allowed})")
        values.append(value)
    return values


def positive_int_list(text: str) -> list[int]:
    """A comma list of positive integers such as ``1,2,4,8`` (``--batch-sizes``).

    Repeats are dropped, keeping the first occurrence's place, so a benchmark never measures
    the same batch size twice; the order given is otherwise kept (it is the report's order).
    """
    allowed = f"give a comma list of up to {MAX_LIST_ENTRIES} positive integers, e.g. 1,2,4,8"
    values = _int_entries(text, allowed, MAX_LIST_ENTRIES)
    return list(dict.fromkeys(values))


def batch_profile(text: str) -> tuple[int, int, int]:
    """A TensorRT optimisation profile ``min,opt,max`` (``--batch``): three positive ints, min <= opt <= max.

    TensorRT rejects any other ordering only when the engine is built, minutes later.
    """
    allowed = "give min,opt,max with 1 <= min <= opt <= max, e.g. 1,8,16"
    values = _int_entries(text, allowed, 3)
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"{_shown(text)} has {len(values)} entries, not 3 ({allowed})")
    low, opt, high = values
    if not low <= opt <= high:
        raise argparse.ArgumentTypeError(f"{_shown(text)} is not ordered min <= opt <= max ({allowed})")
    return low, opt, high
