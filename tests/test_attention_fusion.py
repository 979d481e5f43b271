"""The exported attention is in the form ONNX Runtime fuses: q, k and v as three projections of one LayerNorm output.

open_clip packs the input projection (nn.MultiheadAttention in 3.x, its own ``Attention`` in 4.x); the
exporter swaps in :class:`SplitAttention` (the same weights, sliced) for the export only.
"""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from open_clip.transformer import Attention
from torch import nn

from ringfold.exporter.attention_export import SplitAttention, split_attention, split_of
from ringfold.exporter.onnx_export import export_onnx
from ringfold.trainer.head import build_classifier
from ringfold.trainer.models import load_clip
from ringfold.trainer.text import class_embeddings

from .conftest import TINY


def _causal(length: int) -> torch.Tensor:
    return torch.triu(torch.full((length, length), float("-inf")), 1)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("masked", [False, True])
def test_split_multihead_attention_computes_the_packed_one(batch_first, masked):
    torch.manual_seed(0)
    packed = nn.MultiheadAttention(64, 4, batch_first=batch_first).eval()
    split = split_of(packed)
    assert isinstance(split, SplitAttention)
    x = torch.randn(2, 7, 64) if batch_first else torch.randn(7, 2, 64)
    mask = _causal(7) if masked else None
    with torch.no_grad():
        want = packed(x, x, x, need_weights=False, attn_mask=mask)[0]
        got = split(x, x, x, need_weights=False, attn_mask=mask)[0]
    assert (want - got).abs().max() <= 1e-6
    # the same weights, sliced: nothing recomputed, so a folded model stays exactly folded
    q, k, v = packed.in_proj_weight.detach().chunk(3)
    assert torch.equal(split.q_proj.weight, q) and torch.equal(split.k_proj.weight, k)
    assert torch.equal(split.v_proj.weight, v)


@pytest.mark.parametrize("masked", [False, True])
def test_split_open_clip_attention_computes_the_packed_one(masked):
    """open_clip's own Attention (packed in_proj_weight + scaled_dot_product_attention, its 4.x block)."""
    torch.manual_seed(0)
    packed = Attention(64, 4).eval()
    split = split_of(packed)
    x = torch.randn(3, 5, 64)
    mask = _causal(5) if masked else None
    with torch.no_grad():
        assert (packed(x, attn_mask=mask) - split(x, attn_mask=mask)).abs().max() <= 1e-6


def test_attention_variants_it_cannot_express_stay_packed():
    assert split_of(Attention(64, 4, qk_norm=True)) is None
    assert split_of(Attention(64, 4, scale_heads=True)) is None
    assert split_of(nn.MultiheadAttention(64, 4, add_bias_kv=True)) is None
    assert split_of(nn.MultiheadAttention(64, 4, kdim=32, vdim=32)) is None


def test_the_swap_is_undone_after_the_export():
    model = nn.Sequential(nn.MultiheadAttention(16, 2, batch_first=True))
    original = model[0]
    with split_attention(model) as swapped:
        assert swapped == 1 and isinstance(model[0], SplitAttention)
    assert model[0] is original


def _ops(model) -> collections.Counter:
    return collections.Counter(n.op_type for n in model.graph.node)


def test_onnx_runtime_fuses_one_attention_node_per_image_layer(tiny_bundle, tmp_path):
    """ORT's transformer optimizer (model_type="clip") fuses every layer of the bundle's image model, and the
    fused graph computes what the bundle's does."""
    from onnxruntime.transformers.optimizer import optimize_model

    layers = len(load_clip(TINY, random_init=True).model.visual.transformer.resblocks)
    model = onnx.load(str(tiny_bundle / "model.onnx"))
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}  # the bundle itself stays standard ONNX
    assert _ops(model)["MatMul"] >= 3 * layers  # q, k, v: three MatMuls per layer, not one packed
    fused = optimize_model(str(tiny_bundle / "model.onnx"), model_type="clip", num_heads=0, hidden_size=0, opt_level=0)
    assert _ops(fused.model)["Attention"] == layers == 4
    fused.save_model_to_file(str(tmp_path / "fused.onnx"))
    x = np.random.default_rng(0).random((3, 3, 64, 64), dtype=np.float32)
    want = ort.InferenceSession(str(tiny_bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    got = ort.InferenceSession(str(tmp_path / "fused.onnx"), providers=["CPUExecutionProvider"])
    for a, b in zip(want.run(None, {"image": x}), got.run(None, {"image": x}), strict=True):
        assert np.abs(a - b).max() <= 1e-4


def test_a_fresh_base_export_fuses_too(tmp_path):
    """The base model (no adapters) exported the same way: the zero-overhead comparison is split vs split."""
    from onnxruntime.transformers.optimizer import optimize_model

    base = load_clip(TINY, random_init=True)
    with torch.no_grad():
        emb = class_embeddings(base.model, base.tokenizer, ["a", "b"], ["a photo of a {}."])
    export_onnx(build_classifier(base.model, emb), (64, 64), tmp_path / "base.onnx")
    assert all(isinstance(b.attn, nn.MultiheadAttention) for b in base.model.visual.transformer.resblocks)
    fused = optimize_model(str(tmp_path / "base.onnx"), model_type="clip", num_heads=0, hidden_size=0, opt_level=0)
    assert _ops(fused.model)["Attention"] == 4


@pytest.mark.slow
def test_vit_b16_fuses_all_twelve_layers(tmp_path):
    from onnxruntime.transformers.optimizer import optimize_model

    base = load_clip("ViT-B-16", random_init=True)
    with torch.no_grad():
        emb = class_embeddings(base.model, base.tokenizer, ["a", "b"], ["a photo of a {}."])
    export_onnx(build_classifier(base.model, emb), (224, 224), tmp_path / "vit.onnx")
    fused = optimize_model(str(tmp_path / "vit.onnx"), model_type="clip", num_heads=0, hidden_size=0, opt_level=0)
    assert _ops(fused.model)["Attention"] == len(base.model.visual.transformer.resblocks) == 12
