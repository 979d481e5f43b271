"""Name → method table, in the style of PEFT's tuner registry: the table and :func:`register`, nothing else.

The registry never imports a method. Each method module (``arc.py``, ``adaring.py``, ``mma.py``)
calls :func:`register` when it is imported, and the package's ``__init__`` imports them all, so
``from ringfold.trainer.adapters import get`` sees every method. A new method is its config class in
``trainer/config.py`` (:data:`~ringfold.trainer.config.CONFIGS`), its module here calling
``register(Method(...))``, and one name added to the import in ``__init__.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ringfold.errors import RingfoldError

from ..config import CONFIGS, AdapterConfig


@dataclass(frozen=True)
class Method:
    """One adapter method: its name, config class, ``SiteAdapter`` subclass (``base.py``) and a one-line summary."""

    name: str
    config_cls: type[AdapterConfig]
    adapter_cls: type  # a base.SiteAdapter subclass; not imported here, base.py imports this module
    summary: str


_METHODS: dict[str, Method] = {}


def register(method: Method) -> None:
    """Add a method to the table; its config class must be the one ``trainer/config.py`` names for it."""
    if CONFIGS.get(method.name) is not method.config_cls:
        raise RuntimeError(f"adapter method {method.name!r}: add its config class to trainer/config.py CONFIGS")
    _METHODS[method.name] = method


def get(name: str) -> Method:
    """The registered method called ``name``; an unknown name is a one-line RingfoldError listing the known ones."""
    if name not in _METHODS:
        raise RingfoldError(f"unknown adapter method {name!r}; known: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def names() -> list[str]:
    """The methods there are: those with a config in trainer/config.py (each has its module here)."""
    return sorted(CONFIGS)
