"""The CLI helps: each option's default in every --help, "did you mean" for --model, install hints that work."""

from __future__ import annotations

import argparse

import pytest

from ringfold.cli import build_parser
from ringfold.cli.helpfmt import shown_default, states_default


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _option_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The text ``--help`` prints for one option, whitespace joined (argparse wraps long lines)."""
    return " ".join(parser._get_formatter()._format_action(action).split())


# -------------------------------------------------------------------------------------- defaults in --help
@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_every_option_with_a_default_shows_it_in_help(command):
    parser = _subcommands()[command]
    checked = 0
    for action in parser._actions:
        shown = shown_default(action)
        if shown is None:
            continue
        text = _option_help(parser, action)
        assert shown in text, f"ringfold {command} --help: {action.option_strings[0]} does not show {shown!r}: {text}"
        said = text.lower().count("default")
        assert said == 1 or states_default(action.help), f"{action.option_strings[0]}: default said twice: {text}"
        checked += 1
    assert checked or command in ("demo", "sign", "verify"), f"{command}: no option with a default?"


def test_export_help_shows_its_defaults_and_no_trivial_ones(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["export", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--ref-count REF_COUNT (default: 16)" in out
    assert "--calib-method {minmax,entropy,percentile} (default: minmax)" in out
    assert "int8-dynamic (default: fp32)" in out  # a list default, as the option takes it
    assert "(default 32; --calib-min 1 for a smoke test)" in out and "(default: 32)" not in out  # stated once
    assert "default: None" not in out and "default: False" not in out and "default: True" not in out


def test_params_model_option_without_help_text_shows_its_default():
    parser = _subcommands()["params"]
    (model,) = [a for a in parser._actions if "--model" in a.option_strings]
    assert _option_help(parser, model).endswith("(default: ViT-B-16)")
