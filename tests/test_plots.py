"""The figures people read: what each plot draws, checked on its axes' data, not only that a PNG exists."""

from __future__ import annotations

import pytest

pytest.importorskip("matplotlib")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.image  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

from ringfold.runtime.infer.bench import BenchPoint, BenchReport, bench_figure, write_bench  # noqa: E402


# ----------------------------------------------------------------------------------------------- bench.png
def _bench_report() -> BenchReport:
    report = BenchReport("B", "tiny", True, None, {})
    for precision, scale in (("fp32", 1.0), ("int8", 0.5)):
        for batch in (8, 1, 2, 32):  # measured out of order, 32 with a gap after 8
            p50 = scale * (1.0 + batch)
            report.points.append(BenchPoint("onnxruntime (cpu)", precision, batch, p50, p50, p50, batch / p50 * 1e3))
    return report


def test_bench_batch_axis_is_log2_with_ticks_at_the_measured_batches(tmp_path):
    fig = bench_figure(_bench_report())
    try:
        assert len(fig.axes) == 2
        for ax in fig.axes:
            assert ax.get_xscale() == "log"
            assert list(ax.get_xticks()) == [1, 2, 8, 32]
            assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "8", "32"]
            assert list(ax.xaxis.get_minorticklocs()) == []
            assert ax.get_yscale() == "log"  # 15 ms beside 1.3 s is not flat on zero
            for line in ax.get_lines():  # each series runs left to right, not back and forth
                xs = list(line.get_xdata())
                assert xs == sorted(xs) == [1, 2, 8, 32]
        legend = fig.axes[1].get_legend()
        assert fig.axes[0].get_legend() is None and len(legend.get_texts()) == 2
        fig.canvas.draw()
        box, right = legend.get_window_extent(), fig.axes[1].get_window_extent()
        assert box.x0 >= right.x1 and box.x1 <= fig.bbox.x1  # beside the plots, covering no line, not cut off
    finally:
        plt.close(fig)
    written = write_bench(_bench_report(), tmp_path)
    assert tmp_path / "bench.png" in written
    assert matplotlib.image.imread(tmp_path / "bench.png").shape[1] >= 900


# ---------------------------------------------------------------------------------------------- curves.png
def _adaring_rows() -> list[dict]:
    """Epoch rows as trainer/train.py logs them for AdaRing (eval accuracy also at epoch 0)."""
    rows = [{"epoch": 0, "eval_acc": 0.1}]
    for epoch in (1, 2, 3):
        ce, coarse, cons = 2.0 / epoch, 2.2 / epoch, 1e-3 * epoch
        rows.append(
            {
                "epoch": epoch,
                "loss": ce + 0.5 * coarse + cons,
                "loss_ce": ce,
                "loss_coarse_ce": coarse,
                "loss_consistency": cons,
                "train_acc": 0.2 * epoch,
                "eval_acc": 0.25 * epoch,
            }
        )
    return rows


def test_training_curves_draw_one_line_per_loss_term_on_a_log_axis(tmp_path):
    from ringfold.trainer.plots import plot_training_curves, training_figure

    rows = _adaring_rows()
    fig = training_figure(rows, "tiny · adaring")
    try:
        ax_loss = fig.axes[0]
        lines = {line.get_label().split(":")[0].split(" (")[0]: line for line in ax_loss.get_lines()}
        assert set(lines) == {"total", "ce", "coarse_ce", "consistency"}
        assert list(lines["consistency"].get_ydata()) == pytest.approx([1e-3, 2e-3, 3e-3])
        assert list(lines["total"].get_xdata()) == [1, 2, 3]
        assert ax_loss.get_yscale() == "log"  # a 1e-3 term beside a CE of 2 is not flat on zero
        assert len(ax_loss.get_legend().get_texts()) == 4
    finally:
        plt.close(fig)
    plot_training_curves(rows, tmp_path / "curves.png", "t")
    assert matplotlib.image.imread(tmp_path / "curves.png").shape[1] >= 900


def test_training_curves_of_a_method_without_terms_show_the_total_on_a_linear_axis_when_it_reaches_zero():
    from ringfold.trainer.plots import training_figure

    rows = [{"epoch": 1, "loss": 0.5, "train_acc": 0.5}, {"epoch": 2, "loss": 0.0, "train_acc": 1.0}]
    fig = training_figure(rows, "t")
    try:
        assert [line.get_label() for line in fig.axes[0].get_lines()] == ["total (what is minimised)"]
        assert fig.axes[0].get_yscale() == "linear"
    finally:
        plt.close(fig)


# ---------------------------------------------------------------------------------------------- parity.png
def _parity_report():
    from ringfold.runtime.parity.metrics import compare

    from .test_parity_gates import _flip, _outputs, _report

    logits, emb = _outputs(20)
    bad_ref, bad_out = _flip(logits, 7, 1.5)
    fp32 = [compare(f"fp32 vs ref {k}", "fp32", logits + 1e-6 * k, emb, logits, emb) for k in (1, 1, 2)]
    return _report(*fp32, compare("int8 end to end", "int8", bad_out, emb, bad_ref, emb))


def test_parity_plot_puts_each_comparison_in_its_own_column_on_a_log_axis_under_its_gate(tmp_path):
    from ringfold.runtime.parity.plot import parity_figure

    report = _parity_report()
    fig = parity_figure(report)
    try:
        ax_fp32, ax_int8 = fig.axes
        assert ax_fp32.get_yscale() == "log" == ax_int8.get_yscale()
        lines = [line for line in ax_fp32.get_lines() if len(line.get_xdata()) == 20]
        assert len(lines) == 3  # two comparisons with equal values: side by side, not on top of each other
        spans = sorted((min(line.get_xdata()), max(line.get_xdata())) for line in lines)
        assert all(a[1] < b[0] for a, b in zip(spans, spans[1:], strict=False))
        assert [t.get_text() for t in ax_fp32.get_xticklabels()] == ["fp32 vs ref 1", "fp32 vs ref 1", "fp32 vs ref 2"]
        low, high = ax_fp32.get_ylim()
        assert low < 1e-6 and high > 1e-4  # ~1e-6 errors and the 1e-4 gate both readable, apart
        (gate,) = [line for line in ax_fp32.get_lines() if list(line.get_ydata()) == [1e-4, 1e-4]]
        assert gate.get_linestyle() == "--"
        assert any(t.get_text().startswith("gate: max |Δlogit| 0.0001") for t in ax_fp32.texts)
        assert any("= 0.02 × gate" in t.get_text() for t in ax_fp32.texts)  # where 2e-6 lies against the gate
        # exact zeros (19 of 20 int8 rows) are drawn at the axis floor, above the bottom, and counted
        int8 = [line for line in ax_int8.get_lines() if len(line.get_xdata()) == 20][0]
        assert min(int8.get_ydata()) > ax_int8.get_ylim()[0]
        assert any("19 exact 0 at floor" in t.get_text() for t in ax_int8.texts)
    finally:
        plt.close(fig)
