import json
import subprocess
import sys

import numpy as np

from ringfold.runtime.backends.onnxruntime.model import OnnxModel
from ringfold.runtime.backends.onnxruntime.session import choose_providers
from ringfold.runtime.bundle.loader import load_bundle
from ringfold.runtime.infer.classify import iter_predictions
from ringfold.runtime.parity.metrics import compare, tolerance_for
from ringfold.runtime.parity.stored import bundle_parity


def test_runtime_does_not_import_torch():
    code = (
        "import sys, ringfold.runtime, ringfold.runtime.bundle, ringfold.runtime.infer.classify, "
        "ringfold.runtime.parity, ringfold.runtime.backends.onnxruntime.model, ringfold.runtime.pixels.images, "
        "ringfold.runtime.pixels.preprocess, ringfold.cli; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'open_clip', 'torchvision')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cpu_provider_always_available():
    assert choose_providers("cpu") == ["CPUExecutionProvider"]
    assert choose_providers("auto")[-1] == "CPUExecutionProvider"


def test_bundle_parity_passes_and_preprocessing_is_exact(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    report = bundle_parity(bundle, OnnxModel(bundle.model_path(), provider="cpu"))
    assert report.passed, report.to_markdown()
    assert report.preprocessing[0].max_abs <= 1e-5
    assert all(c.max_abs_logit <= 1e-4 and c.top1_agreement == 1.0 for c in report.comparisons)


def test_classify_top1_is_argmax_of_backend_logits(tiny_bundle, demo_data):
    bundle = load_bundle(tiny_bundle)
    model = OnnxModel(bundle.model_path(), provider="cpu")
    images = sorted((demo_data / "test").rglob("*.png"))[:5]
    preds = list(iter_predictions(bundle, model, images, top_k=3))
    assert [p.path for p in preds] == images
    from ringfold.runtime.pixels.images import load_image
    from ringfold.runtime.pixels.preprocess import preprocess_batch

    logits = model.run(preprocess_batch([load_image(p) for p in images], bundle.preprocess))["logits"]
    assert [p.labels[0] for p in preds] == [bundle.labels[i] for i in logits.argmax(1)]
    for p in preds:
        assert len(p.labels) == 3 and p.probabilities == sorted(p.probabilities, reverse=True)
        assert 0.0 < sum(p.probabilities) <= 1.0 + 1e-6


def test_compare_metrics_and_gate():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(10, 5)).astype(np.float32)
    emb = rng.normal(size=(10, 8)).astype(np.float32)
    same = compare("same", "fp32", logits, emb, logits, emb)
    assert same.passed and same.max_abs_logit == 0 and same.cosine_min > 0.999999
    noisy = compare("noisy", "fp32", logits + 1e-3, emb, logits, emb)
    assert not noisy.passed and "max |Δlogit|" in noisy.failures[0]
    assert abs(noisy.max_abs_logit - 1e-3) < 1e-6
    labels = logits.argmax(1)
    labels[0] = (labels[0] + 1) % 5
    acc = compare("acc", "fp16", logits, emb, logits, emb, labels)
    assert acc.accuracy_backend == 0.9 and acc.labelled == 10
    assert tolerance_for("fp16").max_abs_logit is None
    assert noisy.near_ties == [] and noisy.flips_beyond_margin == []  # no flip: Δ is the same on every class
    assert tolerance_for("fp32", {"max_abs_logit": 0.5}).max_abs_logit == 0.5


def test_parity_report_files(tiny_bundle, tmp_path):
    bundle = load_bundle(tiny_bundle)
    report = bundle_parity(bundle, OnnxModel(bundle.model_path(), provider="cpu"))
    written = report.write(tmp_path)
    data = json.loads((tmp_path / "parity.json").read_text())
    assert data["passed"] is True and data["random_weights"] is True
    assert "fp32: max |Δlogit| ≤ 0.0001" in (tmp_path / "parity.md").read_text()
    assert (tmp_path / "parity.png").stat().st_size > 1000 and len(written) == 3
