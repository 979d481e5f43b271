"""A step's passes share the frozen blocks in front of the first adapter (issue 12): exact, and really shared."""

from contextlib import nullcontext

import pytest
import torch

from ringfold.trainer import losses
from ringfold.trainer.adapters import inject
from ringfold.trainer.adapters.adaring import AdaRingConfig
from ringfold.trainer.adapters.base import tower_blocks
from ringfold.trainer.frozen_prefix import replay_prefix
from ringfold.trainer.losses import LossWeights, compute_loss
from ringfold.trainer.models import load_clip
from ringfold.trainer.text import class_embeddings

from .conftest import TINY
from .helpers import randomise, rel_to_largest

CLASSES = ["cat", "dog", "car", "tree"]


def _setup(layers="last:1", seed=3, **options):
    loaded = load_clip(TINY, random_init=True, seed=1)
    model = loaded.model
    config = AdaRingConfig(layers=layers, coarse_loss_weight=0.7, consistency_loss_weight=0.4, **options)
    aset = inject(model, config)
    randomise(aset, std=0.2, seed=seed)
    with torch.no_grad():
        aset.set_enabled(False)
        frozen = class_embeddings(model, loaded.tokenizer, CLASSES, ["a photo of a {}."], "cpu")
        aset.set_enabled(True)
    images = torch.randn(5, 3, *loaded.preprocess.size, generator=torch.Generator().manual_seed(seed))
    labels = torch.tensor([0, 1, 2, 3, 0])

    def class_emb(copies=1):
        return class_embeddings(model, loaded.tokenizer, CLASSES, ["a photo of a {}."], "cpu", copies=copies)

    return model, aset, images, labels, class_emb, frozen


def _loss_and_grads(monkeypatch, share: bool, frozen_image_given=False, paired=True, layers="last:1", **options):
    model, aset, images, labels, class_emb, frozen = _setup(layers, **options)
    model.train()  # as the trainer runs it
    if not share:
        monkeypatch.setattr(losses, "shared_prefixes", lambda towers: nullcontext([]))
    weights = LossWeights.from_config(aset.config)
    given = losses.frozen_image_features(model, aset, images) if frozen_image_given else None
    out = compute_loss(
        model, aset, images, labels, class_emb, weights, frozen_class_emb=frozen, frozen_image=given, paired=paired
    )
    out.total.backward()
    return out.terms, {n: p.grad.clone() for n, p in aset.named_parameters() if p.grad is not None}, model


def _assert_same(want, got):
    (want_terms, want_grads), (got_terms, got_grads) = want, got
    assert set(got_terms) == {"ce", "coarse_ce", "consistency", "total"}
    for key, value in want_terms.items():
        assert got_terms[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    assert set(got_grads) == set(want_grads) and len(got_grads) >= 8
    for name, grad in want_grads.items():
        assert grad.abs().max() > 0, name
        # measured ≤ 2.3e-6 (torch 2.5 and 2.14, 2 threads); other CPUs and thread counts split sums otherwise
        assert rel_to_largest(got_grads[name], grad) <= 3e-5, name


@pytest.mark.parametrize("paired", [True, False])
@pytest.mark.parametrize("frozen_image_given", [False, True])
def test_shared_prefix_gives_the_same_loss_and_gradients(monkeypatch, frozen_image_given, paired):
    """Reference: every pass computed in full, one after the other (the objective as written in DESIGN §4.3)."""
    *want, _ = _loss_and_grads(monkeypatch, share=False, frozen_image_given=frozen_image_given, paired=False)
    monkeypatch.undo()
    *got, model = _loss_and_grads(monkeypatch, share=True, frozen_image_given=frozen_image_given, paired=paired)
    _assert_same(want, got)
    # the towers are whole again: the replay stand-ins are gone
    for tower in ("visual", "text"):
        assert all(type(b).__name__ == "ResidualAttentionBlock" for b in tower_blocks(model, tower))


@pytest.mark.parametrize(
    "layers, options", [("all", {}), ("last:1", {"combinator": "gated"}), ("0,2", {"bias": False})]
)
def test_the_paired_pass_matches_two_passes_without_a_prefix_gated_or_without_bias(monkeypatch, layers, options):
    """Paired = full + coarse-only in one stacked batch: same loss and gradients as two separate passes."""
    *want, _ = _loss_and_grads(monkeypatch, share=False, paired=False, layers=layers, **options)
    *got, _ = _loss_and_grads(monkeypatch, share=False, paired=True, layers=layers, **options)
    _assert_same(want, got)


@pytest.mark.parametrize("paired", [True, False])
def test_the_prefix_runs_once_per_step_and_is_replayed_for_the_other_passes(monkeypatch, paired):
    model, aset, images, labels, class_emb, frozen = _setup()
    depth = len(tower_blocks(model, "visual"))
    assert [count for _, count in aset.prefixes] == [depth - 1, len(tower_blocks(model, "text")) - 1]
    seen = []
    real = losses.shared_prefixes

    def spy(towers):
        ctx = real(towers)

        class Wrap:
            def __enter__(self):
                self.replays = ctx.__enter__()
                return self.replays

            def __exit__(self, *exc):
                seen.extend((r.replays, r.halved) for r in self.replays)
                return ctx.__exit__(*exc)

        return Wrap()

    monkeypatch.setattr(losses, "shared_prefixes", spy)
    weights = LossWeights.from_config(aset.config)
    compute_loss(model, aset, images, labels, class_emb, weights, frozen_class_emb=frozen, paired=paired)
    if paired:  # image tower: the paired pass runs one copy, the frozen pass replays; text: one copy
        assert seen == [(1, 1), (0, 1)]
    else:  # image tower: the coarse and the frozen pass replay; text tower: the coarse pass replays
        assert seen == [(2, 0), (1, 0)]


def test_no_replay_for_a_different_input_or_a_trainable_or_random_prefix():
    model, aset, images, *_ = _setup()
    blocks = tower_blocks(model, "visual")
    with replay_prefix(blocks, 1) as replay:
        a = model.encode_image(images)
        b = model.encode_image(images + 1.0)  # different input: computed, not replayed
        assert replay.replays == 0
        c = model.encode_image(images)
        assert replay.replays == 0  # the recording follows the latest input
    with torch.no_grad():
        assert torch.allclose(b, model.encode_image(images + 1.0), atol=1e-6)
        assert torch.allclose(a, c, atol=1e-6)
    blocks[0].attn.in_proj_weight.requires_grad_(True)
    with replay_prefix(blocks, 1) as replay:
        assert replay is None
    blocks[0].attn.in_proj_weight.requires_grad_(False)
    blocks[0].mlp.add_module("drop", torch.nn.Dropout(0.1))
    blocks[0].train()
    with replay_prefix(blocks, 1) as replay:
        assert replay is None


def test_cached_frozen_features_train_the_same_adapters_and_are_reused(tmp_path, demo_data, monkeypatch):
    """--no-augment: the frozen pass runs once per sample (epoch 1); epochs 2-3 reuse it, results unchanged."""
    from safetensors.torch import load_file

    from ringfold.trainer import train as train_mod

    from .conftest import train_tiny

    made = []

    class Counting(train_mod.FrozenFeatureCache):
        def __init__(self):
            super().__init__()
            made.append(self)

    settings = {"shots": 2}
    adapter = {"layers": "last:1", "coarse_loss_weight": 0.5, "consistency_loss_weight": 0.5}
    monkeypatch.setattr(train_mod, "FrozenFeatureCache", Counting)
    cached = train_tiny(tmp_path / "cached", demo_data, epochs=3, method="adaring", settings=settings, **adapter)
    (cache,) = made
    steps_per_epoch = -(-2 * 4 // 8)  # shots × classes / batch size, rounded up
    assert len(cache) == 2 * 4 and cache.hits == 2 * steps_per_epoch
    monkeypatch.setattr(train_mod, "FrozenFeatureCache", lambda: None)
    plain = train_tiny(tmp_path / "plain", demo_data, epochs=3, method="adaring", settings=settings, **adapter)
    want, got = load_file(plain / "adapters.safetensors"), load_file(cached / "adapters.safetensors")
    assert set(got) == set(want) and len(want) >= 8
    for name, tensor in want.items():
        assert torch.allclose(got[name], tensor, rtol=1e-5, atol=1e-6), name


def test_paired_passes_train_the_same_adapters_as_separate_passes(tmp_path, demo_data, monkeypatch):
    """Three epochs with the full and coarse-only passes paired (the default) or one after the other."""
    import functools

    from safetensors.torch import load_file

    from ringfold.trainer import train as train_mod

    from .conftest import train_tiny

    adapter = {"layers": "last:1", "coarse_loss_weight": 0.5, "consistency_loss_weight": 0.5}
    paired = train_tiny(tmp_path / "paired", demo_data, epochs=3, method="adaring", settings={"shots": 2}, **adapter)
    monkeypatch.setattr(train_mod, "compute_loss", functools.partial(compute_loss, paired=False))
    apart = train_tiny(tmp_path / "apart", demo_data, epochs=3, method="adaring", settings={"shots": 2}, **adapter)
    want, got = load_file(apart / "adapters.safetensors"), load_file(paired / "adapters.safetensors")
    assert set(got) == set(want) and len(want) >= 8
    moved = 0
    for name, tensor in want.items():
        # summation order differs (matmuls of twice the rows). Adam steps an entry whose gradient is near zero
        # by about ±lr whatever the gradient's size, so rounding can flip single entries: held norm-wise
        # (measured ≤ 9.5e-6) and entry-wise at 1e-3 of the largest entry (measured ≤ 1.1e-4)
        diff = got[name] - tensor
        assert float(diff.norm()) <= 1e-4 * float(tensor.norm()), name
        assert float(diff.abs().max()) <= 1e-3 * float(tensor.abs().max()), name
        moved += name.endswith("g_lay") and float(tensor.abs().max()) > 1e-3
    assert moved == 8  # every layer core left its zero init: the comparison is between trained adapters
