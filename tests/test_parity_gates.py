"""Parity gates a user can trust: near-ties vs real flips, small-sample warnings, the summary lines, the plot."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ringfold.commands import ParityResult
from ringfold.runtime.parity.metrics import compare, tolerance_for, top1_margins
from ringfold.runtime.parity.report import ParityReport
from ringfold.runtime.parity.stats import binomial_sf, clopper_pearson_lower, images_needed


def _outputs(n: int, classes: int = 5, seed: int = 0, margin: float = 2.0):
    """Reference logits whose top-1 leads top-2 by ``margin``; embeddings identical on both sides."""
    rng = np.random.default_rng(seed)
    logits = rng.uniform(0.0, 1.0, size=(n, classes))
    logits[np.arange(n), np.arange(n) % classes] = 1.0 + margin
    emb = rng.normal(size=(n, 8))
    return logits, emb


def _flip(logits: np.ndarray, row: int, margin: float) -> np.ndarray:
    """A backend whose row ``row`` has top-1 and top-2 swapped after setting the reference margin to ``margin``."""
    ref = logits.copy()
    order = np.argsort(ref[row])
    top, second = order[-1], order[-2]
    ref[row, top] = ref[row, second] + margin
    out = ref.copy()
    out[row, top], out[row, second] = ref[row, second], ref[row, top]
    return ref, out


def _report(*comparisons) -> ParityReport:
    return ParityReport("B", "model", False, "onnxruntime (cpu)", comparisons=list(comparisons))


# ------------------------------------------------------------------------------------------ gate rule
def test_near_tie_flip_passes_and_is_reported_as_a_near_tie():
    logits, emb = _outputs(20)
    tol = tolerance_for("int8")
    assert tol.tie_margin == pytest.approx(0.2)  # 2 × the int8 expected logit error 0.1
    ref, out = _flip(logits, 3, 0.05)
    names = [f"ref/{i:03d}.png" for i in range(20)]
    comp = compare("int8 vs ref", "int8", out, emb, ref, emb, tolerance=tol, images=names)
    assert comp.top1_agreement == pytest.approx(19 / 20)  # still reported as measured
    assert comp.top1_agreement_gated == 1.0
    assert comp.passed, comp.failures
    assert [t["image"] for t in comp.near_ties] == ["ref/003.png"]
    assert comp.near_ties[0]["margin"] == pytest.approx(0.05)
    assert comp.flips_beyond_margin == []
    report = _report(comp)
    md = report.to_markdown()
    assert "| int8 vs ref | ref/003.png | 0.05 | 0.2 | near-tie |" in md
    data = report.to_dict()
    assert data["passed"] is True
    assert data["comparisons"][0]["near_ties"][0]["image"] == "ref/003.png"
    assert data["comparisons"][0]["top1_agreement"] == pytest.approx(0.95)


def test_flip_with_a_large_margin_fails():
    logits, emb = _outputs(20)
    ref, out = _flip(logits, 7, 1.5)
    comp = compare("int8 vs ref", "int8", out, emb, ref, emb, tolerance=tolerance_for("int8"))
    assert not comp.passed
    assert comp.near_ties == [] and [f["index"] for f in comp.flips_beyond_margin] == [7]
    assert comp.flips_beyond_margin[0]["margin"] == pytest.approx(1.5)
    assert comp.failures == ["1 flip beyond margin (top-1 agreement 95.00% counting near-ties as agreeing < 98.0%)"]
    assert "FLIP beyond margin" in _report(comp).to_markdown()


def test_the_tie_margin_is_twice_the_gated_max_abs_logit_where_one_is_set():
    assert tolerance_for("fp32").tie_margin == pytest.approx(2e-4)
    assert tolerance_for("fp16").tie_margin == pytest.approx(0.02)
    assert tolerance_for("int8-dynamic").tie_margin == pytest.approx(0.2)
    assert tolerance_for("int8", {"max_abs_logit": 0.5}).tie_margin == pytest.approx(1.0)
    # fp32: a flip at margin 5e-5 is a near-tie; one at 1e-3 (and a max |Δlogit| over 1e-4) fails
    logits, emb = _outputs(10)
    ref, out = _flip(logits, 0, 5e-5)
    assert compare("c", "fp32", out, emb, ref, emb).passed
    ref, out = _flip(logits, 0, 1e-3)
    failures = compare("c", "fp32", out, emb, ref, emb).failures
    assert failures[0].startswith("max |Δlogit|") and failures[1].startswith("1 flip beyond margin")


def test_top1_margins():
    assert top1_margins(np.array([[1.0, 3.0, 2.5], [0.0, 0.0, 0.0]])).tolist() == [0.5, 0.0]
    assert np.isinf(top1_margins(np.ones((2, 1)))).all()


# ---------------------------------------------------------------------------------------- summary lines
def _result(report: ParityReport) -> ParityResult:
    return ParityResult(SimpleNamespace(path=Path("B")), ["fp32", "fp16", "int8"], report)


def test_summary_line_names_only_failing_precisions_and_the_pass_line_what_passed():
    logits, emb = _outputs(20)
    near_ref, near_out = _flip(logits, 2, 0.01)
    bad_ref, bad_out = _flip(logits, 7, 1.5)
    report = _report(
        compare("fp32 vs ref", "fp32", logits, emb, logits, emb),
        compare("fp16 vs ref", "fp16", near_out, emb, near_ref, emb, images=[f"i{k}" for k in range(20)]),
        compare("int8 vs ref", "int8", bad_out, emb, bad_ref, emb),
    )
    result = _result(report)
    assert not result.passed
    assert result.failing == {"int8": ["1 flip beyond margin"]}
    assert result.failure_line() == "parity gate FAILED for B: int8 (1 flip beyond margin)"
    assert result.pass_line() == "parity gate passed for B: fp32, fp16 (1 near-tie)"
    gates = report.to_dict()["gates"]
    assert gates["int8"] == {"passed": False, "failures": ["1 flip beyond margin"]}
    assert gates["fp32"]["passed"] and gates["fp16"]["passed"]


def test_all_passing_has_no_failure_and_names_every_precision():
    logits, emb = _outputs(12)
    report = _report(*(compare(f"{p} vs ref", p, logits, emb, logits, emb) for p in ("fp32", "int8")))
    result = _result(report)
    assert result.passed and result.failing == {}
    assert result.pass_line() == "parity gate passed for B: fp32, int8"


# -------------------------------------------------------------------------------------- small samples
def test_clopper_pearson_lower_bound_matches_reference_values():
    # scipy.stats.beta.ppf(0.05, x, n - x + 1), the one-sided 95 % exact bound
    reference = {
        (8, 8): 0.6876560219336321,
        (16, 16): 0.8292502770175191,
        (20, 19): 0.7838938357931526,
        (32, 31): 0.860150539725774,
        (100, 97): 0.92428920625017,
        (500, 495): 0.979089677057733,
        (500, 500): 0.9940264484836504,
    }
    for (n, x), expected in reference.items():
        assert clopper_pearson_lower(x, n) == pytest.approx(expected, abs=1e-9), (n, x)
    assert clopper_pearson_lower(8, 8) == pytest.approx(0.05 ** (1 / 8))
    assert clopper_pearson_lower(0, 10) == 0.0
    assert binomial_sf(0, 5, 0.3) == 1.0 and binomial_sf(5, 5, 0.5) == pytest.approx(1 / 32)
    assert images_needed(0.98) == 149 and images_needed(0.995) == 598 and images_needed(1.0) is None
    assert clopper_pearson_lower(149, 149) >= 0.98 > clopper_pearson_lower(148, 148)


def test_small_sample_warning_for_8_images_not_for_500(tmp_path):
    logits, emb = _outputs(8)
    small = _report(compare("int8 vs ref", "int8", logits, emb, logits, emb))
    warning = small.sample_warning()
    assert warning is not None
    assert warning.startswith("parity: only 8 reference images; 100.0% agreement on 8 images")
    assert "≥ 68.8% (95%)" in warning and "int8 ≥ 98.0%" in warning and "≥ 149 images" in warning
    assert f"**Warning:** {warning}" in small.to_markdown()
    assert small.to_dict()["sample_warning"] == warning
    assert small.passed  # a warning, not a failure

    logits, emb = _outputs(500)
    large = _report(compare("int8 vs ref", "int8", logits, emb, logits, emb))
    assert large.sample_warning() is None and "Warning" not in large.to_markdown()


def test_what_a_comparison_is_comes_from_its_typed_fields_not_its_title():
    """The warning and the plot's legend read source, against and end_to_end; a title is only shown."""
    from ringfold.runtime.parity.plot import _short

    logits, emb = _outputs(8)
    mine = compare("int8 on the user's photos", "int8", logits, emb, logits, emb, source="--images", end_to_end=True)
    ref = compare("int8 stored", "int8", logits, emb, logits, emb, source="reference set", against="folded")
    assert _report(mine).sample_warning().startswith("parity: only 8 images;")
    assert _report(ref).sample_warning().startswith("parity: only 8 reference images;")
    assert _short(mine) == "--images, vs unfolded" and _short(ref) == "reference set, vs folded"
    named = compare("int8 vs PyTorch folded, --images end to end", "int8", logits, emb, logits, emb)
    assert _short(named) == named.name[:35] + "…"  # the title as it is, shortened: nothing is read from it
    assert _report(named).sample_warning().startswith("parity: only 8 reference images;")
    assert "source" not in mine.to_dict() and "against" not in mine.to_dict()  # parity.json keeps its format


def test_no_sample_warning_for_the_fp32_rule_or_a_failed_gate():
    logits, emb = _outputs(8)
    assert _report(compare("fp32", "fp32", logits, emb, logits, emb)).sample_warning() is None
    ref, out = _flip(logits, 1, 1.5)
    assert _report(compare("int8", "int8", out, emb, ref, emb)).sample_warning() is None


def test_cli_prints_the_sample_warning_on_stderr_and_the_pass_line(tiny_bundle, tmp_path, capsys):
    from ringfold.cli import main

    rc = main(["parity", str(tiny_bundle), "--min-top1", "0.98", "--report", str(tmp_path / "r"), "--provider", "cpu"])
    captured = capsys.readouterr()
    assert rc == 0
    n = json.loads((tmp_path / "r" / "parity.json").read_text())["comparisons"][0]["n"]
    assert f"parity: only {n} reference images" in captured.err
    assert f"parity gate passed for {tiny_bundle}: fp32" in captured.out


def test_logit_error_override_moves_the_near_tie_band():
    """--logit-error 0.5: a flip at reference margin 0.8 is a near-tie (≤ 1.0), a failure at the default 0.1."""
    logits, emb = _outputs(20)
    ref, out = _flip(logits, 4, 0.8)
    default = compare("int8 vs ref", "int8", out, emb, ref, emb, tolerance=tolerance_for("int8"))
    wide = tolerance_for("int8", {"expected_logit_error": 0.5, "max_abs_logit": None})
    assert wide.tie_margin == pytest.approx(1.0) and "> 1 (2 × logit error 0.5" in wide.describe()
    widened = compare("int8 vs ref", "int8", out, emb, ref, emb, tolerance=wide)
    assert not default.passed and len(default.flips_beyond_margin) == 1
    assert widened.passed and len(widened.near_ties) == 1 and widened.flips_beyond_margin == []


def test_cli_passes_logit_error_to_the_gate(tiny_bundle, tmp_path, monkeypatch):
    from ringfold import commands
    from ringfold.cli import main

    seen = {}
    real = commands.parity

    def spy(*args, tolerance=None, **kwargs):
        seen.update(tolerance)
        return real(*args, tolerance=tolerance, **kwargs)

    monkeypatch.setattr(commands, "parity", spy)
    argv = ["parity", str(tiny_bundle), "--logit-error", "0.25", "--report", str(tmp_path / "r"), "--provider", "cpu"]
    rc = main(argv)
    assert rc == 0 and seen["expected_logit_error"] == 0.25


# ------------------------------------------------------------------------------------------------ plot
def test_plot_has_one_panel_per_precision_on_log_axes(tmp_path):
    pytest.importorskip("matplotlib")
    from ringfold.runtime.parity.plot import parity_figure

    logits, emb = _outputs(20)
    near_ref, near_out = _flip(logits, 2, 0.05)
    bad_ref, bad_out = _flip(logits, 7, 1.5)
    comps = [compare(f"fp32 vs ref {k}", "fp32", logits + 1e-6 * k, emb, logits, emb) for k in range(3)]
    comps.append(compare("fp16 vs ref", "fp16", logits + 1e-3, emb, logits, emb))
    comps.append(compare("int8 vs ref", "int8", near_out, emb, near_ref, emb))
    comps.append(compare("int8 end to end", "int8", bad_out, emb, bad_ref, emb))
    report = _report(*comps)
    fig = parity_figure(report)
    try:
        axes = fig.axes
        assert len(axes) == 3
        titles = [ax.get_title() for ax in axes]
        assert titles[0].startswith("fp32") and "PASS" in titles[0]
        assert titles[1].startswith("fp16") and "PASS" in titles[1]
        assert titles[2].startswith("int8") and "FAIL" in titles[2] and "1 near-tie" in titles[2]
        for ax in axes:  # log |Δlogit| axes (tests/test_plots.py checks what lies where)
            assert ax.get_yscale() == "log" and ax.get_legend() is None
        (legend,) = fig.legends  # one legend for the figure: comparisons and flip markers, not images
        texts = [t.get_text() for t in legend.get_texts()]
        assert "near-tie flip" in texts and "flip beyond margin" in texts and len(texts) <= 8
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    written = report.write(tmp_path)
    assert tmp_path / "parity.png" in written
    import matplotlib.image

    assert matplotlib.image.imread(tmp_path / "parity.png").shape[1] > 3 * 200


def test_without_matplotlib_the_report_is_written_without_the_plot(tmp_path, monkeypatch):
    import sys

    logits, emb = _outputs(8)
    report = _report(compare("int8 vs ref", "int8", logits, emb, logits, emb))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError (a Jetson)
    written = report.write(tmp_path)
    assert written == [tmp_path / "parity.json", tmp_path / "parity.md"]
    assert not (tmp_path / "parity.png").exists()
