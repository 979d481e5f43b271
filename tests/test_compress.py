import json

import numpy as np
import tensorly as tl

from ringfold.cli import main
from ringfold.trainer.compress import tr_decompose
from ringfold.trainer.run import write_synthetic_run


def test_known_tensor_ring_is_recovered_at_its_true_ranks():
    rng = np.random.default_rng(0)
    cores = [rng.normal(size=(2, 48, 3)), rng.normal(size=(3, 5, 2)), rng.normal(size=(2, 48, 2))]
    tensor = tl.tr_to_tensor(cores)
    _, err = tr_decompose(tensor, (2, 3, 2), n_iter=300)
    assert err <= 1e-5


def test_error_falls_as_ranks_grow():
    rng = np.random.default_rng(1)
    d, layers, r = 40, 6, 6
    down = rng.normal(size=(d, r))
    tensor = np.stack([(down * rng.normal(size=r)) @ down.T for _ in range(layers)], axis=1)  # ARC-shaped
    errors = [tr_decompose(tensor, ranks, n_iter=200)[1] for ranks in [(1, 1, 1), (2, 2, 2), (3, 3, 3), (6, 6, 6)]]
    assert all(b <= a + 1e-6 for a, b in zip(errors, errors[1:], strict=False)), errors
    assert errors[0] > 0.1 and errors[-1] < 1e-4, errors


def test_compress_cli_writes_an_adaring_run_that_exports(tmp_path, capsys):
    src = write_synthetic_run(
        tmp_path / "arc",
        "ringfold-tiny-vit",
        {"method": "arc", "rank": 2, "layers": "all"},
        ["a", "b", "c"],
        adapter_std=0.1,
    )
    out = tmp_path / "ring"
    assert main(["compress", str(src), "--ranks", "2,4,4", "--coarse-ranks", "1,1,1", "--out", str(out)]) == 0
    report = json.loads((out / "compress_report.json").read_text())
    run = json.loads((out / "run.json").read_text())
    assert run["adapter"]["method"] == "adaring" and run["adapter"]["fine_ranks"] == [2, 4, 4]
    # ARC rank 2 → A_l = D diag(λ_l) Dᵀ has exact TR ranks ≤ (2, 2·?, ·); the fit must be close and the model agree
    assert max(s["final_error"] for s in report["sites"]) < 0.05
    assert report["parity_vs_source"]["top1_agreement"] == 1.0
    assert report["parity_vs_source"]["cosine_min"] > 0.999
    assert main(["export", str(out), "--out", str(tmp_path / "bundle"), "--quiet"]) == 0
    assert json.loads((tmp_path / "bundle" / "manifest.json").read_text())["fold"]["fully_folded"] is True
