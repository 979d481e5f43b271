"""Precision benchmark, ViT-B/16 (random weights): ONNX Runtime CPU fp32, fp16, int8, int8-dynamic, int8-fp16.

One run on this CPU: exports a bundle with every variant (int8 calibrated on
generated images through the runtime's preprocessing, the step timed), then
times every variant on ONNX Runtime's CPU provider at batch 1 and 8,
*interleaved* (one call of each in turn, so machine load hits all alike), and
judges each against fp32 with the margin-aware parity gate on ``--photos DIR``
(real photos, e.g. scikit-image's ``skimage.data`` pictures saved as PNGs) and
against PyTorch on the bundle's reference set. Prints JSON and a table; writes
them and a PNG to --out.

    python benchmarks/bench_precision.py [--model ViT-B-16] [--runs 12] [--calib-images 64] [--photos DIR]
        [--nncf] [--ort-quantizer]

``--nncf`` adds NNCF's transformer int8 of the same fp32 model (the quantizer the int8 variant was measured
against; ``pip install 'nncf>=3.4,<4'``). ``--ort-quantizer`` adds onnxruntime's ``quantize_static`` (the
same recipe, calibrated on the fp32 graph) and ``quantize_dynamic`` of the same cleaned graph: the
quantizers ringfold's own writer (``exporter/qdq.py``) replaced, with the seconds each took.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import emit, machine  # noqa: E402

PRECISIONS = ("fp32", "fp16", "int8", "int8-dynamic", "int8-fp16")
BATCHES = (1, 8)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="ViT-B-16")
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--calib-images", type=int, default=64)
    ap.add_argument("--calib-method", default="minmax")
    ap.add_argument("--photos", help="folder of real photos for the parity vs fp32 (default: the reference set)")
    ap.add_argument("--nncf", action="store_true", help="also time NNCF's int8 of the same model (needs nncf)")
    ap.add_argument("--ort-quantizer", action="store_true", help="also onnxruntime's quantize_static/_dynamic")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        bundle, export_s = export_bundle(args, Path(tmp))
        extra = nncf_candidate(bundle, Path(tmp)) if args.nncf else {}
        seconds: dict[str, float] = {}
        if args.ort_quantizer:
            extra.update(ort_candidates(bundle, Path(tmp), seconds))
        latency = interleaved_latency(bundle, args.runs, extra)
        parity = parity_vs_fp32(bundle, args.photos, extra)
        vs_torch = bundle.manifest.raw["export"].get("variants_vs_torch", {})
    results = {
        "model": args.model,
        "weights": "random weights",
        "machine": machine(),
        "calibration": {"images": args.calib_images, "method": args.calib_method, "export_s": export_s},
        "variant_seconds": {n: v.get("seconds") for n, v in bundle.manifest.raw["variants"].items()} | seconds,
        "latency_p50_ms": latency,
        "parity_vs_fp32": parity,
        "parity_vs_pytorch_on_reference_set": vs_torch,
    }
    table = "\n".join(
        [
            f"{args.model} (random weights), ONNX Runtime CPU, interleaved in one run, "
            f"CPU: {results['machine'].get('cpu', '?')}; export with every variant {export_s:.1f} s",
            "",
            "| variant | bs1 p50 ms | bs1 vs fp32 | bs8 p50 ms | bs8 vs fp32 | vs fp32 on photos "
            "(min cosine, top-1, flips beyond margin, gate) |",
            "|---|---|---|---|---|---|",
            *table_rows(latency, parity),
        ]
    )
    bs1 = {name: by_batch["1"] for name, by_batch in latency.items()}
    emit(Path(args.out), "precision_cpu", results, table, bs1, f"{args.model} random weights, batch 1, CPU", "p50 ms")
    return 0


def export_bundle(args: argparse.Namespace, tmp: Path):
    """A random-weights run exported with every variant (calibrated on generated images): (bundle, seconds)."""
    from ringfold.demo_data import make_demo_dataset
    from ringfold.exporter.export import export_run
    from ringfold.exporter.precision import PrecisionRequest
    from ringfold.runtime.bundle.loader import load_bundle
    from ringfold.trainer.run import write_synthetic_run

    classes = make_demo_dataset(tmp / "data", per_class=max(2, args.calib_images // 4), size=256, seed=1)
    run = write_synthetic_run(tmp / "run", args.model, {"method": "arc", "rank": 50, "layers": "last:8"}, classes)
    request = PrecisionRequest(PRECISIONS, str(tmp / "data" / "train"), args.calib_method)
    start = time.perf_counter()
    result = export_run(run, tmp / "bundle", ref_images=str(tmp / "data" / "test"), ref_count=32, precision=request)
    return load_bundle(result.bundle), time.perf_counter() - start


def nncf_candidate(bundle, tmp: Path) -> dict[str, Path]:
    """NNCF's transformer int8 of the bundle's fp32 model, calibrated on the same images: {name: file}."""
    from ringfold.exporter.quant import quantize_transformer_int8
    from ringfold.runtime.pixels.images import list_images

    out = tmp / "model_int8_nncf.onnx"
    quantize_transformer_int8(bundle.model_path(), out, list_images([tmp / "data" / "train"]), bundle.preprocess)
    return {"int8 (NNCF)": out}


def ort_candidates(bundle, tmp: Path, seconds: dict[str, float]) -> dict[str, Path]:
    """onnxruntime's quantize_static (recipe placement, fp32-calibrated) and quantize_dynamic of the cleaned
    fp32 graph the export quantizes, calibrated on the same images; ``seconds`` gets each one's time."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    from ringfold.exporter.int8 import CalibrationReader, basic_optimised
    from ringfold.exporter.quant import weight_bearing_nodes
    from ringfold.runtime.pixels.images import list_images

    basic = basic_optimised(bundle.model_path(), tmp / "basic.onnx")
    model = onnx.load(str(basic))
    reader = CalibrationReader(list_images([tmp / "data" / "train"]), bundle.preprocess, model.graph.input[0].name)
    out = {"int8 (onnxruntime quantize_static)": tmp / "ort_static.onnx"}
    start = time.perf_counter()
    quantize_static(str(basic), str(out["int8 (onnxruntime quantize_static)"]), reader,
                    op_types_to_quantize=["MatMul", "Gemm", "Conv"], nodes_to_quantize=weight_bearing_nodes(model),
                    quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                                   "OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm", "Conv"]})  # fmt: skip
    seconds["int8 (onnxruntime quantize_static)"] = time.perf_counter() - start
    out["int8-dynamic (onnxruntime quantize_dynamic)"] = tmp / "ort_dynamic.onnx"
    start = time.perf_counter()
    quantize_dynamic(str(basic), str(out["int8-dynamic (onnxruntime quantize_dynamic)"]), weight_type=QuantType.QInt8,
                     per_channel=True, op_types_to_quantize=["MatMul", "Gemm"])  # fmt: skip
    seconds["int8-dynamic (onnxruntime quantize_dynamic)"] = time.perf_counter() - start
    return out


def _models(bundle, extra: dict[str, Path]) -> dict:
    from ringfold.runtime.backends.onnxruntime.model import OnnxModel, open_bundle_model

    models = {p: open_bundle_model(bundle, p, provider="cpu") for p in PRECISIONS if p in bundle.variants}
    return {**models, **{name: OnnxModel(path, provider="cpu") for name, path in extra.items()}}


def interleaved_latency(bundle, runs: int, extra: dict[str, Path]) -> dict[str, dict[str, float]]:
    """p50 ms per variant and batch; each round calls every variant once, so load spikes hit all of them."""
    import numpy as np

    models = _models(bundle, extra)
    pixels = bundle.reference().pixel_values
    out: dict[str, dict[str, float]] = {p: {} for p in models}
    for batch in BATCHES:
        x = np.ascontiguousarray(np.resize(pixels, (batch, *pixels.shape[1:])))
        samples: dict[str, list[float]] = {p: [] for p in models}
        for round_ in range(runs + 2):  # two warm-up rounds
            for name, model in models.items():
                start = time.perf_counter()
                model.run(x)
                if round_ >= 2:
                    samples[name].append((time.perf_counter() - start) * 1000)
        for name, values in samples.items():
            out[name][str(batch)] = statistics.median(values)
    return out


def parity_vs_fp32(bundle, photos: str | None, extra: dict[str, Path]) -> dict[str, dict]:
    """Each variant against the fp32 model by the margin-aware gate, on ``photos`` (else the reference set)."""
    from ringfold.runtime.parity.metrics import compare
    from ringfold.runtime.pixels.images import list_images, load_image
    from ringfold.runtime.pixels.preprocess import preprocess_batch

    if photos:
        paths = list_images([Path(photos)])
        pixels, names = preprocess_batch([load_image(p) for p in paths], bundle.preprocess), [p.name for p in paths]
    else:
        pixels, names = bundle.reference().pixel_values, None
    models = _models(bundle, extra)
    ref = models.pop("fp32").run_batched(pixels)
    out = {"images": photos or "reference set (generated images)", "n": len(pixels)}
    for name, model in models.items():
        got = model.run_batched(pixels)
        numerics = name if name in PRECISIONS else "int8-dynamic" if name.startswith("int8-dynamic") else "int8"
        c = compare(name, numerics, got["logits"], got["embedding"], ref["logits"], ref["embedding"], images=names)
        out[name] = {
            "cosine_min": c.cosine_min,
            "top1_agreement": c.top1_agreement,
            "flips_beyond_margin": len(c.flips_beyond_margin),
            "near_ties": len(c.near_ties),
            "passed": c.passed,
        }
    return out


def table_rows(latency: dict, parity: dict) -> list[str]:
    fp32 = latency["fp32"]
    rows = []
    for name, ms in latency.items():
        par = parity.get(name)
        gate = (
            f"{par['cosine_min']:.4f}, {par['top1_agreement']:.1%}, {par['flips_beyond_margin']}, "
            f"{'pass' if par['passed'] else 'FAIL'}"
            if par
            else "reference"
        )
        speed = [f"{ms[b]:.1f} | {fp32[b] / ms[b]:.2f}×" for b in ("1", "8")]
        rows.append(f"| {name} | {speed[0]} | {speed[1]} | {gate} |")
    return rows


if __name__ == "__main__":
    sys.exit(main())
