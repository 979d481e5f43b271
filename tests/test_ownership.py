"""One ownership rule, walked through every command that writes a folder (ringfold/ownership.py).

For each: a first write records its files; writing again needs --overwrite; --overwrite replaces
ringfold's own, unchanged folder; a file ringfold wrote and the user then edited, or a file the user
added, is never replaced or deleted — the command refuses in one line naming it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ringfold.cli import main
from ringfold.errors import RingfoldError
from ringfold.ownership import (
    RECORD_FILE,
    check_owned_json,
    claim_folder,
    owned_directory,
    ownership_problem,
    record_files,
    write_owned_json,
)
from tests.helpers import one_line_error

TINY_TRAIN = ["--model", "ringfold-tiny-vit", "--random-init", "--quiet", "--epochs", "0", "--shots", "2"]


def _command(name: str, tmp: Path, run: Path, bundle: Path, raw_bundle: Path, data: Path) -> tuple[list[str], Path]:
    """argv without --overwrite, and the folder it writes."""
    out = tmp / f"{name} out"
    argv = {
        "train": ["train", *TINY_TRAIN, "--data", str(data), "--out", str(out)],
        "export": ["export", str(run), "--out", str(out), "--ref-count", "4", "--quiet"],
        "compress": ["compress", str(run), "--ranks", "1,1,1", "--iterations", "2", "--quiet", "--out", str(out)],
        "relabel": ["relabel", str(bundle), "--classes", "cat,dog,red fox", "--out", str(out)],
        "parity": ["parity", str(bundle), "--report", str(out)],
        "bench": ["bench", str(bundle), "--runs", "1", "--warmup", "0", "--batch-sizes", "1", "--out", str(out)],
        "deepstream": ["deepstream", str(raw_bundle), "--out", str(out)],
        "triton": ["triton", str(bundle), "--out", str(tmp / "repo"), "--name", "pets", "--precision", "fp32"],
    }[name]
    return argv, (tmp / "repo" / "pets" if name == "triton" else out)


COMMANDS = ["train", "compress", "export", "relabel", "parity", "bench", "deepstream", "triton"]


def _any_recorded_file(folder: Path) -> Path:
    record = json.loads((folder / RECORD_FILE).read_text())["files"]
    assert record, f"{folder}: the record lists no files"
    return folder / sorted(record)[0]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_folder_writer_follows_the_ownership_rule(
    name, tmp_path, tiny_run, tiny_bundle, raw_bundle, demo_data, capsys
):
    argv, out = _command(name, tmp_path, tiny_run, tiny_bundle, raw_bundle, demo_data)
    assert main(argv) == 0
    assert ownership_problem(out) is None
    capsys.readouterr()

    assert main(argv) == 2  # an existing folder needs --overwrite
    one_line_error(capsys, out.name, "already exists", "--overwrite")

    assert main([*argv, "--overwrite"]) == 0  # ringfold's own, unchanged: replaced
    capsys.readouterr()

    edited = _any_recorded_file(out)
    edited.write_bytes(edited.read_bytes() + b"\nmy edit")
    assert main([*argv, "--overwrite"]) == 2
    rel = edited.relative_to(out).as_posix()
    one_line_error(capsys, f"holds {rel}, changed since ringfold wrote it")
    assert edited.read_bytes().endswith(b"\nmy edit")


@pytest.mark.parametrize("name", ["export", "parity", "triton"])
def test_a_file_the_user_added_is_never_deleted(name, tmp_path, tiny_run, tiny_bundle, raw_bundle, demo_data, capsys):
    argv, out = _command(name, tmp_path, tiny_run, tiny_bundle, raw_bundle, demo_data)
    assert main(argv) == 0
    (out / "notes.md").write_text("mine")
    capsys.readouterr()
    assert main([*argv, "--overwrite"]) == 2
    one_line_error(capsys, "holds notes.md, which ringfold did not write")
    assert (out / "notes.md").read_text() == "mine"


def test_parity_refuses_a_report_folder_holding_the_users_parity_md(tiny_bundle, tmp_path, capsys):
    """The issue's case: `parity --report DIR` over a folder with the user's own parity.md."""
    report = tmp_path / "my reports"
    report.mkdir()
    (report / "parity.md").write_text("my notes on parity")
    assert main(["parity", str(tiny_bundle), "--report", str(report), "--overwrite"]) == 2
    one_line_error(capsys, "my reports", "ringfold did not write it")
    assert (report / "parity.md").read_text() == "my notes on parity"


def test_train_over_a_finished_run_is_refused_before_training(tiny_run, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    import ringfold.trainer.train as train_mod

    monkeypatch.setattr(train_mod, "Trainer", lambda *a: pytest.fail("the model was loaded before the refusal"))
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    assert main(["train", *TINY_TRAIN, "--data", "nowhere", "--out", str(run)]) == 2
    one_line_error(capsys, "already exists", "--overwrite", "--resume")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_a_run_records_only_the_files_training_wrote(tiny_run):
    record = json.loads((tiny_run / RECORD_FILE).read_text())
    assert record["written_by"] == "ringfold train"
    assert {"run.json", "adapters.safetensors", "train_config.json", "log.jsonl"} <= set(record["files"])
    assert ownership_problem(tiny_run) is None


def test_evaluate_out_file_needs_overwrite_and_is_never_replaced_once_edited(tmp_path, capsys):
    out = tmp_path / "eval.json"
    check_owned_json(out, "ringfold evaluate", overwrite=False)  # absent: fine
    write_owned_json(out, {"base_accuracy": 0.5}, "ringfold evaluate")
    with pytest.raises(RingfoldError, match="already exists; pass --overwrite"):
        check_owned_json(out, "ringfold evaluate", overwrite=False)
    check_owned_json(out, "ringfold evaluate", overwrite=True)  # ours, unchanged
    out.write_text(out.read_text().replace("0.5", "0.9"))
    with pytest.raises(RingfoldError, match="changed since ringfold wrote it"):
        check_owned_json(out, "ringfold evaluate", overwrite=True)
    users = tmp_path / "results.json"
    users.write_text('{"mine": 1}')
    with pytest.raises(RingfoldError, match="is not a file ringfold wrote"):
        check_owned_json(users, "ringfold evaluate", overwrite=True)


def test_evaluate_cli_refuses_an_existing_out_before_evaluating(tiny_run, tmp_path, capsys, monkeypatch):
    import ringfold.trainer.evaluate as evaluate_mod

    monkeypatch.setattr(evaluate_mod, "evaluate_run", lambda *a, **k: pytest.fail("evaluated before the refusal"))
    out = tmp_path / "mine.json"
    out.write_text("{}")
    assert main(["evaluate", str(tiny_run), "--out", str(out), "--overwrite"]) == 2
    one_line_error(capsys, "mine.json", "not a file ringfold wrote")
    assert out.read_text() == "{}"


def test_engine_slot_refuses_an_engine_ringfold_did_not_record(tmp_path):
    from ringfold.runtime.bundle.engines import check_engine_slot

    engines = tmp_path / "engines"
    engines.mkdir()
    engine = engines / "model-fp16-trt10.3-b1-8-16-aaaaaaaaaaaa.engine"
    check_engine_slot(engine)  # nothing there: fine
    engine.write_bytes(b"someone's engine")
    with pytest.raises(RingfoldError, match="not written by ringfold build-engine"):
        check_engine_slot(engine)
    record_files(engines, "ringfold build-engine", [engine.name])
    check_engine_slot(engine)  # recorded, unchanged: ringfold may rebuild it
    engine.write_bytes(b"patched by hand")
    with pytest.raises(RingfoldError, match="not written by ringfold build-engine"):
        check_engine_slot(engine)


def test_nested_records_judge_their_own_folders(tmp_path):
    """A bundle's engines/ carries its own record; the bundle is replaceable only if both hold."""
    with owned_directory(tmp_path / "b", "ringfold export") as tmp:
        (tmp / "model.onnx").write_bytes(b"onnx")
    engines = tmp_path / "b" / "engines"
    engines.mkdir()
    (engines / "x.engine").write_bytes(b"engine")
    assert ownership_problem(tmp_path / "b") == "holds engines/, which ringfold did not write"
    record_files(engines, "ringfold build-engine", ["x.engine"])
    assert ownership_problem(tmp_path / "b") is None
    (engines / "x.engine").write_bytes(b"changed")
    assert ownership_problem(tmp_path / "b") == "engines/ holds x.engine, changed since ringfold wrote it"


def test_links_and_damaged_records_are_never_trusted(tmp_path):
    with owned_directory(tmp_path / "r", "ringfold parity") as tmp:
        (tmp / "parity.md").write_text("report")
    (tmp_path / "r" / "link").symlink_to(tmp_path)
    assert "which ringfold did not write (not a regular file)" in ownership_problem(tmp_path / "r")
    (tmp_path / "r" / "link").unlink()
    (tmp_path / "r" / RECORD_FILE).write_text('{"format": "ringfold-files", "files": {"../../etc/passwd": "x"}}')
    assert "damaged ringfold file record" in ownership_problem(tmp_path / "r")


def test_claim_is_one_writer_at_a_time(tmp_path):
    with claim_folder(tmp_path / "run", "ringfold train"):
        with pytest.raises(RingfoldError, match="another ringfold process is writing it"):
            with claim_folder(tmp_path / "run", "ringfold train"):
                pass


@pytest.mark.parametrize(
    "name, argv",
    [
        ("export into its own run", ["export", "RUN", "--out", "RUN", "--overwrite", "--quiet"]),
        ("compress over its run", ["compress", "RUN", "--ranks", "1,1,1", "--out", "RUN", "--overwrite"]),
        ("parity report over its bundle", ["parity", "BUNDLE", "--report", "BUNDLE", "--overwrite"]),
        ("bench report over its bundle", ["bench", "BUNDLE", "--out", "BUNDLE", "--overwrite"]),
        ("deepstream over its bundle", ["deepstream", "RAW", "--out", "RAW", "--overwrite"]),
        ("relabel over its bundle", ["relabel", "BUNDLE", "--classes", "a,b", "--out", "BUNDLE", "--overwrite"]),
    ],
)
def test_an_output_never_replaces_what_the_command_reads(
    name, argv, tmp_path, tiny_run, tiny_bundle, raw_bundle, capsys
):
    """Even a folder that is wholly ringfold's is not replaced by an output made from it."""
    copies = {"RUN": tmp_path / "run", "BUNDLE": tmp_path / "bundle", "RAW": tmp_path / "raw"}
    for key, source in (("RUN", tiny_run), ("BUNDLE", tiny_bundle), ("RAW", raw_bundle)):
        shutil.copytree(source, copies[key])
    argv = [str(copies[a.split("/")[0]].joinpath(*a.split("/")[1:])) if a.split("/")[0] in copies else a for a in argv]
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert main(argv) == 2
    one_line_error(capsys, "is, holds or lies inside the")
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_train_overwrite_refused_later_keeps_the_old_run(tiny_run, tmp_path, capsys):
    """--overwrite clears the old run only at the first write: bad --data found while loading leaves it whole."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    empty = tmp_path / "no images"
    empty.mkdir()
    assert main(["train", *TINY_TRAIN, "--data", str(empty), "--out", str(run), "--overwrite"]) == 2
    capsys.readouterr()
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_a_refused_train_leaves_no_folder_behind(tmp_path, capsys):
    empty = tmp_path / "no images"
    empty.mkdir()
    assert main(["train", *TINY_TRAIN, "--data", str(empty), "--out", str(tmp_path / "new run")]) == 2
    assert not (tmp_path / "new run").exists()


def test_a_run_may_hold_the_bundle_exported_from_it(tiny_run, tmp_path, capsys):
    """Inside the run is fine (the bundle carries its own record, the run stays replaceable); over it is not."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    assert main(["export", str(run), "--out", str(run / "bundle"), "--ref-count", "4", "--quiet"]) == 0
    assert ownership_problem(run) is None and ownership_problem(run / "bundle") is None
