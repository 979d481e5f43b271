"""Value kinds of ringfold's settings as argparse ``type=`` callables (the kinds themselves: ``ringfold/values.py``).

Every value is checked when the command line is parsed, before any model or bundle is loaded:
a bad value raises :class:`argparse.ArgumentTypeError`, which argparse turns into one line on
stderr (``ringfold train: error: argument --lr: ...``) and exit code 2. Nothing is coerced
silently: ``--epochs 2.5`` is an error, not 2, and ``nan``/``inf`` are never accepted.

The messages say the value given and what is allowed; argparse prefixes the option name.
The kinds and their bounds live in :mod:`ringfold.values`, which the library (``trainer/config.py``)
uses too; here each is the same kind raising argparse's error, and :func:`arg_type` gives the
``type=`` of any kind (the options generated from the config fields use it).
This module imports only the standard library and the runtime's stdlib-only rules (TensorRT versions, GPU and
Triton model names), so the torch-free runtime install can use it.
"""

from __future__ import annotations

import argparse
import functools
import re
from collections.abc import Callable
from typing import Any

from ringfold.runtime.backends.tensorrt.stack import MIN_TRT
from ringfold.runtime.bundle.engines import parse_version, slug
from ringfold.runtime.deploy.triton_config import is_model_name

from . import values as V
from .values import MAX_LIST_ENTRIES, MAX_OPSET, MAX_SEED, MIN_OPSET, ValueKindError

__all__ = [
    "MAX_LIST_ENTRIES",
    "MAX_OPSET",
    "MAX_SEED",
    "MIN_OPSET",
    "Number",
    "arg_type",
    "batch_profile",
    "cosine",
    "dropout_rate",
    "finite_float",
    "name_list",
    "non_negative_float",
    "non_negative_int",
    "opset",
    "positive_float",
    "positive_int",
    "positive_int_list",
    "ring_ranks",
    "seed",
    "unit_interval",
]


class Number(V.Number):
    """A :class:`ringfold.values.Number` as an argparse ``type=``: a bad value is an ArgumentTypeError (one line)."""

    @classmethod
    def of(cls, kind: V.Number) -> Number:
        """The command line's copy of ``kind``: the same name, bounds and messages."""
        number = cls.__new__(cls)
        number.__dict__.update(vars(kind))
        return number

    def __call__(self, text: str):
        try:
            return super().__call__(text)
        except ValueKindError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None


def _parser_of(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """``kind`` as an argparse ``type=``: its ValueKindError becomes an ArgumentTypeError."""

    @functools.wraps(kind)
    def parse(text: str) -> Any:
        try:
            return kind(text)
        except ValueKindError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


positive_int = Number.of(V.positive_int)
non_negative_int = Number.of(V.non_negative_int)
seed = Number.of(V.seed)
opset = Number.of(V.opset)
finite_float = Number.of(V.finite_float)
positive_float = Number.of(V.positive_float)
non_negative_float = Number.of(V.non_negative_float)
unit_interval = Number.of(V.unit_interval)
dropout_rate = Number.of(V.dropout_rate)
cosine = Number.of(V.cosine)
positive_int_list = _parser_of(V.positive_int_list)
batch_profile = _parser_of(V.batch_profile)
ring_ranks = _parser_of(V.ring_ranks)
name_list = _parser_of(V.name_list)

#: each kind of :mod:`ringfold.values` → its argparse ``type=`` here
_ARG_TYPES: dict[Callable[[str], Any], Callable[[str], Any]] = {
    getattr(V, name): globals()[name]
    for name in __all__
    if name not in ("Number", "arg_type") and callable(globals()[name])
}


def arg_type(kind: Callable[[str], Any] | None) -> Callable[[str], Any] | None:
    """The argparse ``type=`` of a value kind: a :mod:`ringfold.values` kind → its copy here, None → None.

    The config fields (``trainer/config.py``) carry :mod:`ringfold.values` kinds, which raise
    ValueKindError; an option generated from a field uses ``type=arg_type(kind)``, so that argparse
    prints the kind's own message ("argument --lr: 0 is not a positive number ...").
    """
    if kind is None:
        return None
    if kind in _ARG_TYPES:
        return _ARG_TYPES[kind]
    if any(kind is cli_kind for cli_kind in _ARG_TYPES.values()):
        return kind  # already an argparse type of this module
    return _parser_of(kind)


# ------------------------------------------------------------------------------- TensorRT and Triton
def trt_version_arg(text: str) -> str:
    """``--trt-version``: MAJOR.MINOR[.PATCH…] of a TensorRT ringfold supports (8.6 or newer)."""
    if not re.fullmatch(r"\d{1,3}(\.\d{1,5}){1,3}", text):
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a TensorRT version (e.g. 8.6.2 or 10.3)")
    if parse_version(text) < MIN_TRT:
        raise argparse.ArgumentTypeError(f"{text} is older than TensorRT 8.6, the oldest ringfold supports")
    return text


def compute_capability_arg(text: str) -> str:
    """``--sm``: a CUDA compute capability, MAJOR.MINOR as the CUDA runtime reports it (Orin: 8.7)."""
    if not re.fullmatch(r"\d{1,2}\.\d{1,2}", text):
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a compute capability (MAJOR.MINOR, e.g. 8.7)")
    return text


def gpu_name_arg(text: str) -> str:
    """``--gpu``: the CUDA device name (``Orin``, ``NVIDIA GeForce RTX 4090``); printable, at most 256 characters."""
    name = text.strip()
    if not name or len(name) > 256 or not name.isprintable() or not slug(name):
        raise argparse.ArgumentTypeError(
            f"{text[:40]!r} is not a GPU name (the CUDA device name, e.g. Orin or 'NVIDIA GeForce RTX 4090')"
        )
    return name


def model_name_arg(text: str) -> str:
    """``--name``: a Triton model (folder) name: letters, digits, ``_ . -``, at most 100 characters."""
    if not is_model_name(text):
        raise argparse.ArgumentTypeError(
            f"{text[:40]!r} is not a Triton model name (letters, digits, _ . -; starting with a letter or digit)"
        )
    return text
