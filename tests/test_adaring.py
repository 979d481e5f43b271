import json

import numpy as np
import onnxruntime as ort
import pytest
import tensorly as tl
import torch

from ringfold.exporter.export import export_run
from ringfold.exporter.fold import fold_adapters, unfold_is_clean
from ringfold.exporter.onnx_export import export_onnx, op_histogram
from ringfold.trainer.adapters import inject
from ringfold.trainer.adapters.adaring import AdaRingConfig, TensorRing
from ringfold.trainer.compress_fit import adaring_parameters
from ringfold.trainer.head import build_classifier
from ringfold.trainer.models import load_clip
from ringfold.trainer.params import parameter_rows
from ringfold.trainer.run import load_adapted_model, write_synthetic_run
from ringfold.trainer.text import class_embeddings, clip_logits

from .conftest import TINY, train_tiny
from .helpers import randomise

CLASSES = ["cat", "dog", "car", "tree"]


def _logits(model, tokenizer, images):
    with torch.no_grad():
        emb = class_embeddings(model, tokenizer, CLASSES, ["a photo of a {}."])
        return clip_logits(model, images, emb)


def test_contraction_equals_tensorly_tr_to_tensor():
    ring = TensorRing(dim=12, num_layers=5, ranks=(2, 3, 4), init_std=0.1)
    randomise(ring)
    reference = tl.tr_to_tensor([ring.g_in.detach().numpy(), ring.g_lay.detach().numpy(), ring.g_out.detach().numpy()])
    ours = ring.dense().detach().numpy()
    assert ours.shape == (12, 5, 12)
    assert np.abs(ours - reference).max() <= 1e-5 * np.abs(reference).max()
    for layer in range(5):
        assert np.allclose(ring.dense(layer).detach().numpy(), reference[:, layer, :], atol=1e-6)
    y = torch.randn(3, 7, 12)
    u, v = ring.factors()  # what the training forward applies: y·A_l = (y·U[l])·V
    assert torch.allclose((y @ u[2]) @ v, y @ ring.dense(2), atol=1e-5)


def test_vit_b16_default_is_at_most_10_percent_of_mma():
    rows = parameter_rows("ViT-B-16", AdaRingConfig())
    total = sum(r.total for r in rows)
    assert total == 61_888 and total <= 0.1 * 674_560
    # per site: R0·d·R1 + R1·L·R2 + R2·d·R0 per ring, + 2·L combinator logits, + L·d bias (what compress counts)
    assert rows[0].total == adaring_parameters({"visual.attn": (768, 8)}, (2, 4, 2), (1, 2, 2))


def test_identity_at_init_and_gradients_reach_every_core_after_one_step():
    base = load_clip(TINY, random_init=True, seed=2)
    adapted = load_clip(TINY, random_init=True, seed=2)
    aset = inject(adapted.model, AdaRingConfig(layers="all"))
    images = torch.randn(2, 3, 64, 64)
    assert torch.equal(_logits(base.model, base.tokenizer, images), _logits(adapted.model, adapted.tokenizer, images))

    opt = torch.optim.AdamW(aset.parameters(), lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        emb = class_embeddings(adapted.model, adapted.tokenizer, CLASSES, ["a photo of a {}."])
        loss = torch.nn.functional.cross_entropy(clip_logits(adapted.model, images, emb), torch.tensor([0, 3]))
        loss.backward()
        opt.step()
    for name, p in aset.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_coarse_mode_uses_only_the_coarse_ring():
    loaded = load_clip(TINY, random_init=True)
    aset = inject(loaded.model, AdaRingConfig(layers="all"))
    randomise(aset)
    images = torch.randn(2, 3, 64, 64)
    aset.set_mode("coarse")
    coarse = _logits(loaded.model, loaded.tokenizer, images)
    for adapter in aset.adapters.values():
        randomise(adapter.fine, seed=9)
    assert torch.equal(coarse, _logits(loaded.model, loaded.tokenizer, images))
    for adapter in aset.adapters.values():
        randomise(adapter.coarse, seed=9)
    assert not torch.allclose(coarse, _logits(loaded.model, loaded.tokenizer, images))
    aset.set_mode("full")
    assert not torch.allclose(coarse, _logits(loaded.model, loaded.tokenizer, images))


@pytest.mark.parametrize("sites", ["both", "attn"])
def test_static_fold_is_exact(sites):
    loaded = load_clip(TINY, random_init=True, seed=4)
    aset = inject(loaded.model, AdaRingConfig(layers="all", sites=sites))
    randomise(aset)
    images = torch.randn(3, 3, 64, 64)
    before = _logits(loaded.model, loaded.tokenizer, images)
    report = fold_adapters(loaded.model)
    assert report.fully_folded and unfold_is_clean(loaded.model)
    assert (_logits(loaded.model, loaded.tokenizer, images) - before).abs().max() <= 1e-5


def _run_and_export(tmp_path, combinator):
    adapter = {"method": "adaring", "layers": "all", "combinator": combinator}
    run = write_synthetic_run(tmp_path / f"run_{combinator}", TINY, adapter, CLASSES, adapter_std=0.3)
    bundle = tmp_path / f"bundle_{combinator}"
    export_run(run, bundle, ref_count=4, synthetic_ref=True, progress=False)  # a synthetic run has no data
    return run, bundle


def _torch_vs_onnx(run, bundle):
    record, loaded, _ = load_adapted_model(run)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        emb = class_embeddings(loaded.model, loaded.tokenizer, record.classnames, record.templates)
        ref = build_classifier(loaded.model, emb)(x)[0].numpy()
    sess = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    return np.abs(sess.run(["logits"], {"image": x.numpy()})[0] - ref).max()


def test_static_export_has_base_ops_and_matches_pytorch(tmp_path):
    run, bundle = _run_and_export(tmp_path, "static")
    assert _torch_vs_onnx(run, bundle) <= 1e-4
    base = load_clip(TINY, random_init=True)
    with torch.no_grad():
        emb = class_embeddings(base.model, base.tokenizer, CLASSES, ["a photo of a {}."])
    export_onnx(build_classifier(base.model, emb), (64, 64), tmp_path / "base.onnx")
    assert op_histogram(bundle / "model.onnx") == op_histogram(tmp_path / "base.onnx")
    assert json.loads((bundle / "manifest.json").read_text())["fold"]["fully_folded"] is True


def test_gated_export_keeps_dense_adapters_and_matches_pytorch(tmp_path):
    run, bundle = _run_and_export(tmp_path, "gated")
    assert _torch_vs_onnx(run, bundle) <= 1e-4
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["fold"]["fully_folded"] is False and manifest["fold"]["kept_sites"] == 16
    assert manifest["fold"]["kept_visual_sites"] == 8  # only the image tower's are in the graph
    assert "NOT fully folded" in (bundle / "export_report.md").read_text()
    ops = op_histogram(bundle / "model.onnx")
    assert "Einsum" not in ops  # ring cores are contracted at export, not on the device
    from ringfold.runtime.backends.onnxruntime.model import OnnxModel
    from ringfold.runtime.bundle.loader import load_bundle
    from ringfold.runtime.parity.stored import bundle_parity

    b = load_bundle(bundle)
    assert bundle_parity(b, OnnxModel(b.model_path(), provider="cpu")).passed


def test_training_logs_each_loss_term(tmp_path, demo_data):
    train_tiny(tmp_path / "run", demo_data, method="adaring")
    row = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()][-1]
    assert {"loss_ce", "loss_coarse_ce", "loss_consistency"} <= set(row)
    expected = row["loss_ce"] + 0.5 * row["loss_coarse_ce"] + 1.0 * row["loss_consistency"]
    assert abs(row["loss"] - expected) < 1e-5
    assert row["loss_consistency"] >= 0
    from ringfold.trainer.plots import loss_terms

    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert loss_terms(rows) == ["ce", "coarse_ce", "consistency"]  # what curves.png draws beside the total
