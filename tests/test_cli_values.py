"""Every numeric / list option is checked when the command line is parsed: a bad value is one line
on stderr naming the option, the value and what is allowed, and exit code 2 (no traceback, no
silent coercion). Parsing fails before any model, bundle or run is touched, so these are fast."""

from __future__ import annotations

import argparse
import math

import pytest

from ringfold import cli_types as T
from ringfold.cli import build_parser, main

# the positionals / required options each subcommand needs; the paths need not exist
BASE = {
    "params": ["params"],
    "train": ["train"],
    "export": ["export", "RUN", "--out", "BUNDLE"],
    "classify": ["classify", "BUNDLE", "IMG"],
    "parity": ["parity", "BUNDLE"],
    "build-engine": ["build-engine", "BUNDLE"],
    "bench": ["bench", "BUNDLE"],
    "compress": ["compress", "RUN", "--ranks", "2,4,2", "--out", "OUT"],
    "evaluate": ["evaluate", "RUN"],
    "demo": ["demo"],
}

POSITIVE_INT = ["0", "-1", "abc", "2.5", "nan", ""]
NON_NEGATIVE_INT = ["-1", "abc", "1.5", "inf"]
SEED = ["-1", "abc", "4294967296"]
POSITIVE_FLOAT = ["0", "-1", "abc", "nan", "inf", "-inf"]
NON_NEGATIVE_FLOAT = ["-1", "-0.5", "abc", "nan", "inf"]
FINITE_FLOAT = ["abc", "nan", "inf", "-inf"]
DROPOUT = ["1", "1.5", "-0.1", "nan"]
COSINE = ["1.5", "-1.01", "nan", "abc"]
UNIT = ["1.5", "-0.1", "nan", "abc"]
OPSET = ["12", "21", "0", "abc", "17.0"]
INT_LIST = ["0", "-1", "1,,2", "1,0", "a,b", "", ",", "1,2,", "1.5", ",".join(str(i) for i in range(1, 66))]
BATCH_PROFILE = ["4,2,1", "1,8,4", "1,2", "1,2,3,4", "a,b", "0,1,2", "1,,2", "", "1.0,2,3"]

FLAGS = [
    # (command, flag, bad values)
    ("classify", "--top-k", POSITIVE_INT),
    ("classify", "--threads", POSITIVE_INT),
    ("parity", "--threads", POSITIVE_INT),
    ("parity", "--max-abs-logit", NON_NEGATIVE_FLOAT),
    ("parity", "--min-cosine", COSINE),
    ("parity", "--min-top1", UNIT),
    ("parity", "--logit-error", NON_NEGATIVE_FLOAT),
    ("bench", "--batch-sizes", INT_LIST),
    ("bench", "--runs", POSITIVE_INT),
    ("bench", "--warmup", NON_NEGATIVE_INT),
    ("bench", "--threads", POSITIVE_INT),
    ("build-engine", "--batch", BATCH_PROFILE),
    ("build-engine", "--workspace", POSITIVE_INT),
    ("export", "--ref-count", POSITIVE_INT),
    ("export", "--calib-limit", POSITIVE_INT),
    ("export", "--opset", OPSET),
    ("compress", "--iterations", POSITIVE_INT),
    ("compress", "--images-limit", POSITIVE_INT),
    ("export", "--calib-min", POSITIVE_INT),
    ("build-engine", "--calib-min", POSITIVE_INT),
    ("evaluate", "--batch-size", POSITIVE_INT),
    ("demo", "--epochs", POSITIVE_INT),
    ("train", "--epochs", NON_NEGATIVE_INT),
    ("train", "--batch-size", POSITIVE_INT),
    ("train", "--shots", NON_NEGATIVE_INT),
    ("train", "--workers", NON_NEGATIVE_INT),
    ("train", "--max-eval", POSITIVE_INT),
    ("train", "--checkpoint-every", NON_NEGATIVE_INT),
    ("train", "--nproc", POSITIVE_INT),
    ("train", "--init-seed", SEED),
    ("train", "--seed", SEED),
    ("train", "--lr", POSITIVE_FLOAT),
    ("train", "--weight-decay", NON_NEGATIVE_FLOAT),
    ("train", "--warmup-epochs", NON_NEGATIVE_FLOAT),
    ("train", "--rank", POSITIVE_INT),
    ("train", "--scale", FINITE_FLOAT),
    ("train", "--dropout", DROPOUT),
    ("params", "--rank", POSITIVE_INT),
    ("params", "--scale", FINITE_FLOAT),
    ("params", "--dropout", DROPOUT),
]

CASES = [
    pytest.param(command, flag, bad, id=f"{command} {flag}={bad[:12]}")
    for command, flag, values in FLAGS
    for bad in values
]


def _parse_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


@pytest.mark.parametrize(("command", "flag", "bad"), CASES)
def test_bad_value_is_one_line_naming_flag_value_and_allowed(command, flag, bad, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written, but if it were, it lands here
    err = _parse_error([*BASE[command], f"{flag}={bad}"], capsys)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith(f"ringfold {command}: error: argument {flag}: "), line
    assert (bad or "''") in line  # the value given ...
    assert "(give " in line  # ... and what is allowed
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["classify", "B", "I", "--top-k", "-1"],
        ["bench", "B", "--batch-sizes", "-4"],
        ["train", "--lr", "-0.5"],
        ["parity", "B", "--min-cosine", "-3"],
    ],
)
def test_negative_value_after_a_space_is_a_value_not_an_option(argv, capsys):
    err = _parse_error(argv, capsys)
    assert len(err.strip().splitlines()) == 1
    assert f"argument {argv[-2]}: {argv[-1]} is not" in err


def test_no_option_is_parsed_by_bare_int_or_float():
    """A bare ``type=int``/``float`` accepts 0, -1, nan or inf: every numeric option needs a checking type."""
    loose = []
    for command, sub in _subparsers(build_parser()).items():
        for action in sub._actions:
            if action.type in (int, float):
                loose.append(f"{command} {'/'.join(action.option_strings) or action.dest}")
    assert loose == []


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


# ------------------------------------------------------------------------------- legal values, defaults
def test_defaults_are_already_parsed():
    parser = build_parser()
    bench = parser.parse_args(["bench", "B"])
    assert bench.batch_sizes == [1, 2, 4, 8] and bench.runs == 50 and bench.warmup == 10 and bench.threads is None
    engine = parser.parse_args(["build-engine", "B"])
    assert engine.batch == (1, 8, 16) and engine.workspace == 1024
    export = parser.parse_args(["export", "R", "--out", "O"])
    assert export.opset == 17 and export.ref_count == 16
    train = parser.parse_args(["train"])
    assert (train.epochs, train.batch_size, train.lr) == (10, 32, 2e-3)
    assert (train.weight_decay, train.warmup_epochs, train.shots) == (1e-4, 1.0, 16)
    assert parser.parse_args(["demo"]).epochs == 30
    assert parser.parse_args(["classify", "B", "I", "--top-k", "3"]).top_k == 3


def test_boundary_values_are_legal():
    parser = build_parser()
    train = parser.parse_args(
        "train --epochs 0 --shots 0 --workers 0 --checkpoint-every 0 --seed 0 --init-seed 4294967295 "
        "--weight-decay 0 --warmup-epochs 0 --dropout 0 --scale -1.5 --lr 1e-9 --rank 1 --nproc 1 --max-eval 1".split()
    )
    assert (train.epochs, train.shots, train.workers, train.checkpoint_every) == (0, 0, 0, 0)
    assert (train.seed, train.init_seed, train.dropout, train.scale) == (0, 4294967295, 0.0, -1.5)
    parity = parser.parse_args("parity B --min-cosine -1 --min-top1 1 --max-abs-logit 0".split())
    assert (parity.min_cosine, parity.min_top1, parity.max_abs_logit) == (-1.0, 1.0, 0.0)
    engine = parser.parse_args("build-engine B --batch 4,4,4".split())
    assert engine.batch == (4, 4, 4)
    bench = parser.parse_args(["bench", "B", "--batch-sizes", "8,1,8,2", "--warmup", "0"])
    assert bench.batch_sizes == [8, 1, 2] and bench.warmup == 0
    for opset in ("13", "17", "20"):
        assert parser.parse_args(["export", "R", "--out", "O", "--opset", opset]).opset == int(opset)


# ----------------------------------------------------------------------------------- the type callables
@pytest.mark.parametrize(
    ("func", "text", "expected"),
    [
        (T.positive_int, "1", 1),
        (T.positive_int, " 64 ", 64),
        (T.non_negative_int, "0", 0),
        (T.seed, "123", 123),
        (T.opset, "17", 17),
        (T.positive_float, "2e-3", 2e-3),
        (T.non_negative_float, "0", 0.0),
        (T.finite_float, "-0.25", -0.25),
        (T.unit_interval, "0", 0.0),
        (T.unit_interval, "1", 1.0),
        (T.unit_interval, "0.99", 0.99),
        (T.dropout_rate, "0.999", 0.999),
        (T.cosine, "-1", -1.0),
        (T.cosine, "0.995", 0.995),
        (T.positive_int_list, "1,2,4", [1, 2, 4]),
        (T.positive_int_list, "16", [16]),
        (T.positive_int_list, "4,1,4,2,1", [4, 1, 2]),
        (T.positive_int_list, "1, 2, 8", [1, 2, 8]),
        (T.positive_int_list, ",".join(str(i) for i in range(1, 65)), list(range(1, 65))),
        (T.batch_profile, "1,8,16", (1, 8, 16)),
        (T.batch_profile, "2,2,2", (2, 2, 2)),
    ],
)
def test_type_accepts(func, text, expected):
    value = func(text)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    ("func", "text", "message"),
    [
        (T.positive_int, "0", "0 is not a positive integer (give 1 or more)"),
        (T.positive_int, "abc", "abc is not a positive integer (give 1 or more)"),
        (T.non_negative_int, "-1", "-1 is not a non-negative integer (give 0 or more)"),
        (T.positive_float, "nan", "nan is not a positive number"),
        (T.unit_interval, "1.5", "1.5 is not a fraction (give a number from 0 to 1)"),
        (T.dropout_rate, "1", "1 is not a dropout probability"),
        (T.cosine, "-2", "-2 is not a cosine similarity (give a number from -1 to 1)"),
        (T.opset, "21", f"21 is not a supported ONNX opset (give {T.MIN_OPSET} to {T.MAX_OPSET}"),
        (T.positive_int_list, "1,,2", "1,,2 has an empty entry"),
        (T.positive_int_list, "1,x", "1,x: entry x is not an integer"),
        (T.batch_profile, "4,2,1", "4,2,1 is not ordered min <= opt <= max"),
        (T.batch_profile, "1,2", "1,2 has 2 entries, not 3"),
        (T.positive_int, "", "'' is not a positive integer"),
        (T.positive_int, "1\n2", "'1\\n2' is not a positive integer"),
    ],
)
def test_type_rejects_with_a_message_saying_value_and_allowed(func, text, message):
    with pytest.raises(argparse.ArgumentTypeError) as exc:
        func(text)
    assert str(exc.value).startswith(message)
    assert "\n" not in str(exc.value)


def test_opset_range_includes_the_exporter_default():
    assert T.MIN_OPSET <= 17 <= T.MAX_OPSET
    pytest.importorskip("torch")
    from ringfold.exporter.onnx_export import DEFAULT_OPSET

    assert T.MIN_OPSET <= DEFAULT_OPSET <= T.MAX_OPSET
    from torch.onnx import _constants

    # the TorchScript exporter (dynamo=False) the project uses goes no higher
    assert getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", T.MAX_OPSET) >= T.MAX_OPSET


def test_finite_types_never_return_nan_or_inf():
    for func in (T.positive_float, T.non_negative_float, T.finite_float, T.unit_interval, T.cosine, T.dropout_rate):
        for text in ("nan", "NaN", "inf", "-inf", "Infinity", "1e999"):
            with pytest.raises(argparse.ArgumentTypeError):
                func(text)
        assert math.isfinite(func("0.5"))
