"""Adapter methods and the machinery to inject and fold them; their configs are in trainer/config.py.

Importing this package registers every built-in method (each module calls ``registry.register``
when it is imported); ``registry.py`` only holds the table.
"""

from ..config import AdapterConfig, config_from_dict
from . import adaring, arc, mma  # noqa: F401  (imported to register the methods)
from .base import AdapterSet, inject, resolve_layers
from .registry import get, names

__all__ = ["AdapterConfig", "AdapterSet", "inject", "resolve_layers", "config_from_dict", "get", "names"]
