"""Value kinds of ringfold's settings as argparse ``type=`` callables (the kinds themselves: ``ringfold/values.py``).

Every value is checked when the command line is parsed, before any model or bundle is loaded:
a bad value raises :class:`argparse.ArgumentTypeError`, which argparse turns into one line on
stderr (``ringfold train: error: argument --lr: ...``) and exit code 2. Nothing is coerced
silently: ``--epochs 2.5`` is an error, not 2, and ``nan``/``inf`` are never accepted.

The messages say the value given and what is allowed; argparse prefixes the option name.
The kinds and their bounds live in :mod:`ringfold.values`, which the library (``trainer/config.py``)
uses too; here each is the same kind raising argparse's error, and :func:`arg_type` gives the
``type=`` of any kind (the options generated from the config fields use it).
This module imports only the standard library, so the torch-free runtime install can use it.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from typing import Any

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
