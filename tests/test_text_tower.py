"""The text tower runs only up to the longest prompt's EOT token, and that changes nothing."""

import pytest
import torch

from ringfold.trainer.adapters import get, inject
from ringfold.trainer.models import load_clip
from ringfold.trainer.text import class_embeddings, encode_text, prompt_length

from .helpers import randomise

TINY = "ringfold-tiny-vit"
PROMPTS = ["a photo of a cat.", "a blurry photo of a red sports car on a wet road at night.", "dog"]


@pytest.fixture(scope="module")
def loaded():
    return load_clip(TINY, random_init=True)


def test_short_prompts_run_to_the_longest_eot_only(loaded):
    tokens = loaded.tokenizer(PROMPTS)
    eot = tokens.argmax(dim=-1)
    assert prompt_length(loaded.model, tokens) == int(eot.max()) + 1
    assert int(eot.max()) + 1 < tokens.shape[1]  # less than the context (32 on the tiny model, 77 on CLIP)


@pytest.mark.parametrize("method", ["arc", "adaring", "mma"])
def test_embeddings_and_adapter_gradients_equal_the_full_context(method):
    loaded = load_clip(TINY, random_init=True)
    model = loaded.model
    aset = inject(model, get(method).config_cls(layers="all"))
    randomise(aset, std=0.05)
    tokens = loaded.tokenizer(PROMPTS)

    def embed_and_grads(fn):
        aset.zero_grad()
        emb = fn()
        (emb * torch.linspace(-1, 1, emb.shape[-1])).sum().backward()
        return emb.detach(), [p.grad.clone() for p in aset.parameters() if p.grad is not None]

    short, short_grads = embed_and_grads(lambda: encode_text(model, tokens))
    full, full_grads = embed_and_grads(lambda: model.encode_text(tokens, normalize=True))
    assert torch.allclose(short, full, atol=1e-6)
    assert len(short_grads) == len(full_grads) > 0
    for a, b in zip(short_grads, full_grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6 * float(b.abs().max()))


def test_class_embeddings_equal_open_clip_with_many_templates(loaded):
    import open_clip

    names, templates = ["cat", "sea lion", "red double-decker bus"], ["a photo of a {}.", "itap of my {}!", "{}"]
    ours = class_embeddings(loaded.model, loaded.tokenizer, names, templates)
    ref = open_clip.build_zero_shot_classifier(loaded.model, loaded.tokenizer, names, templates)
    assert torch.allclose(ours.detach(), ref.t(), atol=1e-6)


def test_a_non_causal_mask_runs_the_whole_context(loaded, monkeypatch):
    model = loaded.model
    tokens = loaded.tokenizer(PROMPTS)
    monkeypatch.setattr(model, "attn_mask", torch.zeros_like(model.attn_mask))  # every token sees the padding
    assert prompt_length(model, tokens) is None
    assert torch.allclose(encode_text(model, tokens), model.encode_text(tokens, normalize=True), atol=0)


def test_other_poolings_no_mask_and_full_prompts_run_the_whole_context():
    loaded = load_clip(TINY, random_init=True)
    model, tokens = loaded.model, loaded.tokenizer(PROMPTS)
    long_prompt = loaded.tokenizer([" ".join(["word"] * 200)])  # fills the context, EOT at the last position
    assert prompt_length(model, long_prompt) is None
    model.text_pool_type = "last"
    assert prompt_length(model, tokens) is None
    model.text_pool_type = "argmax"
    model.attn_mask = None
    assert prompt_length(model, tokens) is None
