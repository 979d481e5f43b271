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


# --------------------------------------------------------------------------- issue 12: fast solver, progress, sweep
def _ring_tensor(ranks, d=24, layers=5, seed=3):
    rng = np.random.default_rng(seed)
    r0, r1, r2 = ranks
    return tl.tr_to_tensor(
        [rng.normal(size=(r0, d, r1)), rng.normal(size=(r1, layers, r2)), rng.normal(size=(r2, d, r0))]
    )


def test_new_solver_is_at_least_as_accurate_as_tensorly_als():
    from tensorly.decomposition import tensor_ring_als

    rng = np.random.default_rng(5)
    down = rng.normal(size=(40, 6))
    arc = np.stack([(down * rng.normal(size=6)) @ down.T for _ in range(6)], axis=1)
    for tensor, ranks in [(rng.normal(size=(30, 5, 30)), (2, 4, 2)), (arc, (2, 2, 2)), (arc, (2, 4, 2))]:
        norm = np.linalg.norm(tensor)
        old = min(
            float(
                np.linalg.norm(
                    tensor
                    - tl.tr_to_tensor(
                        tensor_ring_als(tensor, [*ranks, ranks[0]], n_iter_max=100, tol=1e-10, random_state=k)
                    )
                )
                / norm
            )
            for k in range(3)
        )  # the former solver: best of 3 random-start runs, 100 iterations, tol 1e-10
        _, new = tr_decompose(tensor, ranks)
        assert new <= old + 1e-3, (ranks, new, old)


def test_fit_is_deterministic_and_reports_progress():
    from ringfold.trainer.tensor_ring import fit_tensor_ring

    tensor = _ring_tensor((2, 2, 2)) + 0.1 * np.random.default_rng(0).normal(size=(24, 5, 24))
    seen = []
    a = fit_tensor_ring(tensor, (2, 2, 2), progress=lambda sweep, err: seen.append((sweep, err)))
    b = fit_tensor_ring(tensor, (2, 2, 2))
    assert a.error == b.error and all(np.array_equal(x, y) for x, y in zip(a.cores, b.cores, strict=True))
    assert [s for s, _ in seen] == list(range(a.sweeps + 1)) and a.stopped in ("converged", "max_sweeps", "exact")
    lines = []
    tr_decompose(tensor, (2, 2, 2), log=lines.append, label="x ")
    assert any("starts after" in line for line in lines) and "rel. error" in lines[-1]


def test_sweep_progress_is_a_heartbeat_not_a_line_per_sweep(monkeypatch):
    """--ranks auto ran ~1000 sweeps and printed a line for each; now one line per PROGRESS_EVERY_S."""
    from ringfold.trainer import compress

    tensor = np.random.default_rng(1).normal(size=(24, 5, 24))  # no exact ring: every sweep runs
    monkeypatch.setattr(compress, "PROGRESS_EVERY_S", 3600.0)
    lines = []
    tr_decompose(tensor, (2, 2, 2), n_iter=60, tol=0.0, time_budget=None, log=lines.append, label="x ")
    assert len(lines) == 2 and not any(line.startswith("x sweep ") for line in lines)  # start + summary
    monkeypatch.setattr(compress, "PROGRESS_EVERY_S", 0.0)
    lines = []
    tr_decompose(tensor, (2, 2, 2), n_iter=60, tol=0.0, time_budget=None, log=lines.append, label="x ")
    assert sum(line.startswith("x sweep ") for line in lines) == 60 - compress.PROBE_SWEEPS


def test_sweep_picks_the_ranks_of_a_known_ring():
    from ringfold.trainer.compress import SWEEP_RANKS, rank_sweep

    tensors = {"a": _ring_tensor((2, 4, 2)), "b": _ring_tensor((2, 4, 2), d=16, seed=4)}
    sweep, fits = rank_sweep(tensors, (1, 1, 1), max_error=0.01)
    assert sweep["chosen"] == [2, 4, 2] and sweep["warning"] is None
    assert [p["fine_ranks"] for p in sweep["points"]] == [list(r) for r in SWEEP_RANKS]
    chosen = next(p for p in sweep["points"] if p["fine_ranks"] == [2, 4, 2])
    assert chosen["max_error"] <= 0.01 and max(f.final_error for f in fits.values()) <= 0.01
    assert all(p["max_error"] > 0.01 for p in sweep["points"][:2])  # (1,1,1) and (2,2,2) are too small
    # nothing reaches an impossible threshold: the most accurate is kept, with a warning
    sweep, _ = rank_sweep(
        {"a": np.random.default_rng(0).normal(size=(12, 4, 12))}, candidates=[(1, 1, 1), (2, 2, 2)], max_error=1e-6
    )
    assert sweep["chosen"] == [2, 2, 2] and "no candidate ranks" in sweep["warning"]


def _arc_run(tmp_path, rank=2):
    return write_synthetic_run(
        tmp_path / f"arc{rank}",
        "ringfold-tiny-vit",
        {"method": "arc", "rank": rank, "layers": "all"},
        ["a", "b", "c"],
        adapter_std=0.1,
    )


def test_compress_warns_when_the_error_is_high_and_shows_progress(tmp_path, capsys):
    src = _arc_run(tmp_path, rank=8)
    out = tmp_path / "ring"
    assert main(["compress", str(src), "--ranks", "1,1,1", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    report = json.loads((out / "compress_report.json").read_text())
    assert max(s["final_error"] for s in report["sites"]) > 0.5
    warning = [line for line in captured.err.splitlines() if line.startswith("warning: the ring keeps only")]
    assert len(warning) == 1 and "--ranks auto" in warning[0]
    assert report["warnings"] == warning and warning[0] in (out / "compress_report.md").read_text()
    assert sum("rel. error" in line for line in captured.err.splitlines()) >= 2 * len(report["sites"])
    assert "checking parity" in captured.err
    # --quiet: no progress, the warning stays in the report
    assert main(["compress", str(src), "--ranks", "1,1,1", "--quiet", "--out", str(tmp_path / "q")]) == 0
    assert capsys.readouterr().err == ""


def test_compress_ranks_auto_sweeps_plots_and_keeps_the_smallest_good_ranks(tmp_path, capsys):
    from ringfold.cli import build_parser

    assert build_parser().parse_args(["compress", "r", "--ranks", "auto", "--out", "o"]).ranks == "auto"
    assert build_parser().parse_args(["compress", "r", "--ranks", "2,4,2", "--out", "o"]).ranks == "2,4,2"
    src = _arc_run(tmp_path)
    out = tmp_path / "ring"
    assert main(["compress", str(src), "--ranks", "2,4", "--out", str(out)]) == 2
    assert "--ranks: must be three positive integers R0,R1,R2 (e.g. 2,4,2) or auto" in capsys.readouterr().err
    assert main(["compress", str(src), "--ranks", "auto", "--max-error", "0.05", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    sweep = json.loads((out / "rank_sweep.json").read_text())
    assert (out / "rank_sweep.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads((out / "compress_report.json").read_text())
    good = [p for p in sweep["points"] if p["max_error"] <= 0.05]
    assert good and sweep["chosen"] == min(good, key=lambda p: p["parameters"])["fine_ranks"]
    assert report["fine_ranks"] == sweep["chosen"] and report["ranks_chosen_by"] == "sweep"
    chosen = next(p for p in sweep["points"] if p["fine_ranks"] == sweep["chosen"])
    assert chosen["parameters"] == report["adaring_parameters"]  # the sweep counts what the run holds
    assert sweep["source_parameters"] == report["source_parameters"]
    assert "| fine ranks | AdaRing params |" in captured.out and "chosen" in captured.out
    assert json.loads((out / "run.json").read_text())["adapter"]["fine_ranks"] == sweep["chosen"]


def test_compress_leaves_no_half_written_out(tmp_path, monkeypatch):
    import pytest

    import ringfold.trainer.compress as compress

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(compress, "write_text", fail)
    src = _arc_run(tmp_path)
    with pytest.raises(OSError):
        compress.compress_run(src, tmp_path / "ring", (2, 2, 2), log=None)
    assert not (tmp_path / "ring").exists() and not list(tmp_path.glob(".ring.*"))


def test_a_zero_adapter_stack_compresses_to_zero_rings():
    """An ARC run whose λ never left zero has 𝒜 = 0: zero cores, error 0, no division by zero."""
    from ringfold.trainer.compress import fit_site

    fit = fit_site(np.zeros((10, 3, 10)), (2, 4, 2), (1, 1, 1))
    assert fit.fine_error == fit.final_error == 0.0
    assert not any(np.any(c) for c in [*fit.fine, *fit.coarse])
