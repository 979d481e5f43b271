import json

import numpy as np
import pytest
import tensorly as tl

from ringfold.cli import main
from ringfold.trainer.compress_fit import tr_decompose
from ringfold.trainer.run import write_synthetic_run
from tests.helpers import one_line_error


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


def test_compress_cli_writes_an_adaring_run_that_exports(tmp_path, capsys, demo_data):
    src = write_synthetic_run(
        tmp_path / "arc",
        "ringfold-tiny-vit",
        {"method": "arc", "rank": 2, "layers": "all"},
        ["a", "b", "c"],
        adapter_std=0.1,
    )
    out = tmp_path / "ring"
    args = ["compress", str(src), "--ranks", "2,4,4", "--coarse-ranks", "1,1,1", "--out", str(out)]
    # a ring that represents ARC rank 2 exactly is larger than the ARC adapter: compress says so unless allowed
    assert main([*args, "--images", str(demo_data / "test"), "--allow-larger"]) == 0
    report = json.loads((out / "compress_report.json").read_text())
    run = json.loads((out / "run.json").read_text())
    assert run["adapter"]["method"] == "adaring" and run["adapter"]["fine_ranks"] == [2, 4, 4]
    # ARC rank 2 → A_l = D diag(λ_l) Dᵀ has exact TR ranks ≤ (2, 2·?, ·); the fit must be close and the model agree
    assert max(s["final_error"] for s in report["sites"]) < 0.05
    assert report["agreement"]["top1_agreement"] == 1.0
    assert report["agreement"]["cosine_min"] > 0.999
    # the demo folders are not this run's classes (a, b, c): agreement only, no accuracy
    assert report["agreement"]["images"]["labelled"] == 0 and report["agreement"]["source_top1_accuracy"] is None
    bundle = str(tmp_path / "bundle")
    assert main(["export", str(out), "--out", bundle, "--ref-images", str(demo_data / "test"), "--quiet"]) == 0
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
    from ringfold.trainer import compress_fit as compress

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
    from ringfold.trainer.compress_fit import SWEEP_RANKS, rank_sweep

    tensors = {"a": _ring_tensor((2, 4, 2)), "b": _ring_tensor((2, 4, 2), d=16, seed=4)}
    sweep, fits = rank_sweep(tensors, (1, 1, 1), max_error=0.01)
    assert sweep["chosen"] == [2, 4, 2] and sweep["warning"] is None
    # 4,8,4 and 8,8,8 have R0·R1 > d = 16 at site b: more ring than the stack has columns, not fitted
    assert [p["fine_ranks"] for p in sweep["points"]] == [list(r) for r in SWEEP_RANKS[:4]]
    assert [(s["fine_ranks"], s["reason"]) for s in sweep["skipped"]] == [
        ([4, 8, 4], "too wide"),
        ([8, 8, 8], "too wide"),
    ]
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
    assert "compress: measuring agreement with the source run on no real images (not measured)" in captured.err
    # --quiet: no progress, the warning stays in the report
    assert main(["compress", str(src), "--ranks", "1,1,1", "--quiet", "--out", str(tmp_path / "q")]) == 0
    assert capsys.readouterr().err == ""


def test_compress_ranks_auto_sweeps_plots_and_keeps_the_smallest_good_ranks(tmp_path, capsys):
    from ringfold.cli import build_parser

    assert build_parser().parse_args(["compress", "r", "--ranks", "auto", "--out", "o"]).ranks == "auto"
    assert build_parser().parse_args(["compress", "r", "--ranks", "2,4,2", "--out", "o"]).ranks == "2,4,2"
    src = _arc_run(tmp_path, rank=16)  # 10,496 parameters: rings 1,1,1 · 2,2,2 · 2,4,2 are smaller
    out = tmp_path / "ring"
    assert main(["compress", str(src), "--ranks", "2,4", "--out", str(out)]) == 2
    assert "--ranks: must be three positive integers R0,R1,R2 (e.g. 2,4,2) or auto" in capsys.readouterr().err
    assert main(["compress", str(src), "--ranks", "auto", "--max-error", "0.75", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    sweep = json.loads((out / "rank_sweep.json").read_text())
    assert (out / "rank_sweep.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads((out / "compress_report.json").read_text())
    good = [p for p in sweep["points"] if p["max_error"] <= 0.75]
    assert good and sweep["chosen"] == min(good, key=lambda p: p["parameters"])["fine_ranks"] == [2, 2, 2]
    # only rings smaller than the source are fitted; the larger candidates are listed as not fitted
    assert [p["fine_ranks"] for p in sweep["points"]] == [[1, 1, 1], [2, 2, 2], [2, 4, 2]]
    assert all(p["parameters"] < report["source_parameters"] == 10_496 for p in sweep["points"])
    assert [(p["fine_ranks"], p["reason"]) for p in sweep["skipped"]] == [
        ([4, 4, 4], "not smaller than the source"),
        ([4, 8, 4], "not smaller than the source"),
        ([8, 8, 8], "not smaller than the source"),
    ]
    assert "| 8,8,8 | 69,680 | — | — | — | not fitted: not smaller than the source |" in captured.out
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
    src = _arc_run(tmp_path, rank=8)
    with pytest.raises(OSError):
        compress.compress_run(src, tmp_path / "ring", (1, 1, 1), log=None)
    assert not (tmp_path / "ring").exists() and not list(tmp_path.glob(".ring.*"))


def test_a_zero_adapter_stack_compresses_to_zero_rings():
    """An ARC run whose λ never left zero has 𝒜 = 0: zero cores, error 0, no division by zero."""
    from ringfold.trainer.compress_fit import fit_site

    fit = fit_site(np.zeros((10, 3, 10)), (2, 4, 2), (1, 1, 1))
    assert fit.fine_error == fit.final_error == 0.0
    assert not any(np.any(c) for c in [*fit.fine, *fit.coarse])


# --------------------------------------------------------------------------- issue 23: honest numbers, never larger
def _no_loading(monkeypatch):
    """Make loading the source model or fitting a ring fail the test: a refusal must come before both."""
    from ringfold.trainer import compress, compress_fit

    def boom(*args, **kwargs):
        raise AssertionError("compress loaded a model or fitted a ring before refusing")

    monkeypatch.setattr(compress, "load_adapted_model", boom)
    monkeypatch.setattr(compress, "fit_site", boom)  # explicit ranks
    monkeypatch.setattr(compress_fit, "fit_site", boom)  # --ranks auto (rank_sweep)


def test_compress_measures_agreement_and_accuracy_on_the_runs_held_out_images(tmp_path, capsys, tiny_run, demo_data):
    """Agreement was measured on generated noise (100 % for a compression that cost a third of the accuracy);
    now on the run's own test split, found through run.json's data path, with the count and source named."""
    out = tmp_path / "ring"
    assert main(["compress", str(tiny_run), "--ranks", "1,1,1", "--quiet", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    report = json.loads((out / "compress_report.json").read_text())
    agreement = report["agreement"]
    data = str(demo_data.resolve())
    assert agreement["measured"] is True
    assert agreement["images"] == {"count": 12, "labelled": 12, "origin": "run data", "path": data, "split": "test"}
    # the source's top-1 is the trainer's own final accuracy on the same 12 test images
    run_metrics = json.loads((tiny_run / "run.json").read_text())["metrics"]
    assert run_metrics["eval_images"] == 12
    assert agreement["source_top1_accuracy"] == pytest.approx(run_metrics["final_eval_acc"])
    assert 0.0 <= agreement["compressed_top1_accuracy"] <= 1.0 and 0.0 <= agreement["top1_agreement"] <= 1.0
    where = f"12 held-out images from {data} (test split)"
    for text in (stdout, (out / "compress_report.md").read_text()):
        assert f"Compressed vs source run on {where}: top-1 agreement {agreement['top1_agreement']:.1%}" in text
        assert f"source run {agreement['source_top1_accuracy']:.1%}, compressed" in text
    # --images-limit bounds the set; round-robin over the 4 classes keeps them all in it
    out = tmp_path / "ring5"
    assert (
        main(["compress", str(tiny_run), "--ranks", "1,1,1", "--quiet", "--images-limit", "5", "--out", str(out)]) == 0
    )
    assert json.loads((out / "compress_report.json").read_text())["agreement"]["images"]["count"] == 5


def _moved_run(tmp_path, tiny_run, demo_data):
    """A copy of the tiny run whose recorded data folder has been moved away."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    shutil.copytree(demo_data, tmp_path / "data")
    record = json.loads((run / "run.json").read_text())
    record["data"]["path"] = str(tmp_path / "data")
    (run / "run.json").write_text(json.dumps(record))
    (tmp_path / "data").rename(tmp_path / "moved")
    return run, tmp_path / "moved"


def test_compress_without_real_images_measures_nothing_and_images_dir_works(tmp_path, capsys, tiny_run, demo_data):
    run, moved = _moved_run(tmp_path, tiny_run, demo_data)
    out = tmp_path / "ring"
    assert main(["compress", str(run), "--ranks", "1,1,1", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    report = json.loads((out / "compress_report.json").read_text())
    assert report["agreement"]["measured"] is False and set(report["agreement"]) == {"measured", "reason", "message"}
    line = report["agreement"]["message"]
    assert line.startswith("agreement not measured: no real images (") and "--images DIR" in line
    assert str(tmp_path / "data") in line and "is gone" in line
    for text in (captured.out, (out / "compress_report.md").read_text()):
        assert line in text and "top-1 agreement" not in text and "accuracy" not in text
    assert "no real images (not measured)" in captured.err
    # --images DIR: an ImageFolder; folders named after the run's classes give labels, others agreement only
    images = moved / "test"
    (images / "zebra").mkdir()
    for name in ("a.png", "b.png"):
        (images / "zebra" / name).write_bytes((images / "red_circle" / "red_circle_0000.png").read_bytes())
    out = tmp_path / "ring2"
    assert main(["compress", str(run), "--ranks", "1,1,1", "--quiet", "--images", str(images), "--out", str(out)]) == 0
    agreement = json.loads((out / "compress_report.json").read_text())["agreement"]
    assert agreement["images"] == {
        "count": 14,
        "labelled": 12,
        "origin": "--images",
        "path": str(images),
        "split": None,
    }
    assert f"Compressed vs source run on 14 images from --images {images}:" in capsys.readouterr().out
    assert "Top-1 accuracy on the 12 labelled ones" in (out / "compress_report.md").read_text()


def test_compress_refuses_a_bad_images_folder_before_loading_anything(tmp_path, capsys, monkeypatch):
    src = _arc_run(tmp_path, rank=8)
    _no_loading(monkeypatch)
    out = tmp_path / "ring"
    base = ["compress", str(src), "--ranks", "1,1,1", "--out", str(out)]
    assert main([*base, "--images", str(tmp_path / "missing")]) == 2
    one_line_error(capsys, f"--images {tmp_path / 'missing'}: no such folder", "one sub-folder per class")
    empty = tmp_path / "empty" / "cat"
    empty.mkdir(parents=True)
    (empty / "notes.txt").write_text("no images here")
    assert main([*base, "--images", str(empty.parent)]) == 2
    one_line_error(capsys, "--images", "no image files")
    (empty / "broken.png").write_bytes(b"not a png")
    assert main([*base, "--images", str(empty.parent)]) == 2
    one_line_error(capsys, "--images", "none of its 1 image files can be decoded", "broken.png")
    assert main([*base, "--images-limit", "100000"]) == 2
    one_line_error(capsys, "--images-limit: must be an integer from 1 to 1024")
    assert not out.exists()


def test_compress_auto_refuses_when_no_smaller_ring_exists_or_none_is_good_enough(tmp_path, capsys, monkeypatch):
    """--ranks auto picked a ring of 69,680 parameters for an ARC run of 18,944 ("ratio 3.678"), without a word."""
    out = tmp_path / "ring"
    small = _arc_run(tmp_path, rank=2)  # 3,104 parameters: even 1,1,1 + 1,1,1 (4,160) is larger
    with monkeypatch.context() as m:
        _no_loading(m)
        assert main(["compress", str(small), "--ranks", "auto", "--out", str(out)]) == 2
    one_line_error(
        capsys, "--ranks auto: no candidate ring is smaller than the source run's 3,104 parameters", "has 4,160"
    )
    src = _arc_run(tmp_path, rank=16)  # 10,496 parameters; the smaller rings reach 0.67 at best
    assert main(["compress", str(src), "--ranks", "auto", "--max-error", "0.05", "--quiet", "--out", str(out)]) == 2
    err = one_line_error(
        capsys,
        "--ranks auto: no ring smaller than the source run's 10,496 parameters reaches --max-error 0.05",
        "the best, 2,4,2 (9,392 parameters)",
        "raise --max-error",
    )
    assert "69,680" not in err and not out.exists()


def test_compress_checks_explicit_ranks_before_any_allocation(tmp_path, capsys, monkeypatch):
    """--ranks 100000,100000,100000 was a multi-TiB allocation traceback; a larger ring went through silently."""
    src = _arc_run(tmp_path, rank=8)  # 6,272 parameters, d = 128 on every site
    out = tmp_path / "ring"
    with monkeypatch.context() as m:
        _no_loading(m)
        assert main(["compress", str(src), "--ranks", "100000,100000,100000", "--out", str(out)]) == 2
        one_line_error(capsys, "--ranks: 100000,100000,100000: R0·R1 = 10,000,000,000", "adapter width d = 128")
        assert main(["compress", str(src), "--ranks", "1,1,1", "--coarse-ranks", "1,200,200", "--out", str(out)]) == 2
        one_line_error(capsys, "--coarse-ranks: 1,200,200:", "must be at most the adapter width d = 128")
        assert main(["compress", str(src), "--ranks", "1,100,100", "--out", str(out)]) == 2
        one_line_error(capsys, "--ranks: 1,100,100: R1·R2 = 10,000 is above 4,096")
        assert main(["compress", str(src), "--ranks", "2,4,2", "--out", str(out)]) == 2
        one_line_error(capsys, "would have 9,392 parameters, more than the source run's 6,272", "--allow-larger")
    assert not out.exists()
    assert main(["compress", str(src), "--ranks", "2,4,2", "--allow-larger", "--out", str(out)]) == 0
    warning = "warning: the AdaRing run has 9,392 parameters, more than the source run's 6,272 (--allow-larger)"
    captured = capsys.readouterr()
    assert warning in captured.err.splitlines() and warning in captured.out.splitlines()
    assert warning in json.loads((out / "compress_report.json").read_text())["warnings"]


def test_rank_problem_names_each_bound():
    from ringfold.trainer.compress_fit import MAX_RANK_PAIR, rank_problem

    assert rank_problem({"s": (128, 4)}, (2, 4, 2)) is None
    assert "R0·R1 = 256 and R2·R0 = 4 must be at most the adapter width d = 128 of s" in rank_problem(
        {"s": (128, 4)}, (2, 128, 2)
    )
    assert f"R1·R2 = 10,000 is above {MAX_RANK_PAIR:,}" in rank_problem({"s": (128, 4)}, (1, 100, 100))
    # d = 8, L = 1: the ring 1,8,8 holds 192 numbers, the dense stack 64
    assert "the ring holds 192 numbers at s, more than the dense L·d² = 64 it replaces" in rank_problem(
        {"s": (8, 1)}, (1, 8, 8)
    )
