"""Adapter methods and the machinery to inject and fold them; their configs are in trainer/config.py."""

from ..config import AdapterConfig, config_from_dict
from .base import AdapterSet, inject, resolve_layers
from .registry import get, names

__all__ = ["AdapterConfig", "AdapterSet", "inject", "resolve_layers", "config_from_dict", "get", "names"]
