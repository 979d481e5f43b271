"""Adapter methods and the machinery to inject and fold them; their configs are in trainer/config.py."""

from ringfold.trainer.adapters.base import AdapterSet, inject, resolve_layers
from ringfold.trainer.adapters.registry import get, names
from ringfold.trainer.config import AdapterConfig, config_from_dict

__all__ = ["AdapterConfig", "AdapterSet", "inject", "resolve_layers", "config_from_dict", "get", "names"]
