import pytest
import torch

from ringfold.errors import RingfoldError
from ringfold.exporter.fold import fold_adapters, unfold_is_clean
from ringfold.trainer.adapters import inject
from ringfold.trainer.adapters.arc import ArcConfig
from ringfold.trainer.models import load_clip
from ringfold.trainer.text import class_embeddings, clip_logits

from .helpers import randomise

TINY = "ringfold-tiny-vit"


def _outputs(model, tokenizer, images):
    with torch.no_grad():
        emb = class_embeddings(model, tokenizer, ["cat", "dog", "car", "tree"], ["a photo of a {}."])
        return clip_logits(model, images, emb), emb


@pytest.mark.parametrize("sites", ["both", "attn", "mlp"])
def test_fold_is_exact_for_random_arc_weights(sites):
    loaded = load_clip(TINY, random_init=True, seed=1)
    aset = inject(loaded.model, ArcConfig(rank=8, layers="all", sites=sites, scale=0.7))
    randomise(aset, std=0.2)
    images = torch.randn(4, 3, 64, 64)
    before, emb_before = _outputs(loaded.model, loaded.tokenizer, images)
    base = load_clip(TINY, random_init=True, seed=1)
    base_logits, _ = _outputs(base.model, base.tokenizer, images)
    assert (before - base_logits).abs().max() > 1e-2, "adapters must change the output for this test to mean anything"

    report = fold_adapters(loaded.model)
    after, emb_after = _outputs(loaded.model, loaded.tokenizer, images)
    assert report.fully_folded and report.folded_sites == (16 if sites == "both" else 8)
    assert unfold_is_clean(loaded.model)
    assert (after - before).abs().max() <= 1e-5
    assert (emb_after - emb_before).abs().max() <= 1e-6


def test_fold_refuses_non_finite_weights():
    loaded = load_clip(TINY, random_init=True)
    aset = inject(loaded.model, ArcConfig(rank=4, layers="all"))
    with torch.no_grad():
        aset.adapters["visual_attn"].rescale[0, 0] = float("nan")
    with pytest.raises(RingfoldError, match="non-finite"):
        fold_adapters(loaded.model)
