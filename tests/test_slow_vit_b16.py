"""End to end on a ViT-B/16-sized model (random weights): train → export → parity."""

import json

import pytest

from ringfold.cli import main


@pytest.mark.slow
def test_vit_b16_train_export_parity(tmp_path, demo_data, capsys):
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    assert (
        main(
            [
                "train",
                "--model",
                "ViT-B-16",
                "--random-init",
                "--method",
                "arc",
                "--rank",
                "50",
                "--layers",
                "last:8",
                "--data",
                str(demo_data),
                "--shots",
                "2",
                "--epochs",
                "1",
                "--batch-size",
                "8",
                "--max-eval",
                "8",
                "--no-augment",
                "--device",
                "cpu",
                "--out",
                str(run),
                "--quiet",
            ]
        )
        == 0
    )
    record = json.loads((run / "run.json").read_text())
    assert record["model"]["weights"]["kind"] == "random"
    # 8 blocks × 2 sites × 2 towers: visual 768·50 + 8·(50+768), text 512·50 + 8·(50+512) per site
    assert record["metrics"]["trainable_parameters"] == 2 * (768 * 50 + 8 * 818) + 2 * (512 * 50 + 8 * 562)
    assert main(["export", str(run), "--out", str(bundle), "--ref-count", "4", "--quiet"]) == 0
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["fold"]["fully_folded"] and manifest["onnx"]["inputs"][0]["shape"] == ["batch", 3, 224, 224]
    assert manifest["export"]["onnx_vs_torch_max_abs_logit"] <= 1e-4
    capsys.readouterr()
    assert main(["parity", str(bundle), "--run", str(run), "--provider", "cpu", "--report", str(tmp_path / "r")]) == 0
    report = json.loads((tmp_path / "r" / "parity.json").read_text())
    assert report["passed"] and all(c["max_abs_logit"] <= 1e-4 for c in report["comparisons"])
