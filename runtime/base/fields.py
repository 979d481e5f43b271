"""Typed reads from JSON a stranger wrote, and paths that must stay inside a folder.

Every format ringfold reads from disk (bundle manifest, labels, engine index,
…) goes through :class:`Fields`, so a wrong type, a missing key or an
out-of-range number is always a one-line error naming the file, the dotted
field and the fix, never a ``KeyError`` three calls later or a silent
coercion (``bool`` is not accepted as an ``int``, ``"3"`` is not a number).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from ringfold.errors import RingfoldError

_MISSING: Any = object()
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def read_json(
    path: Path, fix: str, max_bytes: int, error: type[RingfoldError] = RingfoldError, allow_nan: bool = False
) -> Any:
    """Parse a JSON file no larger than ``max_bytes``, nested no deeper than Python's recursion limit.

    NaN/Infinity literals are refused unless ``allow_nan`` (Python's json writes them, so a record
    ringfold wrote about a diverged run may hold one; a bundle never does).
    """
    if not path.is_file():
        raise error(f"{path}: missing; {fix}")
    size = path.stat().st_size
    if size > max_bytes:
        raise error(f"{path}: {size:,} bytes, over the {max_bytes:,}-byte limit for this file; {fix}")
    try:
        text = path.read_bytes().decode("utf-8")
        return json.loads(text) if allow_nan else json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        reason = " ".join(str(exc).split())[:120]
        raise error(f"{path}: not valid JSON ({reason}); {fix}") from None


class Fields:
    """A JSON object plus where it came from; typed getters raise ``error`` naming file and field."""

    def __init__(
        self, data: Any, file: Path, fix: str, where: str = "", error: type[RingfoldError] = RingfoldError
    ) -> None:
        self.file, self.fix, self.where, self.error = file, fix, where, error
        if not isinstance(data, Mapping):
            raise self.fail(f"must be a JSON object, got {_type_name(data)}")
        self.data = data

    # ------------------------------------------------------------------------------------------- errors
    def name(self, key: str | int | None = None) -> str:
        if key is None:
            return self.where or "(top level)"
        key = f"[{key}]" if isinstance(key, int) else str(key)
        if not self.where:
            return key
        return f"{self.where}{key}" if key.startswith("[") else f"{self.where}.{key}"

    def fail(self, problem: str, key: str | int | None = None) -> RingfoldError:
        text = f"{self.file}: field {self.name(key)} {problem}; {self.fix}"
        return self.error(" ".join(text.splitlines()))

    # ------------------------------------------------------------------------------------------ getters
    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        if key not in self.data:
            if default is _MISSING:
                raise self.fail("is missing", key)
            return default
        return self.data[key]

    def section(self, key: str, default: Any = _MISSING) -> Fields | None:
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, Mapping):
            raise self.fail(f"must be a JSON object, got {_type_name(value)}", key)
        return Fields(value, self.file, self.fix, self.name(key), self.error)

    def string(
        self,
        key: str,
        default: Any = _MISSING,
        *,
        choices: tuple[str, ...] | None = None,
        max_len: int = 1_000,
        check: Callable[[str], str | None] | None = None,
    ) -> str:
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, str):
            raise self.fail(f"must be a string, got {_type_name(value)}", key)
        if choices is not None and value not in choices:
            raise self.fail(f"is {value[:60]!r}, not one of {', '.join(choices)}", key)
        if not value or len(value) > max_len or "\0" in value:
            raise self.fail(f"must be a non-empty string of at most {max_len} characters", key)
        problem = check(value) if check else None
        if problem:
            raise self.fail(problem, key)
        return value

    def integer(self, key: str, default: Any = _MISSING, *, lo: int | None = None, hi: int | None = None) -> int:
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value
        return self.check_integer(value, key, lo, hi)

    def check_integer(self, value: Any, key: str | int, lo: int | None = None, hi: int | None = None) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(f"must be an integer, got {_type_name(value)}", key)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            bounds = f"{'-∞' if lo is None else lo}..{'∞' if hi is None else hi}"
            raise self.fail(f"is {value}, outside {bounds}", key)
        return value

    def number(self, key: str, default: Any = _MISSING, *, lo: float | None = None, hi: float | None = None) -> float:
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise self.fail(f"must be a finite number, got {value!r:.40}", key)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise self.fail(f"is {value}, outside {lo}..{hi}", key)
        return float(value)

    def boolean(self, key: str, default: Any = _MISSING) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise self.fail(f"must be true or false, got {_type_name(value)}", key)
        return value

    def objects(self, key: str, *, min_len: int = 0, max_len: int = 1_000) -> list[Fields]:
        """A list of JSON objects, each as :class:`Fields` named ``key[i]``."""
        value = self.raw(key)
        if not isinstance(value, list):
            raise self.fail(f"must be a list, got {_type_name(value)}", key)
        if not min_len <= len(value) <= max_len:
            raise self.fail(f"has {len(value)} entries, needs {min_len}..{max_len}", key)
        return [Fields(item, self.file, self.fix, f"{self.name(key)}[{i}]", self.error) for i, item in enumerate(value)]

    def mapping(self, key: str, default: Any = _MISSING) -> dict[str, Any]:
        """A JSON object kept as a plain dict (informational sections the runtime does not interpret)."""
        section = self.section(key, default)
        return dict(section.data) if isinstance(section, Fields) else section

    def sha256(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not _SHA256.fullmatch(value):
            raise self.fail("must be a sha256 hex digest (64 lowercase hex digits)", key)
        return value


# ------------------------------------------------------------------------------------------ confinement
def relative_member_problem(rel: str) -> str | None:
    """Why ``rel`` is not a plain relative path inside a folder (None when it is)."""
    if "\\" in rel or "\0" in rel or rel.startswith("/") or re.match(r"^[A-Za-z]:", rel):
        return f"{rel[:80]!r} is not a relative POSIX path"
    parts = PurePosixPath(rel).parts
    if not parts or any(p in ("..", ".") for p in parts) or "/".join(parts) != rel:
        return f"{rel[:80]!r} must be a normalised relative path without '..' or '.'"
    return None


def confined(root: Path, rel: str) -> Path | None:
    """``root/rel`` if it resolves (following every symlink) inside ``root``, else None."""
    base = Path(os.path.realpath(root))
    target = Path(os.path.realpath(root / rel))
    return root / rel if target == base or base in target.parents else None


# ------------------------------------------------------------------------------------------- messages
def one_line(text: str) -> str:
    """Collapse whitespace so a message built from file content stays one line."""
    return " ".join(str(text).split())
