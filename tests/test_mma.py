import json

import numpy as np
import onnxruntime as ort
import torch

from ringfold.exporter.export import export_run
from ringfold.exporter.fold import fold_adapters
from ringfold.exporter.head import build_classifier
from ringfold.exporter.onnx_export import op_histogram
from ringfold.trainer.adapters import inject
from ringfold.trainer.adapters.mma import MmaConfig
from ringfold.trainer.models import load_clip
from ringfold.trainer.params import parameter_rows
from ringfold.trainer.run import load_adapted_model, write_synthetic_run
from ringfold.trainer.text import class_embeddings, clip_logits

TINY = "ringfold-tiny-vit"
CLASSES = ["cat", "dog", "car"]


def _logits(model, tokenizer, images):
    emb = class_embeddings(model, tokenizer, CLASSES, ["a photo of a {}."])
    return clip_logits(model, images, emb)


def test_vit_b16_count_is_mma_0675m():
    rows = parameter_rows("ViT-B-16", MmaConfig())
    assert sum(r.total for r in rows) == 674_560
    cross = [r for r in rows if r.site == "cross"]
    assert cross and cross[0].total == 8 * (32 * 32 + 32)


def test_identity_at_init_shared_once_and_gradients_reach_everything():
    base = load_clip(TINY, random_init=True, seed=3)
    adapted = load_clip(TINY, random_init=True, seed=3)
    aset = inject(adapted.model, MmaConfig(layers="all", rank=8))
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(
            _logits(base.model, base.tokenizer, images), _logits(adapted.model, adapted.tokenizer, images)
        )
    assert aset.adapters["visual_attn"].middle is aset.adapters["text_attn"].middle
    assert sum(k.startswith("shared.mma_attn") for k in aset.state_dict()) == 2 * 4  # 4 layers × (weight, bias)
    opt = torch.optim.AdamW(aset.parameters(), lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(
            _logits(adapted.model, adapted.tokenizer, images), torch.tensor([0, 2])
        ).backward()
        opt.step()
    for name, p in aset.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_fold_keeps_mma_in_place_and_output_unchanged():
    loaded = load_clip(TINY, random_init=True)
    aset = inject(loaded.model, MmaConfig(layers="all", rank=8, scale=0.5))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in aset.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        images = torch.randn(2, 3, 64, 64)
        before = _logits(loaded.model, loaded.tokenizer, images)
        report = fold_adapters(loaded.model)
        after = _logits(loaded.model, loaded.tokenizer, images)
    assert not report.fully_folded and report.kept_sites == 8 and report.folded_sites == 0
    assert report.extra_macs_per_image == 4 * 17 * (128 * 8 + 8 * 8 + 8 * 128)
    assert torch.equal(before, after)


def test_mma_export_keeps_the_branch_and_matches_pytorch(tmp_path, tiny_bundle):
    adapter = {"method": "mma", "layers": "all", "rank": 8, "scale": 0.5}
    run = write_synthetic_run(tmp_path / "run", TINY, adapter, CLASSES, adapter_std=0.2)
    bundle = tmp_path / "bundle"
    export_run(run, bundle, ref_count=4, progress=False)
    record, loaded, _ = load_adapted_model(run)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        emb = class_embeddings(loaded.model, loaded.tokenizer, record.classnames, record.templates)
        ref = build_classifier(loaded.model, emb)(x)[0].numpy()
    sess = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    assert np.abs(sess.run(["logits"], {"image": x.numpy()})[0] - ref).max() <= 1e-4
    ops, arc_ops = op_histogram(bundle / "model.onnx"), op_histogram(tiny_bundle / "model.onnx")
    assert ops.get("Relu", 0) >= 4 and ops.get("Relu", 0) > arc_ops.get("Relu", 0)
    assert ops.get("MatMul", 0) + ops.get("Gemm", 0) > arc_ops.get("MatMul", 0) + arc_ops.get("Gemm", 0)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["fold"]["fully_folded"] is False and manifest["fold"]["extra_macs_per_image"] > 0
    assert manifest["fold"]["latency_vs_base"]["ratio"] > 0 and "base_model" in manifest
    report = (bundle / "export_report.md").read_text()
    assert "NOT fully folded" in report and "GFLOPs per image" in report
