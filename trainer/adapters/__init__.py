"""Adapter methods and the machinery to inject and fold them."""

from ringfold.trainer.adapters.base import AdapterConfig, AdapterSet, inject, resolve_layers
from ringfold.trainer.adapters.registry import config_from_dict, get, names

__all__ = ["AdapterConfig", "AdapterSet", "inject", "resolve_layers", "config_from_dict", "get", "names"]
