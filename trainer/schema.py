"""Annotation-driven checks for the run directory's records: the dataclass annotations are the schema.

``run.json``, ``adapter_config.json`` and the training config are dataclasses; these helpers
check a JSON mapping against their annotated field types (``bool`` is not an ``int``, a float
is finite, a tuple is a JSON list), naming the file, the dotted field and the fix in one line.
Training-side only: the torch-free runtime reads its formats with
:class:`ringfold.runtime.base.fields.Fields`, whose ``read_json`` and ``one_line`` these reuse.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ringfold.errors import RingfoldError
from ringfold.runtime.base.fields import one_line

_MISSING: Any = object()


def short_repr(value: Any, limit: int = 60) -> str:
    text = one_line(repr(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def json_type(value: Any) -> str:
    """The JSON-ish name of a value's type, for messages."""
    names = {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "mapping", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def is_number(value: Any) -> bool:
    """An int or float (NaN/Inf included), never a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_PLURAL = {bool: "booleans", int: "integers", float: "finite numbers", str: "strings", dict: "mappings"}


def describe_type(hint: Any) -> str:
    """'a list of strings', 'an integer or null', ... for an annotation."""
    if hint is Any:
        return "any value"
    if hint is None or hint is type(None):
        return "null"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        named = [describe_type(a) for a in args if a is not type(None)]
        return " or ".join(named + (["null"] if type(None) in args else []))
    simple = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}
    if hint in simple:
        return simple[hint]
    if hint is dict or origin in (dict, Mapping):
        return "a mapping"
    if hint in (list, tuple) or origin in (list, tuple, Sequence):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} {_PLURAL.get(args[0], 'values')}"
        item = args[0] if args else Any
        return f"a list of {_PLURAL.get(item, 'values')}"
    return getattr(hint, "__name__", str(hint))


def matches_type(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits an annotation: bool is not an int, a float is finite, a tuple is a JSON list."""
    if hint is Any:
        return True
    if hint is None or hint is type(None):
        return value is None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(matches_type(value, a) for a in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return is_number(value) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if hint is dict or origin in (dict, Mapping):
        if not isinstance(value, dict):
            return False
        key_hint, value_hint = args if args else (Any, Any)
        return all(matches_type(k, key_hint) and matches_type(v, value_hint) for k, v in value.items())
    if hint in (list, tuple) or origin in (list, tuple, Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(matches_type(v, a) for v, a in zip(value, args, strict=True))
        item = args[0] if args else Any
        return all(matches_type(v, item) for v in value)
    return isinstance(hint, type) and isinstance(value, hint)


def field_error(path: Path | str, name: str, problem: str, fix: str) -> RingfoldError:
    """``PATH: field NAME PROBLEM; FIX`` as one line."""
    return RingfoldError(one_line(f"{path}: field {name} {problem}; {fix}"))


def check_type(value: Any, hint: Any, path: Path | str, name: str, fix: str) -> Any:
    if not matches_type(value, hint):
        raise field_error(path, name, f"must be {describe_type(hint)}, got {json_type(value)}", fix)
    return value


def get_field(
    d: Mapping[str, Any], key: str, hint: Any, path: Path | str, fix: str, *, prefix: str = "", default: Any = _MISSING
) -> Any:
    """``d[key]`` checked against ``hint``; a missing key is an error unless ``default`` is given."""
    if key not in d:
        if default is _MISSING:
            raise field_error(path, prefix + key, "is missing", fix)
        return default
    return check_type(d[key], hint, path, prefix + key, fix)


def check_choice(value: Any, choices: Sequence[str], path: Path | str, name: str, fix: str) -> str:
    if value not in choices:
        raise field_error(path, name, f"must be one of {', '.join(choices)}, got {short_repr(value)}", fix)
    return value


def check_dataclass_fields(
    cls: type, d: Any, path: Path | str, fix: str, *, prefix: str = "", required: bool = True
) -> dict[str, Any]:
    """Check a JSON mapping against a dataclass's annotated field types: no unknown keys, optionally all present."""
    where = prefix.rstrip(".") or "the file"
    if not isinstance(d, dict):
        if prefix:
            raise field_error(path, where, f"must be a mapping, got {json_type(d)}", fix)
        raise RingfoldError(one_line(f"{path}: must hold a JSON mapping, got {json_type(d)}; {fix}"))
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise field_error(path, prefix + str(unknown[0]), f"is unknown (known: {', '.join(names)})", fix)
    for name in names:
        if name in d:
            check_type(d[name], hints[name], path, prefix + name, fix)
        elif required:
            raise field_error(path, prefix + name, "is missing", fix)
    return d
