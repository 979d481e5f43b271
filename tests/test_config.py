"""One config surface: the fields of trainer/config.py carry flag, bounds and help; everything else derives.

The CLI's options are generated from the fields, the library checks values against the same bounds
and names the field, the CLI names the flag, and files name the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from ringfold import cli_types as T
from ringfold import values as V
from ringfold.cli import build_parser, main
from ringfold.cli.options import add_config_options, train_config_from_argv
from ringfold.errors import FieldError
from ringfold.trainer.config import (
    CONFIGS,
    AdaRingConfig,
    ArcConfig,
    TrainConfig,
    config_from_dict,
    field_metadata,
    load_train_config,
    setting,
)


def _train_actions() -> dict[str, argparse.Action]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    return {a.dest: a for a in sub._actions}


def test_every_flagged_train_setting_is_a_train_option_with_the_fields_kind_and_default():
    actions = _train_actions()
    for f in dataclasses.fields(TrainConfig):
        meta = field_metadata(TrainConfig, f.name)
        if not meta.get("flag"):
            continue
        action = actions[f.name]
        assert meta["flag"] in action.option_strings
        if not isinstance(f.default, bool):
            assert action.type is T.arg_type(meta.get("kind")), f.name  # the CLI's copy of the field's kind
            assert action.default == f.default, f.name
        assert action.help.startswith(meta["help"].split(" (")[0]), f.name


def test_every_adapter_setting_with_a_flag_is_an_option_of_train_and_params():
    for command in ("train", "params"):
        parser = build_parser()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
        dests = {a.dest for a in sub._actions}
        for cls in CONFIGS.values():
            for f in dataclasses.fields(cls):
                if field_metadata(cls, f.name).get("flag"):
                    assert f.name in dests, (command, f.name)


def test_parsed_defaults_are_the_config_defaults():
    cfg = train_config_from_argv([])
    assert cfg == TrainConfig()
    assert isinstance(cfg.adapter, ArcConfig) and cfg.adapter == ArcConfig()


def test_a_new_field_is_a_new_option(capsys):
    @dataclass
    class Demo:
        alpha: float = setting(0.5, "--alpha", V.unit_interval, help="a fraction")
        quiet: bool = setting(False, "--loud", help="a switch")
        hidden: int = setting(3, help="no flag: Python and files only")

    parser = argparse.ArgumentParser()
    add_config_options(parser, Demo)
    assert vars(parser.parse_args(["--alpha", "0.25", "--loud"])) == {"alpha": 0.25, "quiet": True}
    with pytest.raises(SystemExit):
        parser.parse_args(["--alpha", "2"])
    # the field's library kind raises ValueKindError; the option built from it still prints the kind's own line
    assert "argument --alpha: 2 is not a fraction (give a number from 0 to 1)" in capsys.readouterr().err


def test_train_flags_build_the_config_and_resolve_the_adapter_once():
    cfg = train_config_from_argv(["--method", "adaring", "--fine-ranks", "2,4,4", "--towers", "visual", "--lr", "1e-3"])
    assert isinstance(cfg.adapter, AdaRingConfig)
    assert cfg.adapter.fine_ranks == (2, 4, 4) and cfg.adapter.towers == ("visual",)
    assert cfg.adapter.coarse_ranks == (1, 2, 2)  # the method's default, filled in here
    assert cfg.lr == 1e-3 and cfg.to_dict()["adapter"]["fine_ranks"] == (2, 4, 4)


@pytest.mark.parametrize(
    ("make", "field", "problem"),
    [
        (lambda: TrainConfig(lr=0.0), "lr", "must be > 0, got 0.0"),
        (lambda: TrainConfig(epochs=-1), "epochs", "must be >= 0, got -1"),
        (lambda: TrainConfig(seed=2**32), "seed", "must be >= 0 and <= 4294967295, got 4294967296"),
        (lambda: TrainConfig(optimizer="lion"), "optimizer", "must be one of adamw, sgd, got 'lion'"),
        (lambda: TrainConfig(batch_size="8"), "batch_size", "must be an integer, got str"),
        (lambda: TrainConfig(adapter={"rank": 0}), "rank", "must be >= 1, got 0"),
        (lambda: ArcConfig(dropout=1.0), "dropout", "must be >= 0 and < 1, got 1.0"),
        (lambda: AdaRingConfig(fine_ranks="2,4"), "fine_ranks", "must be three positive integers"),
        (lambda: AdaRingConfig(coarse_loss_weight=-1.0), "coarse_loss_weight", "must be >= 0, got -1.0"),
        (lambda: config_from_dict({"method": "lora"}), "method", "is 'lora': unknown adapter method"),
    ],
)
def test_library_errors_name_the_field(make, field, problem):
    with pytest.raises(FieldError) as exc:
        make()
    assert exc.value.field == field and exc.value.problem.startswith(problem)
    assert str(exc.value).startswith(f"field {field} ")
    assert "--" not in str(exc.value)  # no flag: the library does not know how the value was given


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["params", "--method", "arc", "--adapter-opt", "rank=0"],
            "ringfold params: error: --rank: must be >= 1, got 0",
        ),
        (
            ["params", "--method", "arc", "--adapter-opt", "mlp_lambda_init=ones"],
            "ringfold params: error: --adapter-opt mlp_lambda_init: must be one of zero, xavier, got 'ones'",
        ),
        (["params", "--method", "mma", "--scale", "0"], "ringfold params: error: --scale: is 0"),
        (["params", "--towers", "visual,txt"], "ringfold params: error: --towers: must be some of visual, text"),
        (
            ["params", "--method", "arc", "--aux-every", "2", "--adapter-opt", "typo=1"],
            "ringfold params: error: adapter config has unknown keys ['aux_every', 'typo'] for method 'arc' "
            "(aux_every is a setting of adaring)",
        ),
        (
            ["params", "--method", "mma", "--rank", "8", "--fine-ranks", "2,2,2"],
            "ringfold params: error: adapter config has unknown keys ['fine_ranks'] for method 'mma' "
            "(fine_ranks is a setting of adaring)",
        ),
    ],
)
def test_the_cli_reports_a_field_by_its_flag(argv, line, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(line) and len(err.strip().splitlines()) == 1


def test_a_file_names_the_file_and_the_field(tmp_path):
    path = tmp_path / "train_config.json"
    path.write_text(json.dumps({**TrainConfig().to_dict(), "lr": 0}))
    with pytest.raises(Exception, match=r"train_config\.json: field lr must be > 0, got 0;"):
        load_train_config(path)
    path.write_text(json.dumps({**TrainConfig().to_dict(), "adapter": {"method": "arc", "rank": 0}}))
    with pytest.raises(Exception, match=r"train_config\.json: field adapter\.rank must be >= 1, got 0;"):
        load_train_config(path)
    path.write_text(json.dumps({**TrainConfig().to_dict(), "adapter": {"method": "mma"}}))
    with pytest.raises(Exception, match=r"field adapter\.method is 'mma', but field method is 'arc'"):
        load_train_config(path)


def test_the_cli_and_the_config_files_share_one_table_of_bounds():
    """No second table (train.py had _CONFIG_MINIMUM/_CONFIG_CHOICES beside the CLI's types)."""
    import ringfold.trainer.train as train_mod

    assert not hasattr(train_mod, "_CONFIG_MINIMUM") and not hasattr(train_mod, "_CONFIG_CHOICES")
    assert field_metadata(TrainConfig, "lr")["kind"] is V.positive_float
    assert field_metadata(ArcConfig, "rank")["kind"] is V.positive_int
    assert T.arg_type(V.positive_float) is T.positive_float and T.positive_float.bounds == V.positive_float.bounds


def test_the_trainer_config_takes_its_value_kinds_from_a_module_below_the_cli():
    """trainer/config.py imported ringfold.cli_types (an arrow up into the CLI) and argparse for its errors."""
    import ast

    import ringfold.trainer.config as config_mod

    def imported(module) -> set[str]:
        tree = ast.parse(Path(module.__file__).read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom):
                names |= {n.module or ""} | {f"{n.module}.{a.name}" for a in n.names}
        return names

    assert not {"argparse", "ringfold.cli_types"} & imported(config_mod)
    assert {"argparse", "ringfold"}.isdisjoint(name.split(".")[0] for name in imported(V))  # standard library only
    with pytest.raises(V.ValueKindError, match=r"^1,2 has 2 entries, not 3"):
        V.ring_ranks("1,2")
    with pytest.raises(FieldError, match="fine_ranks"):
        AdaRingConfig(fine_ranks="1,2")


def test_a_diverging_run_is_reported_as_a_flag_to_change(demo_data, tmp_path, capsys):
    argv = ["train", "--model", "ringfold-tiny-vit", "--random-init", "--data", str(demo_data), "--out", str(tmp_path)]
    argv += ["--lr", "1e30", "--epochs", "1", "--shots", "2", "--batch-size", "4", "--rank", "4", "--no-augment"]
    assert main([*argv, "--device", "cpu", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ringfold train: error: --lr: is too high: training diverged") and len(err.splitlines()) == 1
