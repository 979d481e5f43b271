"""The CLI helps: each option's default in every --help, "did you mean" for --model, install hints that work."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

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
    for action in parser._actions:
        shown = shown_default(action)
        if shown is None:
            continue
        text = _option_help(parser, action)
        assert shown in text, f"ringfold {command} --help: {action.option_strings[0]} does not show {shown!r}: {text}"
        said = text.lower().count("default")
        assert said == 1 or states_default(action.help), f"{action.option_strings[0]}: default said twice: {text}"


def test_export_help_shows_its_defaults_and_no_trivial_ones(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["export", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--ref-count REF_COUNT (default: 16)" in out
    assert "--calib-method {minmax,entropy,percentile} (default: minmax)" in out
    assert "int8-fp16 (TensorRT's int8 graph) int8-dynamic (default: fp32)" in out  # a list default, as taken
    assert "(default 32; --calib-min 1 for a smoke test)" in out and "(default: 32)" not in out  # stated once
    assert "default: None" not in out and "default: False" not in out and "default: True" not in out


def test_params_model_option_without_help_text_shows_its_default():
    parser = _subcommands()["params"]
    (model,) = [a for a in parser._actions if "--model" in a.option_strings]
    assert _option_help(parser, model).endswith("(default: ViT-B-16)")


# ------------------------------------------------------------------------------------ --model did you mean
def test_model_typo_gets_did_you_mean_in_one_line_before_anything_runs(tmp_path, capsys, monkeypatch):
    pytest.importorskip("open_clip")
    import ringfold.trainer.train as trainer_train
    from ringfold.cli import main

    def must_not_run(*args, **kwargs):
        raise AssertionError("training started on an unknown model")

    monkeypatch.setattr(trainer_train, "train", must_not_run)
    out = tmp_path / "run"
    argv = ["train", "--model", "ViT-B-61", "--random-init", "--data", str(tmp_path), "--out", str(out)]
    assert main([*argv, "--nproc", "2"]) == 2  # refused before torchrun would start two processes
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ringfold train: error: --model: 'ViT-B-61' is not an open_clip")
    assert "did you mean ViT-B-16" in err[0]
    assert not out.exists()


@pytest.mark.parametrize(("typed", "meant"), [("vit-b-16", "ViT-B-16"), ("ringfold-tiny-vt", "ringfold-tiny-vit")])
def test_params_model_typo_suggests_the_config_name(typed, meant, capsys):
    pytest.importorskip("open_clip")
    from ringfold.cli import main

    assert main(["params", "--model", typed]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"ringfold params: error: --model: {typed!r}") and f"did you mean {meant}" in line


def test_a_name_close_to_nothing_gets_no_suggestion():
    pytest.importorskip("open_clip")
    from ringfold.errors import FieldError
    from ringfold.trainer.models import check_model_name

    with pytest.raises(FieldError) as info:
        check_model_name("zzzzzzzzzzzz")
    assert "did you mean" not in str(info.value) and "list_models()" in str(info.value)


# ----------------------------------------------------------------------------------------- install hints
_ROOT = Path(__file__).resolve().parents[1]
_INDEX_INSTALL = re.compile(r"""pip install\s+(?:-U\s+)?["'`]?ringfold(?:\[|["'`\s]|$)""")


def test_no_hint_installs_ringfold_from_an_index():
    """ringfold is on no package index: every hint installs the wheel built on the workstation."""
    sources = [p for top in ("ringfold", "runtime", "trainer", "exporter") for p in (_ROOT / top).rglob("*.py")]
    assert len(sources) > 50
    offenders = [
        f"{path.relative_to(_ROOT)}:{n}: {line.strip()}"
        for path in sources
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if _INDEX_INSTALL.search(line) or "'ringfold[" in line
    ]
    assert offenders == []


def test_install_hint_says_how_to_build_and_install_the_wheel():
    from ringfold import __version__
    from ringfold.extras import install_hint

    line = install_hint("export", "onnx", "export")
    assert "\n" not in line
    assert "`pip wheel --no-deps -w dist .` in the ringfold checkout" in line
    assert f"pip install 'dist/ringfold-{__version__}-py3-none-any.whl[export]'" in line
    assert not _INDEX_INSTALL.search(line)
