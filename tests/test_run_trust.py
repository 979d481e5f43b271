"""A run directory is user input: every field of run.json, train_config.json and the checkpoint is checked on load.

Each tampered file gets exit code 2, one line naming the file and the field, and nothing written.
"""

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ringfold.cli import main
from tests.helpers import one_line_error


def _copy_run(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    return run


def _snapshot(run):
    return {p.relative_to(run): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def _edit_json(path, edit):
    d = json.loads(path.read_text())
    edit(d)
    path.write_text(json.dumps(d))


# ----------------------------------------------------------------------------------------------- run.json
def _set(*keys_and_value):
    *keys, value = keys_and_value

    def edit(d):
        for key in keys[:-1]:
            d = d[key]
        d[keys[-1]] = value

    return edit


RUN_JSON_CASES = {
    "classnames_int": (_set("classnames", 3), ("field classnames", "must be a list of strings, got int")),
    "classnames_empty": (_set("classnames", []), ("field classnames", "empty")),
    "templates_not_a_list": (_set("templates", "a photo of a {}."), ("field templates", "list of strings")),
    "template_two_slots": (_set("templates", ["a {} of a {}."]), ("field templates[0]", "exactly one '{}'")),
    "preprocess_std_str": (_set("model", "preprocess", "std", "x"), ("field model.preprocess", "std")),
    "adapter_unknown_method": (_set("adapter", "method", "lora"), ("field adapter.method", "lora")),
    "adapter_rank_str": (_set("adapter", "rank", "8"), ("field adapter.rank", "integer")),
    "weights_seed_str": (_set("model", "weights", "seed", "0"), ("field model.weights.seed", "got str")),
    "weights_kind_unknown": (_set("model", "weights", "kind", "s3"), ("field model.weights.kind", "s3")),
    "model_name_list": (_set("model", "name", ["ViT-B-16"]), ("field model.name", "string")),
    "format_version_str": (_set("format_version", "1"), ("field format_version", "integer, got str")),
    "format_version_newer": (_set("format_version", 99), ("format_version", "newer ringfold", "upgrade ringfold")),
    "data_not_a_mapping": (_set("data", ["x"]), ("field data", "mapping")),
}


@pytest.mark.parametrize("case", sorted(RUN_JSON_CASES))
def test_tampered_run_json_is_one_line_naming_the_field(tiny_run, tmp_path, capsys, case):
    edit, needles = RUN_JSON_CASES[case]
    run = _copy_run(tiny_run, tmp_path)
    _edit_json(run / "run.json", edit)
    out = tmp_path / "b"
    assert main(["export", str(run), "--out", str(out), "--quiet"]) == 2
    one_line_error(capsys, "run.json", *needles)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_deeply_nested_run_json_is_one_line(tiny_run, tmp_path, capsys):
    run = _copy_run(tiny_run, tmp_path)
    (run / "run.json").write_text("[" * 200_000 + "]" * 200_000)
    assert main(["export", str(run), "--out", str(tmp_path / "b"), "--quiet"]) == 2
    one_line_error(capsys, "run.json", "not valid JSON")
    assert not (tmp_path / "b").exists()


def test_run_json_that_is_not_a_mapping(tiny_run, tmp_path, capsys):
    run = _copy_run(tiny_run, tmp_path)
    (run / "run.json").write_text("[1, 2]")
    assert main(["export", str(run), "--out", str(tmp_path / "b"), "--quiet"]) == 2
    one_line_error(capsys, "run.json", "not a ringfold run.json")
    assert not (tmp_path / "b").exists()


def test_nan_in_adapters_blames_the_file_not_the_learning_rate(tiny_run, tmp_path, capsys):
    # the trainer stops on a non-finite adapter weight before save_run, so NaN in the file means it was altered
    run = _copy_run(tiny_run, tmp_path)
    tensors = load_file(str(run / "adapters.safetensors"))
    key = next(iter(tensors))
    tensors[key][0] = float("inf")
    save_file(tensors, str(run / "adapters.safetensors"))
    assert main(["export", str(run), "--out", str(tmp_path / "b"), "--quiet"]) == 2
    err = one_line_error(capsys, "adapters.safetensors", "NaN/Inf", "damaged or was modified")
    assert "--lr" not in err
    assert not (tmp_path / "b").exists()


# -------------------------------------------------------------------------------------- train_config.json
def _del(key):
    return lambda d: d.pop(key)


CONFIG_CASES = {
    "unknown_key": (_set("learning_rate", 0.1), ("field learning_rate", "unknown")),
    "epochs_str": (_set("epochs", "ten"), ("field epochs", "must be an integer, got str")),
    "epochs_bool": (_set("epochs", True), ("field epochs", "got bool")),
    "epochs_negative": (_set("epochs", -1), ("field epochs", ">= 0")),
    "missing_key": (_del("batch_size"), ("field batch_size", "missing")),
    "augment_int": (_set("augment", 1), ("field augment", "true or false, got int")),
    "model_null": (_set("model", None), ("field model", "string, got null")),
    "lr_nan": (_set("lr", float("nan")), ("field lr", "finite number")),
    "optimizer_unknown": (_set("optimizer", "lion"), ("field optimizer", "lion")),
    "adapter_rank_str": (_set("adapter", "rank", "8"), ("field adapter.rank", "integer, got str")),
    "adapter_unknown_key": (_set("adapter", "rnak", 8), ("field adapter", "rnak")),
    "device_garbage": (_set("device", "gpu please"), ("field device",)),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_tampered_train_config_is_one_line_naming_the_field(tiny_run, tmp_path, capsys, case):
    edit, needles = CONFIG_CASES[case]
    run = _copy_run(tiny_run, tmp_path)
    _edit_json(run / "train_config.json", edit)
    before = _snapshot(run)
    assert main(["train", "--resume", str(run), "--quiet"]) == 2
    one_line_error(capsys, "train_config.json", *needles)
    assert _snapshot(run) == before


def test_train_config_that_is_not_a_mapping(tiny_run, tmp_path, capsys):
    run = _copy_run(tiny_run, tmp_path)
    (run / "train_config.json").write_text('"ten epochs"')
    before = _snapshot(run)
    assert main(["train", "--resume", str(run), "--quiet"]) == 2
    one_line_error(capsys, "train_config.json", "mapping")
    assert _snapshot(run) == before


def test_train_config_round_trips_what_the_trainer_and_cli_write(tiny_run, tmp_path):
    from ringfold.trainer.config import load_train_config

    cfg = load_train_config(tiny_run / "train_config.json")
    assert cfg.to_dict() == json.loads((tiny_run / "train_config.json").read_text())
    # the adapter config is stored resolved: every setting, the method's defaults filled in
    assert cfg.to_dict()["adapter"] == {**cfg.adapter.to_dict(), "rank": 8, "layers": "all"}
    assert set(cfg.to_dict()["adapter"]) == {"method", "towers", "layers", "sites", "scale", "rank", "dropout"} | {
        "mlp_lambda_init"
    }
    # earlier ringfold stored only the overrides, AdaRing's --fine-ranks as typed ("2,4,2"): such a file must load
    d = {**cfg.to_dict(), "method": "adaring", "adapter": {"fine_ranks": "2,4,2", "towers": ["visual"]}}
    (tmp_path / "train_config.json").write_text(json.dumps(d))
    assert load_train_config(tmp_path / "train_config.json").adapter.fine_ranks == (2, 4, 2)


# ------------------------------------------------------------------------------------ checkpoint.safetensors
def _tamper_checkpoint(run, edit_meta=None, edit_tensors=None, metadata=True):
    path = run / "checkpoint.safetensors"
    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads(fh.metadata()["ringfold_checkpoint"])
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open is not a dict)
    if edit_meta:
        edit_meta(meta)
    if edit_tensors:
        edit_tensors(tensors)
    save_file(tensors, str(path), metadata={"ringfold_checkpoint": json.dumps(meta)} if metadata else None)


def _nan_at(key_start):
    def edit(tensors):
        key = next(k for k in sorted(tensors) if k.startswith(key_start))
        tensors[key] = tensors[key].clone()
        tensors[key].view(-1)[0] = float("nan")

    return edit


def _shrink(key_end):
    def edit(tensors):
        key = next(k for k in sorted(tensors) if k.startswith("adapter.") and k.endswith(key_end))
        tensors[key] = tensors[key][:, :3].contiguous()

    return edit


CHECKPOINT_CASES = {
    "missing_loop": ({"edit_meta": _del("loop")}, ("metadata key loop", "missing")),
    "negative_epoch": ({"edit_meta": _set("loop", "epoch", -1)}, ("metadata key loop.epoch", "got -1")),
    "step_str": ({"edit_meta": _set("loop", "step", "4")}, ("metadata key loop.step", "integer, got str")),
    "history_empty": ({"edit_meta": _set("loop", "history", [])}, ("metadata key loop.history", "empty")),
    "sums_str": ({"edit_meta": _set("loop", "sums", {"seen": "x"})}, ("loop.sums", "number")),
    "lr_str": (
        {"edit_meta": lambda m: m["optimizer"]["param_groups"][0].update(lr="x")},
        ("metadata key optimizer.param_groups[0].lr", "got str"),
    ),
    "param_groups_not_list": (
        {"edit_meta": _set("optimizer", "param_groups", {})},
        ("metadata key optimizer.param_groups", "list"),
    ),
    "scheduler_unknown_key": (
        {"edit_meta": _set("scheduler", "optimizer", 1)},
        ("metadata key scheduler.optimizer", "unknown"),
    ),
    "rng_python_short": ({"edit_meta": _set("rng", "python", [3, [1, 2], None])}, ("metadata key rng.python",)),
    "no_metadata": ({"metadata": False}, ("ringfold_checkpoint",)),
    "nan_optimizer": ({"edit_tensors": _nan_at("optim.0.exp_avg")}, ("tensor optim.0.exp_avg", "NaN/Inf")),
    "nan_adapter": ({"edit_tensors": _nan_at("adapter.")}, ("tensor adapter.", "NaN/Inf")),
    "missing_rng_torch": ({"edit_tensors": lambda t: t.pop("rng.torch")}, ("tensor rng.torch", "missing")),
    "adapter_shape": ({"edit_tensors": _shrink("down")}, ("tensor adapter.", "shape")),
    "adapter_missing": (
        {"edit_tensors": lambda t: t.pop(next(k for k in sorted(t) if k.startswith("adapter.")))},
        ("adapter tensors do not match",),
    ),
    "optimizer_bad_index": (
        {"edit_tensors": lambda t: t.update({"optim.x.exp_avg": torch.zeros(1)})},
        ("tensor optim.x.exp_avg",),
    ),
}


@pytest.mark.parametrize("case", sorted(CHECKPOINT_CASES))
def test_tampered_checkpoint_is_one_line_naming_the_key(tiny_run, tmp_path, capsys, case):
    tamper, needles = CHECKPOINT_CASES[case]
    run = _copy_run(tiny_run, tmp_path)
    _tamper_checkpoint(run, **tamper)
    before = _snapshot(run)
    assert main(["train", "--resume", str(run), "--quiet"]) == 2
    err = one_line_error(capsys, "checkpoint.safetensors", *needles)
    assert "--lr" not in err  # the trainer never saves a non-finite state: a bad checkpoint was altered
    assert _snapshot(run) == before


def test_trainer_never_saves_a_nan_checkpoint(tmp_path):
    from ringfold.errors import RingfoldError
    from ringfold.trainer.checkpoint import CHECKPOINT_FILE, LoopState, save_checkpoint
    from ringfold.trainer.train import cosine_with_warmup

    adapters = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(adapters.parameters(), lr=1e-2)
    scheduler = cosine_with_warmup(optimizer, 1, 4)
    adapters(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    save_checkpoint(tmp_path, adapters, optimizer, scheduler, LoopState(step=1))
    good = (tmp_path / CHECKPOINT_FILE).read_bytes()
    with torch.no_grad():
        adapters.weight[0, 0] = float("nan")
    with pytest.raises(RingfoldError, match="diverged"):
        save_checkpoint(tmp_path, adapters, optimizer, scheduler, LoopState(step=2))
    assert (tmp_path / CHECKPOINT_FILE).read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_FILE]  # no temporary left behind


@pytest.mark.parametrize(
    "names, raw, needle",
    [
        (["cat", "dog\u2028fox"], False, "U+2028"),
        (["cat", "Cat"], False, "same class to the model"),
        (["cat", "red;fox"], True, "';'"),
    ],
)
def test_run_class_names_a_bundle_cannot_carry_are_refused_before_export(
    tiny_run, tmp_path, capsys, monkeypatch, names, raw, needle
):
    """labels.json and DeepStream's label file are written from run.json's classnames: checked first."""
    import ringfold.exporter.export as export_mod

    run = _copy_run(tiny_run, tmp_path)
    _edit_json(run / "run.json", _set("classnames", names + ["bird", "fish"][: 4 - len(names)]))
    monkeypatch.setattr(export_mod, "load_adapted_model", lambda *a: pytest.fail("loaded before the refusal"))
    out = tmp_path / "b"
    argv = ["export", str(run), "--out", str(out), "--quiet", "--synthetic-ref"] + (
        ["--raw-input", "float32"] if raw else []
    )
    assert main(argv) == 2
    one_line_error(capsys, needle)
    assert not out.exists()
