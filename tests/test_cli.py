import json

from ringfold.cli import main


def test_params_prints_arc_paper_count(capsys):
    code = main(
        ["params", "--model", "ViT-B-16", "--method", "arc", "--rank", "50", "--layers", "all", "--towers", "visual"]
    )
    assert code == 0
    assert "96,432" in capsys.readouterr().out


def test_unknown_option_suggests_the_right_one(capsys):
    try:
        main(["classify", "bundle", "x.jpg", "--top_k", "3"])
    except SystemExit as exc:
        assert exc.code == 2
    err = capsys.readouterr().err
    assert "did you mean --top-k" in err and len(err.strip().splitlines()) == 1


def test_unknown_option_is_reported_by_its_subcommand_with_only_its_options(capsys):
    """bench has no --skip-bad (classify does): no suggestion of another command's option."""
    try:
        main(["bench", "bundle", "--skip-bad"])
    except SystemExit as exc:
        assert exc.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ringfold bench: error: unrecognized arguments: --skip-bad")
    assert err.endswith("(see ringfold bench --help)") and "did you mean --skip-bad" not in err
    assert len(err.splitlines()) == 1


def test_train_on_missing_data_is_one_line_exit_2(tmp_path, capsys):
    code = main(
        [
            "train",
            "--model",
            "ringfold-tiny-vit",
            "--random-init",
            "--data",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "run"),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "nope" in err
    assert not (tmp_path / "run").exists()


def test_classify_json_and_parity_cli(tiny_bundle, tiny_run, demo_data, tmp_path, capsys):
    img = sorted((demo_data / "test").rglob("*.png"))[0]
    assert main(["classify", str(tiny_bundle), str(img), "--json", "--top-k", "2", "--provider", "cpu"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["path"] == str(img) and len(row["top"]) == 2

    report = tmp_path / "rep"
    code = main(
        [
            "parity",
            str(tiny_bundle),
            "--run",
            str(tiny_run),
            "--images",
            str(demo_data / "test"),
            "--report",
            str(report),
            "--provider",
            "cpu",
        ]
    )
    assert code == 0
    data = json.loads((report / "parity.json").read_text())
    names = [c["name"] for c in data["comparisons"]]
    assert any("--images" in n for n in names) and data["passed"]
    assert all(p["max_abs"] <= 1e-5 for p in data["preprocessing"])


def test_parity_gate_fails_with_exit_1_when_tolerance_is_unachievable(tiny_bundle, tmp_path, capsys):
    code = main(
        ["parity", str(tiny_bundle), "--max-abs-logit", "1e-12", "--report", str(tmp_path / "r"), "--provider", "cpu"]
    )
    assert code == 1
    captured = capsys.readouterr()
    assert "FAILED" in captured.out
    # the summary names what failed and why, and the pass line what passed (preprocessing is not a tolerance here)
    assert f"parity gate FAILED for {tiny_bundle}: fp32 (max |Δlogit|" in captured.err
    assert f"parity gate passed for {tiny_bundle}: preprocessing" in captured.out


def test_parity_images_without_run_is_refused(tiny_bundle, capsys):
    assert main(["parity", str(tiny_bundle), "--images", "x"]) == 2
    assert "--run" in capsys.readouterr().err


def test_params_adaring_default_breakdown(capsys):
    assert main(["params", "--model", "ViT-B-16", "--method", "adaring"]) == 0
    out = capsys.readouterr().out
    assert "61,888" in out and "combinator 16" in out and "fine 9,280" in out and "coarse 3,104" in out


def test_train_nproc_relaunches_itself_as_python_m_ringfold_train_under_torchrun(monkeypatch, capsys):
    import subprocess
    import sys

    calls = []
    monkeypatch.setattr(subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    argv = ["train", "--nproc", "2", "--data", "D", "--nproc=2", "--random-init", "--out", "O", "--quiet"]
    assert main(argv) == 0
    runner = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert calls == [[*runner, "-m", "ringfold", "train", "--data", "D", "--random-init", "--out", "O", "--quiet"]]
    assert "launching: " in capsys.readouterr().err
