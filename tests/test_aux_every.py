"""--aux-every K: AdaRing's auxiliary terms on every K-th step, weighted K·λ (an opt-in approximation)."""

import json

import pytest
import torch

from ringfold.errors import FieldError
from ringfold.trainer import losses
from ringfold.trainer.adapters.adaring import AdaRingConfig
from ringfold.trainer.losses import LossWeights, compute_loss
from ringfold.trainer.train import _count_terms_per_sample

from .conftest import train_tiny
from .test_frozen_prefix import _setup


def test_auxiliary_weights_run_every_kth_step_scaled_by_k():
    weights = LossWeights(coarse=0.5, consistency=1.0, aux_every=3)
    coarse = [weights.at_step(s).coarse for s in range(7)]
    consistency = [weights.at_step(s).consistency for s in range(7)]
    assert coarse == [1.5, 0, 0, 1.5, 0, 0, 1.5]
    assert consistency == [3.0, 0, 0, 3.0, 0, 0, 3.0]
    exact = LossWeights(coarse=0.5, consistency=1.0)
    assert all(exact.at_step(s) == exact for s in range(4))
    assert LossWeights.from_config(AdaRingConfig(aux_every=4)).aux_every == 4


def test_k_steps_add_up_to_k_exact_steps_gradients():
    """With the adapters held still, K steps of --aux-every K give the gradient of K exact steps."""
    k = 3
    model, aset, images, labels, class_emb, frozen = _setup()
    model.train()
    exact = LossWeights(coarse=0.7, consistency=0.4)
    every = LossWeights(coarse=0.7, consistency=0.4, aux_every=k)

    def summed_grads(weights_per_step):
        aset.zero_grad()
        for w in weights_per_step:
            compute_loss(model, aset, images, labels, class_emb, w, frozen_class_emb=frozen).total.backward()
        return {n: p.grad.clone() for n, p in aset.named_parameters() if p.grad is not None}

    want = summed_grads([exact] * k)
    got = summed_grads([every.at_step(s) for s in range(k)])
    assert set(got) == set(want) and len(want) >= 8
    for name, grad in want.items():
        assert torch.allclose(got[name], grad, rtol=1e-4, atol=1e-5 * float(grad.abs().max())), name
    skipped = summed_grads([every.at_step(1)])  # a skipped step is CE alone: it must differ from the exact step
    name = "adapters.visual_attn.coarse.g_lay"
    assert not torch.allclose(skipped[name], want[name] / k)


def test_training_skips_the_extra_passes_and_logs_each_term_over_the_steps_that_computed_it(
    tmp_path, demo_data, monkeypatch
):
    calls = []
    real = losses.compute_loss

    def spy(model, adapters, images, labels, class_emb_fn, weights, **kw):
        out = real(model, adapters, images, labels, class_emb_fn, weights, **kw)
        calls.append((weights, len(labels), out.terms))
        return out

    from ringfold.trainer import train as train_mod

    monkeypatch.setattr(train_mod, "compute_loss", spy)
    frozen_passes = []
    real_frozen = train_mod.frozen_image_features
    monkeypatch.setattr(train_mod, "frozen_image_features", lambda *a: frozen_passes.append(1) or real_frozen(*a))
    adapter = {"layers": "last:1", "coarse_loss_weight": 0.5, "consistency_loss_weight": 0.5, "aux_every": 2}
    run = train_tiny(tmp_path / "run", demo_data, epochs=2, method="adaring", settings={"shots": 4}, **adapter)
    steps = len(calls)
    assert steps == 4  # 2 epochs × 16 images / batch 8
    assert [c[0].coarse for c in calls] == [1.0, 0.0, 1.0, 0.0]
    assert [("coarse_ce" in c[2], "consistency" in c[2]) for c in calls] == [(True, True), (False, False)] * 2
    assert len(frozen_passes) == 2  # one frozen pass per aux step (its batch is not all cached); none when skipped
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()][1:]
    for epoch, row in enumerate(rows):
        weights, n, terms = calls[2 * epoch]
        assert row["loss_coarse_ce"] == pytest.approx(terms["coarse_ce"], rel=1e-6)
        assert row["loss_consistency"] == pytest.approx(terms["consistency"], rel=1e-6)
        both = calls[2 * epoch : 2 * epoch + 2]
        assert row["loss_ce"] == pytest.approx(sum(c[2]["ce"] * c[1] for c in both) / sum(c[1] for c in both))


def test_aux_every_must_be_a_positive_integer():
    with pytest.raises(FieldError, match="aux_every"):
        AdaRingConfig(aux_every=0)


def test_checkpoint_sums_from_before_per_term_counts_are_counted_per_sample():
    sums = {"total": 6.0, "ce": 4.0, "coarse_ce": 2.0, "correct": 3.0, "seen": 8.0}
    _count_terms_per_sample(sums)
    assert sums["seen:ce"] == sums["seen:coarse_ce"] == 8.0
    assert "seen:total" not in sums and "seen:correct" not in sums and "seen:seen" not in sums
