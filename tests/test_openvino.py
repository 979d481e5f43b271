"""The OpenVINO backend (issue 26): opens a bundle, matches ONNX Runtime fp32, pins its inference precision,
refuses in one line without the extra; bench's recommendation (fastest passing parity, never QDQ on CUDA)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from ringfold.cli import main
from ringfold.errors import RingfoldError
from ringfold.runtime.backends.openvino.modes import available_openvino_precisions, openvino_precision
from ringfold.runtime.backends.registry import open_model
from ringfold.runtime.bundle.loader import load_bundle
from ringfold.runtime.infer.bench import BenchPoint, BenchReport
from ringfold.runtime.infer.recommend import excluded, recommend
from ringfold.runtime.parity.metrics import tolerance_for

needs_openvino = pytest.mark.skipif(
    __import__("importlib").util.find_spec("openvino") is None, reason="the [openvino] extra is not installed"
)


# ------------------------------------------------------------------------------------------ the backend
@needs_openvino
def test_openvino_fp32_matches_onnxruntime_and_passes_parity(tiny_bundle):
    from ringfold.runtime.parity.stored import bundle_parity

    bundle = load_bundle(tiny_bundle)
    ov_model = open_model(bundle, "fp32", "openvino", threads=1)
    ort_model = open_model(bundle, "fp32", "onnxruntime", "cpu", threads=1)
    pixels = bundle.reference().pixel_values
    got, want = ov_model.run_batched(pixels, 3), ort_model.run_batched(pixels)  # 3, 3, 2: three static shapes
    assert set(got) == {"logits", "embedding"}
    assert np.abs(got["logits"] - want["logits"]).max() <= 1e-4
    assert np.abs(got["embedding"] - want["embedding"]).max() <= 1e-4
    report = bundle_parity(bundle, ov_model, "fp32")
    assert report.passed and report.backend.startswith("openvino (CPU, inference precision f32")


@needs_openvino
def test_dynamic_shapes_give_the_static_outputs(tiny_bundle):
    from ringfold.runtime.backends.openvino.model import open_openvino_model

    bundle = load_bundle(tiny_bundle)
    pixels = bundle.reference().pixel_values[:5]
    static = open_openvino_model(bundle, "fp32", threads=1).run(pixels)
    dynamic = open_openvino_model(bundle, "fp32", threads=1, shapes="dynamic").run(pixels)
    assert np.abs(static["logits"] - dynamic["logits"]).max() <= 1e-5


@needs_openvino
def test_an_even_batch_runs_as_two_halves_on_two_streams_with_the_same_outputs(tiny_bundle, monkeypatch):
    """Batches of 2+ (even) run on two throughput streams; the outputs are the one-request outputs, in order."""
    from ringfold.runtime.backends.openvino import model as ov_model

    bundle = load_bundle(tiny_bundle)
    pixels = bundle.reference().pixel_values[:6]
    model = ov_model.open_openvino_model(bundle, "fp32")
    assert [model.split(n) for n in (1, 2, 3, 6)] == [1, 2, 1, 2]
    assert ov_model.open_openvino_model(bundle, "fp32", threads=1).split(6) == 1  # one thread: one stream
    assert ov_model.open_openvino_model(bundle, "fp32", shapes="dynamic").split(6) == 1
    split = model.run(pixels)
    compiled, requests = model._compiled_requests(3, 2)
    assert len(requests) == 2 and compiled.get_property("NUM_STREAMS") == 2
    assert str(compiled.get_property("PERFORMANCE_HINT")).endswith("THROUGHPUT")
    monkeypatch.setattr(ov_model, "STREAMS", 1)
    whole = ov_model.open_openvino_model(bundle, "fp32").run(pixels)
    one_by_one = np.concatenate([model.run(pixels[i : i + 1])["logits"] for i in range(6)])
    assert np.abs(split["logits"] - whole["logits"]).max() <= 1e-5
    assert np.abs(split["embedding"] - whole["embedding"]).max() <= 1e-5
    assert np.abs(split["logits"] - one_by_one).max() <= 1e-5  # each half's rows where they belong


@needs_openvino
def test_inference_precision_is_pinned_in_the_compiled_model(tiny_bundle):
    """fp32 is f32 even where the CPU would silently pick bf16; bf16 is a precision of its own name."""
    from ringfold.runtime.backends.openvino.model import inference_precision, open_openvino_model

    bundle = load_bundle(tiny_bundle)
    model = open_openvino_model(bundle, "fp32", threads=1)
    compiled, _ = model.compiled(2)
    assert inference_precision(compiled) == "f32"
    assert model.config["INFERENCE_PRECISION_HINT"] == "f32"
    if "bf16" in available_openvino_precisions(
        bundle.variants, model.core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    ):
        compiled_bf16, _ = open_openvino_model(bundle, "bf16", threads=1).compiled(2)
        assert inference_precision(compiled_bf16) == "bf16"


@needs_openvino
def test_int8_qdq_on_openvino_computes_what_onnxruntime_computes(raw_bundle):
    """The QDQ variant on OpenVINO's int8 kernels (the rest pinned f32) matches ONNX Runtime on the same file, and
    parity judges it with int8's tolerance (whether the quantization itself passes is the exporter's matter)."""
    from ringfold.runtime.parity.stored import bundle_parity

    bundle = load_bundle(raw_bundle)
    pixels = bundle.reference().pixel_values
    ov_model = open_model(bundle, "int8", "openvino", threads=1)
    got, want = ov_model.run_batched(pixels), open_model(bundle, "int8", "onnxruntime", "cpu", 1).run_batched(pixels)
    a, b = got["embedding"].astype(np.float64), want["embedding"].astype(np.float64)
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() >= 0.9995 and np.abs(got["logits"] - want["logits"]).max() <= 0.05
    report = bundle_parity(bundle, ov_model, "int8")
    assert report.comparisons[0].tolerance == tolerance_for("int8")


def test_missing_extra_is_one_line_naming_it(tiny_bundle, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ModuleNotFoundError
    image = next((tiny_bundle / "reference").rglob("*.png"))
    assert main(["classify", str(tiny_bundle), "--backend", "openvino", str(image)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "whl[openvino]'" in err and "--backend openvino" in err


def test_precision_names_refused_in_one_line():
    with pytest.raises(RingfoldError, match=r"OpenVINO runs fp32, bf16, fp16, int8, int8-bf16"):
        openvino_precision("int8-dynamic", {"fp32": 1}, ["FP32"])
    with pytest.raises(RingfoldError, match=r"this CPU has no BF16 compute .*use --precision fp32"):
        openvino_precision("bf16", {"fp32": 1}, ["FP32", "INT8"])
    with pytest.raises(RingfoldError, match=r"reads the bundle's int8 model, which it does not have"):
        openvino_precision("int8", {"fp32": 1}, ["FP32", "INT8"])
    assert available_openvino_precisions({"fp32": 1, "int8": 1}, ["FP32", "INT8"]) == ["fp32", "int8"]
    assert available_openvino_precisions({"fp32": 1, "int8": 1}, ["FP32", "BF16"]) == [
        "fp32", "bf16", "int8", "int8-bf16"
    ]  # fmt: skip


def test_bf16_has_its_own_tolerance():
    bf16 = tolerance_for("bf16")
    assert bf16 != tolerance_for("fp16") and bf16 != tolerance_for("int8")
    assert (bf16.min_cosine, bf16.min_top1, bf16.tie_margin) == (0.995, 0.99, 0.16)
    assert tolerance_for("int8-bf16") == tolerance_for("int8")


# ------------------------------------------------------------------------------------ bench's advice
def _point(backend, precision, batch, p50, parity):
    return BenchPoint(backend, precision, batch, p50, p50, p50, 1000 * batch / p50, parity)


def test_recommendation_is_the_fastest_that_passed_parity():
    points = [
        _point("onnxruntime CPU", "fp32", 1, 80.0, True),
        _point("openvino CPU", "bf16", 1, 20.0, False),  # fastest, but its gate failed
        _point("openvino CPU", "int8", 1, 30.0, True),
        _point("openvino CPU", "int8-bf16", 1, 25.0, None),  # gate not run: never recommended
        _point("onnxruntime CPU", "base-fp32", 1, 10.0, None),
        _point("onnxruntime CPU", "fp32", 8, 700.0, True),
        _point("openvino CPU", "int8", 8, 190.0, True),
    ]
    best = recommend(points)
    assert {b: (p.backend, p.precision) for b, p in best.items()} == {
        1: ("openvino CPU", "int8"),
        8: ("openvino CPU", "int8"),
    }
    report = BenchReport("B", "tiny", True, None, {}, points=points)
    assert report.to_dict()["recommendation"]["1"]["p50_ms"] == 30.0
    assert "- batch 1: openvino CPU int8 — p50 30.00 ms" in report.to_markdown()


def test_qdq_on_onnxruntime_cuda_is_never_recommended():
    points = [_point("onnxruntime CUDA", "int8", 1, 1.0, True), _point("onnxruntime CUDA", "fp16", 1, 2.0, True)]
    assert recommend(points)[1].precision == "fp16"
    assert "no int8 kernels" in excluded(points[0])
    assert excluded(_point("onnxruntime CPU", "int8", 1, 1.0, True)) is None
    assert excluded(_point("onnxruntime CUDA", "int8-dynamic", 1, 1.0, True)) is None  # not a QDQ model


def test_nothing_passed_says_so():
    report = BenchReport("B", "tiny", True, None, {}, points=[_point("openvino CPU", "bf16", 1, 1.0, False)])
    assert report.recommendation == {}
    assert "nothing to recommend" in report.to_markdown()
    assert report.to_dict()["recommendation"] == {}


@needs_openvino
def test_bench_times_both_backends_and_recommends(tiny_bundle, tmp_path):
    from ringfold import commands

    _, report = commands.bench(tiny_bundle, "fp32", "cpu", (1, 2), runs=2, warmup=0, threads=1, backend="all")
    assert {(p.backend, p.precision, p.parity) for p in report.points} == {
        ("onnxruntime CPU", "fp32", True),
        ("openvino CPU", "fp32", True),
    }
    assert set(report.recommendation) == {1, 2}
    assert report.to_dict()["parity_gates_from"].startswith("run here")


def test_bench_reads_a_parity_json_of_its_own_bundle_only(tiny_bundle, tmp_path):
    from ringfold.runtime.parity.gates import read_gates

    other = tmp_path / "parity.json"
    other.write_text('{"bundle": "/elsewhere", "backend": "onnxruntime (CPUExecutionProvider)", "gates": {}}')
    with pytest.raises(RingfoldError, match=r"--parity .*parity.json: judged /elsewhere, not "):
        read_gates([other], load_bundle(tiny_bundle))
    mine = tmp_path / "mine.json"
    mine.write_text(
        f'{{"bundle": "{tiny_bundle}", "backend": "openvino (CPU, inference precision f32 (static shapes))", '
        '"gates": {"fp32": {"passed": true}, "bf16": {"passed": false}, "preprocessing": {"passed": true}}}'
    )
    assert read_gates([mine], load_bundle(tiny_bundle)) == {
        ("openvino CPU", "fp32"): True,
        ("openvino CPU", "bf16"): False,
    }


# ------------------------------------------------------------------------------------ the compile cache
@needs_openvino
def test_cache_is_keyed_recorded_and_reused(tiny_bundle, tmp_path):
    from ringfold.runtime.backends.openvino.cache import RECORD
    from ringfold.runtime.backends.openvino.model import open_openvino_model

    bundle = load_bundle(tiny_bundle)
    pixels = bundle.reference().pixel_values[:2]
    first = open_openvino_model(bundle, "fp32", threads=1, cache_dir=tmp_path / "cache").run(pixels)
    (folder,) = (tmp_path / "cache").iterdir()
    blobs = sorted(p.name for p in folder.iterdir())
    assert RECORD in blobs and any(name.endswith(".blob") for name in blobs)
    again = open_openvino_model(bundle, "fp32", threads=1, cache_dir=tmp_path / "cache").run(pixels)
    assert sorted(p.name for p in folder.iterdir()) == blobs  # imported, nothing new written
    assert np.array_equal(first["logits"], again["logits"])
    open_openvino_model(bundle, "fp32", threads=2, cache_dir=tmp_path / "cache").run(pixels[:1])
    assert len(list((tmp_path / "cache").iterdir())) == 2  # another thread count: another key
    open_openvino_model(bundle, "fp32", threads=2, cache_dir=tmp_path / "cache").run(pixels)
    assert len(list((tmp_path / "cache").iterdir())) == 3  # two streams of one image: another key again


@needs_openvino
def test_cache_refuses_a_folder_in_the_bundle_and_a_changed_blob(tiny_bundle, tmp_path):
    from ringfold.runtime.backends.openvino.cache import RECORD
    from ringfold.runtime.backends.openvino.model import open_openvino_model

    bundle = load_bundle(tiny_bundle)
    pixels = bundle.reference().pixel_values[:1]
    with pytest.raises(RingfoldError, match=r"inside the bundle .*never trusted — pass a cache folder outside it"):
        open_openvino_model(bundle, "fp32", cache_dir=tiny_bundle / "ov-cache")
    assert not (tiny_bundle / "ov-cache").exists()
    open_openvino_model(bundle, "fp32", threads=1, cache_dir=tmp_path).run(pixels)
    (folder,) = tmp_path.iterdir()
    blob = next(folder.glob("*.blob"))
    blob.write_bytes(blob.read_bytes()[:-1] + b"\0")
    with pytest.raises(RingfoldError, match=r"its blobs differ from ringfold's record; delete .* recompiles it"):
        open_openvino_model(bundle, "fp32", threads=1, cache_dir=tmp_path).run(pixels)
    (folder / RECORD).unlink()
    with pytest.raises(RingfoldError, match=r"no ringfold record of its blobs"):
        open_openvino_model(bundle, "fp32", threads=1, cache_dir=tmp_path).run(pixels)


@needs_openvino
def test_evaluate_takes_openvino_precisions(tiny_bundle):
    """``evaluate --backend openvino``: "all" is OpenVINO's own list; a named bf16 is not taken for a missing file."""
    from ringfold.runtime.backends.openvino.model import openvino_precisions
    from ringfold.runtime.infer.evaluate import run_names

    bundle = load_bundle(tiny_bundle)
    own = openvino_precisions(bundle)
    assert run_names(bundle, "all", ["openvino"]) == [("openvino", p, False) for p in own]
    assert run_names(bundle, ["bf16"], ["openvino"]) == [("openvino", "bf16", True)]
    with pytest.raises(RingfoldError, match=r"has no int8 model"):
        run_names(bundle, ["int8"], ["openvino"])
