"""MMA-style baseline: parameter count, identity at init, cross-tower sharing, gradients, and a non-folded export."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import load_file, save_file

from ringfold.errors import RingfoldError
from ringfold.exporter.fold import fold_adapters, unfold_is_clean
from ringfold.trainer.adapters import inject
from ringfold.trainer.adapters.mma import MmaAdapter, MmaConfig
from ringfold.trainer.models import load_clip
from ringfold.trainer.text import class_embeddings, clip_logits

from .conftest import TINY, train_tiny

CLASSES = ["cat", "dog", "car", "tree"]


def _logits(model, tokenizer, images):
    with torch.no_grad():
        emb = class_embeddings(model, tokenizer, CLASSES, ["a photo of a {}."])
        return clip_logits(model, images, emb)


def _randomise(aset, seed=0, std=0.3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in aset.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)


def _mma_parameter_count(dims: dict[str, int], rank: int, num_layers: int) -> int:
    """MMA's count by formula: L·Σ_towers[(d·r + r) + (r·d + d)] + L·(r·r + r) per site kind."""
    per_tower = sum((d * rank + rank) + (rank * d + d) for d in dims.values())
    return num_layers * (per_tower + rank * rank + rank)


def test_vit_b16_default_parameter_count_is_mmas_0_675m():
    from ringfold.trainer.params import parameter_rows

    cfg = MmaConfig()
    assert (cfg.layers, cfg.sites, cfg.rank, cfg.scale, cfg.towers) == (
        "last:2/3",
        "attn",
        32,
        1e-3,
        ("visual", "text"),
    )
    rows = parameter_rows("ViT-B-16", cfg)
    assert [r.layers for r in rows] == [8, 8, 8]  # blocks 4..11 of 12 in each tower
    # by hand, r = 32, 8 layers: visual down 768·32+32 = 24,608, up 32·768+768 = 25,344 → 8·49,952 = 399,616;
    # text down 512·32+32 = 16,416, up 32·512+512 = 16,896 → 8·33,312 = 266,496; shared middle 8·(32·32+32) = 8,448
    assert [(r.tower, r.total) for r in rows] == [("visual", 399_616), ("text", 266_496), ("both", 8_448)]
    assert sum(r.total for r in rows) == 399_616 + 266_496 + 8_448 == 674_560
    assert _mma_parameter_count({"visual": 768, "text": 512}, 32, 8) == 674_560


def test_tiny_default_layers_follow_depth_and_params_all_methods_work():
    """Default layers are blocks ⌊d/3⌋..d−1, so the 4-block tiny model gets 1..3 instead of an error."""
    from ringfold.trainer.adapters.base import resolve_layers
    from ringfold.trainer.params import format_tables, parameter_rows, parameter_tables

    assert [resolve_layers(MmaConfig().layers, d) for d in (12, 4, 24, 6)] == [
        list(range(4, 12)),
        [1, 2, 3],
        list(range(8, 24)),
        [2, 3, 4, 5],
    ]
    for bad in ("last:0/3", "last:4/3", "last:1/0"):
        with pytest.raises(RingfoldError, match="layers"):
            resolve_layers(bad, 12)
    rows = parameter_rows(TINY, MmaConfig())
    assert rows[0].parts == {"down": 3 * (128 * 32 + 32), "up": 3 * (32 * 128 + 128)}
    # by hand, d = 128 both towers, r = 32, 3 layers: down 128·32+32 = 4,128, up 32·128+128 = 4,224
    # → 3·8,352 = 25,056 per tower; shared middle 3·(32·32+32) = 3,168
    assert [(r.tower, r.layers, r.total) for r in rows] == [
        ("visual", 3, 25_056),
        ("text", 3, 25_056),
        ("both", 3, 3_168),
    ]
    assert sum(r.total for r in rows) == 53_280 == _mma_parameter_count({"visual": 128, "text": 128}, 32, 3)
    tables = parameter_tables(TINY, ["adaring", "arc", "mma"])  # what `ringfold params --method all` builds
    assert "mma          53,280" in format_tables(TINY, tables)


def test_config_round_trip_and_bad_values():
    from ringfold.trainer.adapters import config_from_dict

    cfg = config_from_dict({"method": "mma", "rank": 8, "layers": "all"})
    assert isinstance(cfg, MmaConfig) and cfg.to_dict()["method"] == "mma" and cfg.scale == 1e-3
    with pytest.raises(RingfoldError, match="rank"):
        MmaConfig(rank=0)
    with pytest.raises(RingfoldError, match="up_init"):
        MmaConfig(up_init="ones")
    for sites in ("mlp", "both"):  # the branch reads ln_1 and lands on the block output: no other site kind
        with pytest.raises(RingfoldError, match="sites"):
            MmaConfig(sites=sites)


def test_identity_at_init_shared_projection_once_and_not_foldable():
    loaded = load_clip(TINY, random_init=True)
    images = torch.randn(2, 3, 64, 64)
    base = _logits(loaded.model, loaded.tokenizer, images)
    aset = inject(loaded.model, MmaConfig(rank=8, layers="all", scale=0.5))
    assert torch.equal(_logits(loaded.model, loaded.tokenizer, images), base)  # up-projections start at zero

    vis, txt = aset.adapters["visual_attn"], aset.adapters["text_attn"]
    assert vis.middle is txt.middle is aset.shared["mma_attn"] and len(vis.middle) == 4
    keys = list(aset.state_dict())
    assert sum(k.startswith("shared.mma_attn.") for k in keys) == 4 * 2  # weight + bias per layer, saved once
    assert not any(".middle." in k for k in keys)
    assert len({id(p) for p in aset.parameters()}) == len(list(aset.parameters())) == len(keys)
    assert not aset.foldable
    with pytest.raises(RingfoldError, match="non-linear"):
        vis.dense(0)

    # the shared projection forces the same number of adapted layers in both towers
    with pytest.raises(RingfoldError, match="same number of blocks"):
        MmaAdapter(MmaConfig(rank=8), dim=16, num_layers=3, tower="text", site="attn", shared=aset.shared)


def test_every_parameter_gets_a_gradient_after_one_step():
    loaded = load_clip(TINY, random_init=True)
    model = loaded.model
    aset = inject(model, MmaConfig(rank=8, layers="all"))
    images, labels = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])
    opt = torch.optim.AdamW(aset.parameters(), lr=1e-2)

    def backward():
        opt.zero_grad()
        emb = class_embeddings(model, loaded.tokenizer, CLASSES, ["a photo of a {}."])
        torch.nn.functional.cross_entropy(clip_logits(model, images, emb), labels).backward()

    backward()  # step 0: up = 0, so only the up-projections receive gradient
    named = dict(aset.named_parameters())
    assert all(named[n].grad.abs().sum() > 0 for n in named if ".up." in n)
    opt.step()
    backward()
    zero = [n for n, p in named.items() if p.grad is None or p.grad.abs().sum() == 0]
    assert not zero, f"no gradient after one step: {zero[:4]}"
    assert any(n.startswith("shared.") for n in named)
    # MMA's gradient compensation: the branch's parameters see gradients as if the scale were 1
    assert named["adapters.visual_attn.up.0.bias"].grad.abs().max() > 1e-4


@pytest.mark.parametrize("shared_relu", [True, False])
def test_branch_formula(shared_relu):
    from torch import nn

    shared = nn.ModuleDict()
    cfg = MmaConfig(rank=4, up_init="kaiming", shared_relu=shared_relu)
    vis = MmaAdapter(cfg, dim=16, num_layers=2, tower="visual", site="attn", shared=shared)
    txt = MmaAdapter(cfg, dim=12, num_layers=2, tower="text", site="attn", shared=shared)
    assert vis.middle is txt.middle and vis.up[1].weight.abs().sum() > 0  # MMA's own init: no zero up
    y = torch.randn(3, 5, 16)
    down, mid, up = vis.down[1], shared["mma_attn"][1], vis.up[1]
    h = mid(torch.relu(down(y)))
    expected = up(torch.relu(h) if shared_relu else h)
    with torch.no_grad():
        assert torch.allclose(vis.delta(y, 1), expected, atol=1e-6)


def test_gradient_compensation_rescales_parameter_gradients_only():
    """MMA's gradient-scale layers: same forward, every adapter gradient ×1/scale (as if the scale were 1)."""
    grads, outs = [], []
    for comp in (True, False):
        loaded = load_clip(TINY, random_init=True)
        aset = inject(loaded.model, MmaConfig(rank=8, layers="all", scale=0.01, grad_compensation=comp))
        _randomise(aset, std=0.2)
        images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        emb = class_embeddings(loaded.model, loaded.tokenizer, CLASSES, ["a photo of a {}."])
        logits = clip_logits(loaded.model, images, emb)
        torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1])).backward()
        outs.append(logits.detach())
        grads.append({n: p.grad.clone() for n, p in aset.named_parameters()})
    assert torch.equal(outs[0], outs[1])
    for name, g in grads[1].items():
        assert torch.allclose(grads[0][name] * 0.01, g, rtol=1e-3, atol=1e-9), name


def test_fold_keeps_mma_in_the_graph_and_outputs_unchanged():
    loaded = load_clip(TINY, random_init=True)
    images = torch.randn(2, 3, 64, 64)
    base = _logits(loaded.model, loaded.tokenizer, images)
    aset = inject(loaded.model, MmaConfig(rank=8, layers="all", scale=1.0))
    _randomise(aset)
    before = _logits(loaded.model, loaded.tokenizer, images)
    assert (before - base).abs().max() > 1e-2, "random adapters must change the output"
    report = fold_adapters(loaded.model)
    assert report.kept_sites == 2 * 4 and report.folded_sites == 0 and not report.fully_folded
    assert not unfold_is_clean(loaded.model)
    assert report.kept_methods == ["MmaAdapter"]
    assert torch.equal(_logits(loaded.model, loaded.tokenizer, images), before)
    assert not any(p.requires_grad for p in aset.parameters())
    # image tower only (the text tower is not in the deployed graph): 17 tokens (4×4 patches + class),
    # 4 blocks, d = 128, r = 8
    assert report.extra_macs_per_image == 4 * 17 * (128 * 8 + 8 * 8 + 8 * 128)


def test_export_round_trip_keeps_branch_and_matches_pytorch(demo_data, tmp_path, tiny_bundle):
    from ringfold.exporter.export import export_run
    from ringfold.exporter.onnx_export import op_histogram
    from ringfold.runtime.backends.registry import open_model
    from ringfold.runtime.bundle.loader import load_bundle
    from ringfold.runtime.parity.stored import bundle_parity
    from ringfold.trainer.head import build_classifier
    from ringfold.trainer.run import load_adapted_model

    run = train_tiny(tmp_path / "mma_run", demo_data, method="mma", settings={"shots": 2}, rank=8, scale=0.1)
    # trained for one epoch the branch is still tiny; overwrite with random weights so it matters
    tensors = load_file(str(run / "adapters.safetensors"))
    g = torch.Generator().manual_seed(3)
    save_file(
        {k: torch.randn(v.shape, generator=g) * 0.3 for k, v in tensors.items()}, str(run / "adapters.safetensors")
    )

    bundle = tmp_path / "bundle"
    result = export_run(run, bundle, ref_count=4, progress=False)
    assert result.onnx_vs_torch_max_abs <= 1e-4

    record, loaded, _ = load_adapted_model(run)
    with torch.no_grad():
        emb = class_embeddings(loaded.model, loaded.tokenizer, record.classnames, record.templates)
        x = torch.randn(3, 3, 64, 64)
        ref_logits, ref_emb = build_classifier(loaded.model, emb)(x)
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    logits, embedding = session.run(None, {"image": x.numpy()})
    assert np.abs(logits - ref_logits.numpy()).max() <= 1e-4
    assert np.abs(embedding - ref_emb.numpy()).max() <= 1e-5

    base = load_clip(TINY, random_init=True)
    with torch.no_grad():
        base_emb = class_embeddings(base.model, base.tokenizer, record.classnames, record.templates)
        base_logits = build_classifier(base.model, base_emb)(x)[0]
    assert np.abs(logits - base_logits.numpy()).max() > 1e-2, "the MMA branch must change the exported logits"
    # the ARC bundle's graph is the base graph; MMA's carries its branch: 3 MatMul + 2 Relu per block
    ops, arc_ops = op_histogram(bundle / "model.onnx"), op_histogram(tiny_bundle / "model.onnx")
    assert ops.get("MatMul", 0) >= arc_ops.get("MatMul", 0) + 3 * 4
    assert ops.get("Relu", 0) >= arc_ops.get("Relu", 0) + 2 * 4

    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["fold"]["fully_folded"] is False and manifest["fold"]["kept_sites"] == 2 * 4  # both towers
    assert manifest["fold"]["extra_macs_per_image"] == 4 * 17 * (2 * 128 * 8 + 8 * 8)
    assert manifest["fold"]["latency_vs_base"]["ratio"] > 0 and "base_model" in manifest
    report = (bundle / "export_report.md").read_text()
    assert "NOT fully folded" in report and "GFLOPs per image" in report

    loaded_bundle = load_bundle(bundle)
    parity = bundle_parity(loaded_bundle, open_model(loaded_bundle, "fp32"), "fp32")
    assert parity.passed, parity.to_markdown()
