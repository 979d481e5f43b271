"""AdaRing's fast training forward (stacked factor pairs, two matmuls per layer) is exact (issue 12).

Checked against (1) the dense tensor-ring reconstruction applied as ``y @ A + b`` and (2) the pre-change
forward (two einsums per ring and layer, blended afterwards), re-typed below as the reference.
"""

import pytest
import torch
import torch.nn.functional as F

from ringfold.trainer.adapters import inject
from ringfold.trainer.adapters.adaring import AdaRingAdapter, AdaRingConfig
from ringfold.trainer.losses import LossWeights, compute_loss
from ringfold.trainer.models import load_clip
from ringfold.trainer.text import class_embeddings

from .conftest import TINY
from .helpers import randomise, rel_to_largest

CLASSES = ["cat", "dog", "car", "tree"]


# -- the pre-change forward, re-typed as the reference ------------------------------------------------
def _old_begin_step(self) -> None:
    if self._dense is not None:
        return
    self._factors = (_layer_factors(self.fine), _layer_factors(self.coarse))


def _layer_factors(ring):
    """H[l, a, i, c] = Σ_b G_in[a, i, b] G_lay[b, l, c]: what every layer needed, contracted once."""
    return torch.einsum("aib,blc->laic", ring.g_in, ring.g_lay)


def _old_apply(y, h_l, g_out):
    t = torch.einsum("...i,aic->...ac", y, h_l.to(y.dtype))
    return torch.einsum("...ac,cja->...j", t, g_out.to(y.dtype))


def _old_delta(self, y, layer):
    w = self.weights(y, layer)
    alpha, beta = w[..., 0:1], w[..., 1:2]
    bias = self.bias[layer].to(y.dtype) if self.bias is not None else 0.0
    if self._factors is None:
        self.begin_step()
    h_fine, h_coarse = self._factors
    coarse_out = _old_apply(y, h_coarse[layer], self.coarse.g_out)
    if self.mode == "coarse":
        return coarse_out + bias
    fine_out = _old_apply(y, h_fine[layer], self.fine.g_out)
    if self.mode == "fine":
        return fine_out + bias
    return alpha * fine_out + beta * coarse_out + bias


def _adapters(combinator="static"):
    loaded = load_clip(TINY, random_init=True, seed=1)
    aset = inject(loaded.model, AdaRingConfig(layers="all", combinator=combinator))
    randomise(aset)
    return loaded, aset


@pytest.mark.parametrize("mode", ["fine", "coarse", "full"])
def test_fast_delta_equals_dense_ring_reconstruction(mode):
    _, aset = _adapters()
    y = torch.randn(3, 7, next(iter(aset.adapters.values())).dim)
    for adapter in aset.adapters.values():
        adapter.set_mode(mode)
        adapter.begin_step()
        for layer in range(adapter.num_layers):
            alpha, beta = F.softmax(adapter.mix[layer], dim=-1)
            a = {
                "fine": adapter.fine.dense(layer),
                "coarse": adapter.coarse.dense(layer),
                "full": alpha * adapter.fine.dense(layer) + beta * adapter.coarse.dense(layer),
            }[mode]
            want = y @ a + adapter.bias[layer]
            with torch.no_grad():
                assert rel_to_largest(adapter.delta(y, layer), want) <= 1e-6, (mode, layer)


@pytest.mark.parametrize("combinator", ["static", "gated"])
@pytest.mark.parametrize("mode", ["fine", "coarse", "full"])
def test_fast_delta_equals_the_pre_change_forward(combinator, mode, monkeypatch):
    _, aset = _adapters(combinator)
    y = torch.randn(3, 7, next(iter(aset.adapters.values())).dim)
    for adapter in aset.adapters.values():
        adapter.set_mode(mode)
        adapter.begin_step()
        new = [adapter.delta(y, layer) for layer in range(adapter.num_layers)]
        with monkeypatch.context() as m:
            m.setattr(AdaRingAdapter, "begin_step", _old_begin_step)
            m.setattr(AdaRingAdapter, "delta", _old_delta)
            adapter.begin_step()
            old = [adapter.delta(y, layer) for layer in range(adapter.num_layers)]
        for layer, (got, want) in enumerate(zip(new, old, strict=True)):
            assert rel_to_largest(got.detach(), want.detach()) <= 1e-6, (mode, layer)


def _step(loaded, aset, images, labels, paired=True):
    """One full-objective step (CE + coarse CE + consistency): the loss and every core's gradient."""
    model, tokenizer = loaded.model, loaded.tokenizer

    def class_emb(copies=1):
        return class_embeddings(model, tokenizer, CLASSES, ["a photo of a {}."], copies=copies)

    with torch.no_grad():
        aset.set_enabled(False)
        frozen = class_emb()
        aset.set_enabled(True)
    aset.zero_grad(set_to_none=True)
    weights = LossWeights(0.5, 1.0)
    out = compute_loss(model, aset, images, labels, class_emb, weights, frozen_class_emb=frozen, paired=paired)
    out.total.backward()
    return out.total.detach(), {n: p.grad.detach().clone() for n, p in aset.named_parameters()}


@pytest.mark.parametrize("combinator", ["static", "gated"])
def test_full_training_step_equals_the_pre_change_forward(combinator, monkeypatch):
    loaded, aset = _adapters(combinator)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([0, 3])
    loss, grads = _step(loaded, aset, images, labels)
    with monkeypatch.context() as m:
        m.setattr(AdaRingAdapter, "begin_step", _old_begin_step)
        m.setattr(AdaRingAdapter, "delta", _old_delta)
        for adapter in aset.adapters.values():
            adapter._factors = None
        # the pre-change forward knew no paired mode: its passes ran one after the other
        old_loss, old_grads = _step(loaded, aset, images, labels, paired=False)
    assert rel_to_largest(loss, old_loss) <= 1e-6
    assert grads.keys() == old_grads.keys()
    for name, g in grads.items():
        assert g.abs().sum() > 0, name
        # fp32 backward through the whole tower in another summation order (and, paired, matmuls of twice the
        # rows): a few ulps of the largest entry
        assert rel_to_largest(g, old_grads[name]) <= 1e-4, name


def test_inference_mode_pass_contracts_lazily_and_stays_exact():
    """The frozen reference pass (inference mode, adapters off) contracts nothing; an enabled one contracts once."""
    _, aset = _adapters()
    adapter = next(iter(aset.adapters.values()))
    y = torch.randn(2, 5, adapter.dim)
    adapter.begin_step()
    with torch.inference_mode():
        adapter.begin_step()
        assert adapter._factors is None
        got = adapter.delta(y, 1)
        assert adapter._factors is not None
    a, b = adapter.dense(1)
    assert rel_to_largest(got, (y @ a + b).detach()) <= 1e-6


@pytest.mark.parametrize("combinator", ["static", "gated"])
def test_paired_delta_is_the_full_delta_on_the_first_half_and_the_coarse_on_the_second(combinator):
    """Paired mode runs both halves through one batched matmul (static) against stacked (U_full, U_coarse)."""
    _, aset = _adapters(combinator)
    y = torch.randn(3, 7, next(iter(aset.adapters.values())).dim)
    for adapter in aset.adapters.values():
        want = {}
        for mode in ("full", "coarse"):
            adapter.set_mode(mode)
            adapter.begin_step()
            want[mode] = [adapter.delta(y, layer).detach() for layer in range(adapter.num_layers)]
        adapter.set_mode("paired")
        adapter.begin_step()
        for layer in range(adapter.num_layers):
            got = adapter.delta(torch.cat((y, y)), layer).detach()
            assert rel_to_largest(got[:3], want["full"][layer]) <= 1e-6, layer
            assert rel_to_largest(got[3:], want["coarse"][layer]) <= 1e-6, layer
        with pytest.raises(Exception, match="stacked twice"):
            adapter.delta(y, 0)


def test_a_step_contracts_each_adapter_once(monkeypatch):
    """Each tower's pre-hook contracts that tower's adapters only (both towers used to re-contract all four)."""
    loaded, aset = _adapters()
    calls = []
    original = AdaRingAdapter._contract

    def counted(self):
        calls.append(next(k for k, a in aset.adapters.items() if a is self))
        original(self)

    monkeypatch.setattr(AdaRingAdapter, "_contract", counted)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    _step(loaded, aset, images, torch.tensor([0, 3]))
    assert sorted(calls) == sorted(aset.adapters), calls


def test_autocast_casts_the_factors_once_per_step_not_once_per_layer():
    """Under autocast the cached factors are already in the autocast dtype, so a layer's matmuls cast only ``y``."""
    from torch.profiler import ProfilerActivity, profile

    _, aset = _adapters()
    adapter = aset.adapters["visual_attn"]
    y = torch.randn(2, 5, adapter.dim)
    want = [adapter.delta(y, layer).detach() for layer in range(adapter.num_layers)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        adapter.begin_step()
        u, v = adapter._factors["full"]
        assert {t.dtype for t in (*u, v, *adapter._factors["bias"])} == {torch.bfloat16}
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            got = [adapter.delta(y, layer) for layer in range(adapter.num_layers)]
    casts = [e for e in prof.events() if e.name == "aten::_to_copy"]
    assert len(casts) == adapter.num_layers  # y's, once per layer; the factors and bias: none
    for layer, g in enumerate(got):
        assert g.dtype == torch.bfloat16
        assert rel_to_largest(g.detach().float(), want[layer]) <= 2e-2, layer  # bf16 operands
