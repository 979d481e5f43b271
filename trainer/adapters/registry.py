"""Name → method lookup, in the style of PEFT's tuner registry."""

from __future__ import annotations

from dataclasses import dataclass

from ringfold.errors import RingfoldError

from ..config import CONFIGS
from .base import AdapterConfig, SiteAdapter


@dataclass(frozen=True)
class Method:
    name: str
    config_cls: type[AdapterConfig]
    adapter_cls: type[SiteAdapter]
    summary: str


_METHODS: dict[str, Method] = {}


def register(method: Method) -> None:
    if CONFIGS.get(method.name) is not method.config_cls:
        raise RuntimeError(f"adapter method {method.name!r}: add its config class to trainer/config.py CONFIGS")
    _METHODS[method.name] = method


def get(name: str) -> Method:
    _load_builtin()
    if name not in _METHODS:
        raise RingfoldError(f"unknown adapter method {name!r}; known: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def names() -> list[str]:
    """The methods there are: those with a config in trainer/config.py (each has its module here)."""
    return sorted(CONFIGS)


def _load_builtin() -> None:
    # import for the side effect of registration; kept lazy to avoid import cycles
    from . import adaring, arc, mma  # noqa: F401
