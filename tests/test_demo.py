import json

import pytest

from ringfold.demo import run_demo


@pytest.mark.slow
def test_demo_runs_offline_learns_and_passes_parity(tmp_path, capsys):
    code = run_demo(tmp_path / "demo", quiet=True)
    out = capsys.readouterr().out
    assert code == 0, out
    metrics = json.loads((tmp_path / "demo" / "run" / "run.json").read_text())["metrics"]
    assert metrics["final_eval_acc"] >= metrics["chance_acc"] + 0.2  # 4 classes: chance 25%
    assert "RANDOM WEIGHTS" in out and "parity PASSED" in out
    assert (tmp_path / "demo" / "run" / "curves.png").stat().st_size > 1000
