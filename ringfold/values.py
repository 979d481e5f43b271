"""Value kinds of ringfold's settings and their bounds: one table for the library and the command line.

A kind parses a text value (``positive_int("8")``) and, for numbers, bounds a stored one
(``positive_int.problem(0)``). ``trainer/config.py`` bounds its fields with these kinds, so a value
read from a file or built in Python meets the same rule as the command line's; the CLI
(``ringfold/cli_types.py``) turns each kind into an argparse ``type=`` with :func:`ringfold.cli_types.arg_type`.

Nothing is coerced silently: ``"2.5"`` is not an integer, and ``nan``/``inf`` are never accepted.
A bad text value raises :class:`ValueKindError` whose message says the value given and what is
allowed ("0 is not a positive integer (give 1 or more)"); the CLI prefixes the option name.

Standard library only (no argparse, no torch): the library and the torch-free runtime install import it.
"""

from __future__ import annotations

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


class ValueKindError(ValueError):
    """A text value that is not of its kind; the message is one line: the value given and what is allowed."""


def _shown(text: str) -> str:
    """The value as the user typed it; quoted when it would otherwise be invisible or span lines."""
    if not text or text != text.strip() or any(ch.isspace() or not ch.isprintable() for ch in text):
        return repr(text)
    return text


def _as_int(text: str, what: str, allowed: str) -> int:
    """``int(text)``, or a ValueKindError saying ``text is not WHAT (ALLOWED)``."""
    try:
        return int(text)
    except (TypeError, ValueError):
        raise ValueKindError(f"{_shown(text)} is not {what} ({allowed})") from None


def _as_float(text: str, what: str, allowed: str) -> float:
    """``float(text)`` when finite, else a ValueKindError: nan and inf are never meaningful settings."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise ValueKindError(f"{_shown(text)} is not {what} ({allowed})")
    return value


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


class Number:
    """A kind of number: ``kind(text)`` parses a text value, ``kind.problem(value)`` checks a stored one.

    One table of bounds for the CLI (an option's value) and for the library (a config field read
    from a file or built in Python: ``problem`` says what is wrong in field terms, "must be >= 0,
    got -1", or None).
    """

    def __init__(
        self,
        name: str,
        cast: type,
        what: str,
        allowed: str,
        low: float | None = None,
        high: float | None = None,
        *,
        low_open: bool = False,
        high_open: bool = False,
        doc: str = "",
    ) -> None:
        self.__name__ = name  # argparse names a type by it
        self.__doc__ = doc
        self.cast, self.what, self.allowed = cast, what, allowed
        self.low, self.high, self.low_open, self.high_open = low, high, low_open, high_open

    def __repr__(self) -> str:
        return f"<value kind {self.__name__}: {self.bounds or 'any finite number'}>"

    @property
    def bounds(self) -> str:
        """'>= 1', '> 0', '>= 0 and < 1', or '' when any finite value is fine."""
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {_number(self.low)}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {_number(self.high)}")
        return " and ".join(parts)

    def problem(self, value: object) -> str | None:
        """What is wrong with a stored value (its type already checked), or None."""
        if self.cast is float and not math.isfinite(value):  # type: ignore[arg-type]
            return f"must be a finite number, got {value}"
        low, high = self.low, self.high
        too_low = low is not None and (value < low or (self.low_open and value == low))  # type: ignore[operator]
        too_high = high is not None and (value > high or (self.high_open and value == high))  # type: ignore[operator]
        return f"must be {self.bounds}, got {value}" if too_low or too_high else None

    def __call__(self, text: str):
        """The value of ``text``, or a ValueKindError saying the value and what is allowed."""
        if self.cast is int:
            value = _as_int(text, self.what, self.allowed)
        else:
            value = _as_float(text, self.what, self.allowed)
        if self.problem(value):
            raise ValueKindError(f"{_shown(text)} is not {self.what} ({self.allowed})")
        return value


positive_int = Number(
    "positive_int",
    int,
    "a positive integer",
    "give 1 or more",
    1,
    doc="A count that must be at least 1 (``--top-k``, ``--runs``, ``--batch-size``, ``--rank`` ...): "
    "zero of these would make an empty batch, an empty benchmark or a zero-width adapter.",
)
non_negative_int = Number(
    "non_negative_int",
    int,
    "a non-negative integer",
    "give 0 or more",
    0,
    doc="A count where 0 is meaningful (``--warmup 0``: no warm-up; ``--shots 0``: all images).",
)
seed = Number(
    "seed",
    int,
    "a valid seed",
    f"give an integer from 0 to {MAX_SEED}",
    0,
    MAX_SEED,
    doc="A random seed: 0 .. 2**32-1, the range Python, NumPy and torch generators all accept.",
)
opset = Number(
    "opset",
    int,
    "a supported ONNX opset",
    f"give {MIN_OPSET} to {MAX_OPSET}; 17 suits Jetson TensorRT",
    MIN_OPSET,
    MAX_OPSET,
    doc="An ONNX opset the exporter can write (see :data:`MIN_OPSET` and :data:`MAX_OPSET`).",
)
finite_float = Number(
    "finite_float",
    float,
    "a finite number",
    "give a number such as 1.0 or 1e-3",
    doc="Any finite number (``--scale`` may be negative or zero, but not nan/inf).",
)
positive_float = Number(
    "positive_float",
    float,
    "a positive number",
    "give a finite number above 0, e.g. 2e-3",
    0,
    low_open=True,
    doc="A finite number above 0 (``--lr``): zero would train nothing, a negative one would ascend.",
)
non_negative_float = Number(
    "non_negative_float",
    float,
    "a non-negative number",
    "give a finite number, 0 or more",
    0,
    doc="A finite number of 0 or more (``--weight-decay``, ``--warmup-epochs``, ``--max-abs-logit``).",
)
unit_interval = Number(
    "unit_interval",
    float,
    "a fraction",
    "give a number from 0 to 1",
    0,
    1,
    doc="A fraction from 0 to 1 inclusive (``--min-top1``: top-1 agreement).",
)
dropout_rate = Number(
    "dropout_rate",
    float,
    "a dropout probability",
    "give a number from 0 up to, not including, 1",
    0,
    1,
    high_open=True,
    doc="A dropout probability in [0, 1): at 1 every bottleneck activation is dropped and nothing is learned.",
)
cosine = Number(
    "cosine",
    float,
    "a cosine similarity",
    "give a number from -1 to 1",
    -1,
    1,
    doc="A cosine similarity bound, -1 to 1 inclusive (``--min-cosine``); outside it no pair could pass or fail.",
)


def _int_entries(text: str, allowed: str, max_entries: int) -> list[int]:
    """The comma-separated positive integers of ``text``; empty entries and non-integers are errors."""
    entries = text.split(",")
    if len(entries) > max_entries:
        raise ValueKindError(f"{_shown(text)} has {len(entries)} entries, too many ({allowed})")
    values = []
    for entry in entries:
        if not entry.strip():
            raise ValueKindError(f"{_shown(text)} has an empty entry ({allowed})")
        # name the bad entry, and the whole value too when it has more than one
        where = _shown(entry) if len(entries) == 1 else f"{_shown(text)}: entry {_shown(entry.strip())}"
        try:
            value = int(entry)
        except ValueError:
            raise ValueKindError(f"{where} is not an integer ({allowed})") from None
        if value < 1:
            raise ValueKindError(f"{where} is not a positive integer ({allowed})")
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
        raise ValueKindError(f"{_shown(text)} has {len(values)} entries, not 3 ({allowed})")
    low, opt, high = values
    if not low <= opt <= high:
        raise ValueKindError(f"{_shown(text)} is not ordered min <= opt <= max ({allowed})")
    return low, opt, high


def ring_ranks(text: str) -> tuple[int, int, int]:
    """AdaRing tensor-ring ranks ``R0,R1,R2`` (``--fine-ranks``, ``--ranks``): three positive integers."""
    allowed = "give three positive integers R0,R1,R2, e.g. 2,4,2"
    values = _int_entries(text, allowed, 3)
    if len(values) != 3:
        raise ValueKindError(f"{_shown(text)} has {len(values)} entries, not 3 ({allowed})")
    return values[0], values[1], values[2]


def name_list(text: str) -> tuple[str, ...]:
    """A comma list of names (``--towers visual,text``); which names are allowed is the config's to say."""
    names = tuple(part.strip() for part in text.split(","))
    if not all(names):
        raise ValueKindError(f"{_shown(text)} has an empty entry (give names separated by commas)")
    return names
