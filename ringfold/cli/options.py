"""Command-line options generated from the config dataclasses, and configs built from parsed options.

The fields of ``trainer/config.py`` carry their flag, value kind, choices and help
(:func:`ringfold.trainer.config.setting`); this module turns them into argparse options, so
``ringfold train``'s options are the TrainConfig fields, ``ringfold params``' and the adapter group
the adapter configs' fields, and a new setting needs no edit here or in ``cli/train.py``. Scripts that take
``ringfold train`` flags (examples/b2n) build their config with :func:`train_config_from_argv`.

Standard library and ``trainer/config.py`` only (no torch): the CLI builds its parser on a
runtime-only install too.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from ringfold.trainer.config import CONFIGS, TrainConfig, field_metadata

from ..cli_types import arg_type
from ..errors import RingfoldError


def _shown_default(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def add_config_options(parser: argparse.ArgumentParser, cls: type = TrainConfig) -> None:
    """One option per field of ``cls`` that has a flag (the adapter group excepted: :func:`add_adapter_options`).

    The option's dest is the field's name, so ``vars(args)`` holds the config's values; a bool
    field is a switch (``--random-init`` sets it, ``--no-augment``/``--quiet`` clear it).
    """
    exclusive: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        meta = field_metadata(cls, f.name)
        flag, group = meta.get("flag"), meta.get("group")
        if not flag or group == "adapter":
            continue
        target = parser
        if group:
            if group not in exclusive:
                exclusive[group] = parser.add_mutually_exclusive_group()
            target = exclusive[group]
        if isinstance(f.default, bool):
            action = "store_false" if f.default else "store_true"
            target.add_argument(flag, dest=f.name, action=action, help=meta["help"])
        else:
            kind, choices = arg_type(meta.get("kind")), meta.get("choices")
            target.add_argument(flag, dest=f.name, type=kind, choices=choices, default=f.default, help=meta["help"])


def adapter_options() -> dict[str, tuple[str, dict[str, Any], str]]:
    """Adapter settings with a flag: field name → (flag, metadata, each method's default, for the help)."""
    found: dict[str, tuple[str, dict[str, Any], list[str]]] = {}
    for method, cls in sorted(CONFIGS.items()):
        for f in dataclasses.fields(cls):
            meta = dict(field_metadata(cls, f.name))
            if meta.get("flag"):
                entry = found.setdefault(f.name, (meta["flag"], meta, []))
                entry[2].append(f"{method} {_shown_default(f.default)}")
    return {name: (flag, meta, _defaults(per_method)) for name, (flag, meta, per_method) in found.items()}


def _defaults(per_method: list[str]) -> str:
    """ "last:8; mma: 4-11" when every method has the setting, else "arc 50, mma 32"."""
    if len(per_method) < len(CONFIGS):
        return ", ".join(per_method)
    pairs = [entry.split(" ", 1) for entry in per_method]
    values = [value for _, value in pairs]
    common = max(values, key=values.count)
    return "".join([common, *(f"; {method}: {value}" for method, value in pairs if value != common)])


def add_adapter_options(parser: argparse.ArgumentParser, *, allow_all: bool = False) -> None:
    """The "adapter" group: ``--method`` and every method setting that has a flag, plus ``--adapter-opt``.

    The method settings default to None (unset: the method's own default applies). ``allow_all``:
    ``--method all`` (``ringfold params``: every method at its defaults).
    """
    g = parser.add_argument_group("adapter")
    methods = sorted(CONFIGS)
    meta = field_metadata(TrainConfig, "method")
    g.add_argument(
        meta["flag"],
        dest="method",
        default=TrainConfig.method,
        choices=[*methods, "all"] if allow_all else methods,
        help=f"{meta['help']}: {' | '.join(methods)}" + (" | all" if allow_all else ""),
    )
    for name, (flag, meta, defaults) in adapter_options().items():
        g.add_argument(
            flag,
            dest=name,
            type=arg_type(meta.get("kind")),
            choices=meta.get("choices"),
            default=None,
            help=f"{meta['help']} (default {defaults})",
        )
    g.add_argument(
        "--adapter-opt",
        action="append",
        metavar="KEY=VALUE",
        help="any other method setting, e.g. mlp_lambda_init=xavier (a JSON value or a string)",
    )


def adapter_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The adapter settings the command line set (flags and ``--adapter-opt``); the rest keep the method's defaults."""
    overrides = {name: getattr(args, name) for name in adapter_options() if getattr(args, name, None) is not None}
    for item in getattr(args, "adapter_opt", None) or []:
        if "=" not in item:
            raise RingfoldError(f"--adapter-opt {item!r}: use KEY=VALUE, e.g. --adapter-opt mlp_lambda_init=xavier")
        key, value = item.split("=", 1)
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of parsed options (of :func:`add_config_options` and :func:`add_adapter_options`)."""
    values = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if field_metadata(TrainConfig, f.name).get("flag") and hasattr(args, f.name)
    }
    return TrainConfig(**values, adapter=adapter_overrides(args))


def train_parser(prog: str = "ringfold train") -> argparse.ArgumentParser:
    """A parser of ``ringfold train``'s config options alone (no --out, --resume, --nproc)."""
    parser = argparse.ArgumentParser(prog=prog)
    add_config_options(parser)
    add_adapter_options(parser)
    return parser


def train_config_from_argv(argv: Sequence[str]) -> TrainConfig:
    """A TrainConfig from ``ringfold train`` flags, e.g. ``["--data", "DIR", "--rank", "50", "--quiet"]``."""
    return train_config_from_args(train_parser().parse_args(list(argv)))
