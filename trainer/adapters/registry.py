"""Name → method lookup, in the style of PEFT's tuner registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ringfold.errors import RingfoldError
from ringfold.trainer.adapters.base import AdapterConfig, SiteAdapter


@dataclass(frozen=True)
class Method:
    name: str
    config_cls: type[AdapterConfig]
    adapter_cls: type[SiteAdapter]
    summary: str


_METHODS: dict[str, Method] = {}


def register(method: Method) -> None:
    _METHODS[method.name] = method


def get(name: str) -> Method:
    _load_builtin()
    if name not in _METHODS:
        raise RingfoldError(f"unknown adapter method {name!r}; known: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def names() -> list[str]:
    _load_builtin()
    return sorted(_METHODS)


def config_from_dict(d: dict[str, Any]) -> AdapterConfig:
    if "method" not in d:
        raise RingfoldError("adapter config has no 'method'; the run directory is incomplete")
    return get(d["method"]).config_cls.from_dict(d)


def _load_builtin() -> None:
    # import for the side effect of registration; kept lazy to avoid import cycles
    from ringfold.trainer.adapters import adaring, arc, mma  # noqa: F401
