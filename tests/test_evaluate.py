"""`ringfold evaluate` (CoOp base-to-novel: base, novel, H) and the examples/b2n recipe."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY, train_tiny

ROOT = Path(__file__).resolve().parents[1]
B2N = ROOT / "examples" / "b2n"


@pytest.fixture(scope="module")
def coop_tiny(tmp_path_factory) -> Path:
    """A CoOp-format stand-in: split_zhou_Tiny.json with [relpath, label, classname] over the demo images."""
    from ringfold.demo_data import make_demo_dataset

    root = tmp_path_factory.mktemp("coop")
    make_demo_dataset(root, per_class=4, size=64)
    folders = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())
    split = {"train": [], "val": [], "test": []}
    for label, folder in enumerate(folders):
        for name, where in (("train", "train"), ("test", "test")):
            for image in sorted((root / where / folder).iterdir()):
                split[name].append([f"{where}/{folder}/{image.name}", label, folder])
    split["val"] = split["test"][:2]
    path = root / "split_zhou_Tiny.json"
    path.write_text(json.dumps(split))
    return path


def _train(cfg_data: Path, out: Path, classes: str) -> Path:
    return train_tiny(out, cfg_data, settings={"classes": classes, "shots": 2})


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, coop_tiny) -> Path:
    return _train(coop_tiny, tmp_path_factory.mktemp("b2n") / "run", "base")


def _test_counts(split_json: Path) -> dict[int, int]:
    counts: dict[int, int] = {}
    for _, label, _ in json.loads(split_json.read_text())["test"]:
        counts[label] = counts.get(label, 0) + 1
    return counts


def test_harmonic_mean():
    from ringfold.trainer.evaluate import harmonic_mean

    assert harmonic_mean(0, 0) == 0
    assert harmonic_mean(1, 0.5) == pytest.approx(2 / 3)
    assert harmonic_mean(0.8, 0.8) == pytest.approx(0.8)
    assert harmonic_mean(1, 0) == 0


def test_base_to_novel(base_run, coop_tiny):
    from ringfold.trainer.evaluate import evaluate_run, format_result, harmonic_mean

    run = json.loads((base_run / "run.json").read_text())
    assert run["data"]["classes"] == "base" and len(run["classnames"]) == 2

    result = evaluate_run(base_run, coop_tiny, device="cpu", progress=False)
    counts = _test_counts(coop_tiny)
    base, novel = result["subsets"]["base"], result["subsets"]["novel"]
    assert base["images"] == counts[0] + counts[1] == 4
    assert novel["images"] == counts[2] + counts[3] == 4
    assert base["classes"] == novel["classes"] == 2
    b, n = result["accuracy"]["base"], result["accuracy"]["novel"]
    assert 0 <= b <= 1 and 0 <= n <= 1
    assert b == base["correct"] / 4 and n == novel["correct"] / 4
    assert math.isclose(result["accuracy"]["hm"], harmonic_mean(b, n))
    assert math.isclose(result["accuracy"]["hm"], 0 if b + n == 0 else 2 * b * n / (b + n))
    assert result["random_weights"] is True and result["protocol"] == "base-to-novel"
    assert "random weights" in format_result(result)
    # data defaults to the run's recorded dataset
    again = evaluate_run(base_run, device="cpu", progress=False)
    assert again["accuracy"] == result["accuracy"]


def test_novel_uses_new_class_names(base_run, coop_tiny, monkeypatch):
    """The novel subset is scored against the new classes' names through the adapted text tower."""
    import ringfold.trainer.evaluate as ev

    seen = []
    real = ev.class_embeddings

    def spy(model, tokenizer, classnames, templates, device="cpu"):
        seen.append((list(classnames), list(templates)))
        return real(model, tokenizer, classnames, templates, device)

    monkeypatch.setattr(ev, "class_embeddings", spy)
    ev.evaluate_run(base_run, coop_tiny, device="cpu", progress=False)
    run = json.loads((base_run / "run.json").read_text())
    names = [c.replace("_", " ") for c in sorted({e[2] for e in json.loads(coop_tiny.read_text())["train"]})]
    assert seen == [(names[:2], run["templates"]), (names[2:], run["templates"])]
    assert names[:2] == run["classnames"]


def test_cli_evaluate_json_and_out(base_run, coop_tiny, tmp_path, capsys):
    from ringfold.cli import main

    out = tmp_path / "r" / "eval.json"
    code = main(["evaluate", str(base_run), "--data", str(coop_tiny), "--device", "cpu", "--json", "--out", str(out)])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads(out.read_text())
    assert written.pop("ringfold_written")["by"] == "ringfold evaluate"  # its ownership mark (ringfold.ownership)
    assert printed == written
    assert set(printed["accuracy"]) == {"base", "novel", "hm"}
    assert "random weights" in printed["weights"] and "random weights" in printed["note"]

    assert main(["evaluate", str(base_run), "--data", str(coop_tiny), "--device", "cpu", "--quiet"]) == 0
    table = capsys.readouterr().out
    assert "base" in table and "novel" in table and "random weights" in table


def test_all_run_reports_all(tmp_path, coop_tiny):
    from ringfold.trainer.evaluate import evaluate_run

    run = _train(coop_tiny, tmp_path / "all", "all")
    result = evaluate_run(run, coop_tiny, device="cpu", progress=False)
    assert set(result["accuracy"]) == {"all"} and result["subsets"]["all"]["images"] == 8


def test_bad_input(base_run, coop_tiny, tmp_path, capsys):
    from ringfold.cli import main
    from ringfold.errors import RingfoldError
    from ringfold.trainer.evaluate import evaluate_run

    assert main(["evaluate", str(tmp_path / "nope"), "--data", str(coop_tiny)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope" in err and "ringfold train" in err

    # a base run evaluated on data holding only its base classes: no new classes to score
    base_only = json.loads(coop_tiny.read_text())
    base_only = {k: [e for e in v if e[1] < 2] for k, v in base_only.items()}
    only = coop_tiny.parent / "split_zhou_BaseOnly.json"
    only.write_text(json.dumps(base_only))
    with pytest.raises(RingfoldError, match="full dataset"):
        evaluate_run(base_run, only, device="cpu", progress=False)


@pytest.mark.slow
def test_cli_missing_run_subprocess(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "ringfold", "evaluate", str(tmp_path / "missing"), "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "missing" in proc.stderr


def test_datasets_json_templates():
    datasets = json.loads((B2N / "datasets.json").read_text())
    assert len(datasets) == 11
    assert {"ImageNet", "Caltech101", "OxfordPets", "StanfordCars", "Flowers102", "Food101"} <= set(datasets)
    assert {"FGVCAircraft", "SUN397", "DTD", "EuroSAT", "UCF101"} <= set(datasets)
    for name, spec in datasets.items():
        assert spec["template"].count("{}") == 1, name
        assert spec["template"].format("x") != spec["template"], name
        assert spec["split_json"] and spec["image_root"], name
    assert datasets["OxfordPets"]["template"] == "a photo of a {}, a type of pet."
    assert datasets["DTD"]["template"] == "{} texture."


def test_run_b2n_dry_run(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(B2N / "run_b2n.py"), "--root", str(tmp_path), "--dataset", "OxfordPets"]
        + ["--seeds", "1", "2", "--shots", "8", "--method", "adaring", "--dry-run", "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    trains = [ln for ln in lines if ln.startswith("ringfold train")]
    evals = [ln for ln in lines if ln.startswith("ringfold evaluate")]
    assert len(trains) == len(evals) == 2
    assert "--classes base" in trains[0] and "--shots 8" in trains[0] and "--seed 1" in trains[0]
    assert "--method adaring" in trains[0] and "a type of pet" in trains[0] and "--seed 2" in trains[1]
    assert "split_zhou_OxfordPets.json" in evals[0] and "seed1" in evals[0]
    assert not (tmp_path / "o").exists()


def test_run_b2n_end_to_end(tmp_path, coop_tiny, monkeypatch):
    """The recipe in-process on the tiny stand-in: trains per seed, evaluates, writes the summary."""
    sys.path.insert(0, str(B2N))
    try:
        import run_b2n
    finally:
        sys.path.remove(str(B2N))
    monkeypatch.setitem(
        run_b2n.DATASETS,
        "OxfordPets",
        {"split_json": coop_tiny.name, "image_root": ".", "template": "a photo of a {}, a type of pet."},
    )
    out = tmp_path / "o"
    argv = ["--root", str(coop_tiny.parent), "--dataset", "OxfordPets", "--model", TINY, "--random-init"]
    argv += ["--epochs", "1", "--shots", "2", "--seeds", "1", "2", "--device", "cpu", "--out", str(out)]
    argv += ["--train-arg=--rank=4", "--train-arg=--quiet", "--train-arg=--no-augment", "--train-arg=--batch-size=8"]
    assert run_b2n.main(argv) == 0
    summary = json.loads((out / "OxfordPets" / "arc" / "summary.json").read_text())
    assert summary["seeds"] == [1, 2] and summary["random_weights"]
    per = summary["per_seed"]
    for key in ("base", "novel", "hm"):
        assert summary["mean"][key] == pytest.approx((per["1"][key] + per["2"][key]) / 2)
    assert "random weights" in (out / "OxfordPets" / "arc" / "summary.md").read_text()
