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
            for line in ax.get_lines():  # each series runs left to right, not back and forth
                xs = list(line.get_xdata())
                assert xs == sorted(xs) == [1, 2, 8, 32]
    finally:
        plt.close(fig)
    written = write_bench(_bench_report(), tmp_path)
    assert tmp_path / "bench.png" in written
    assert matplotlib.image.imread(tmp_path / "bench.png").shape[1] >= 900
