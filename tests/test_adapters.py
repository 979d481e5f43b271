import pytest
import torch

from ringfold.errors import RingfoldError
from ringfold.trainer.adapters import get, inject, resolve_layers
from ringfold.trainer.adapters.arc import ArcConfig
from ringfold.trainer.models import load_clip
from ringfold.trainer.params import parameter_rows
from ringfold.trainer.text import class_embeddings, clip_logits

TINY = "ringfold-tiny-vit"


@pytest.mark.parametrize(
    "spec,depth,expected",
    [
        ("all", 4, [0, 1, 2, 3]),
        ("last:8", 12, list(range(4, 12))),
        ("last:8", 4, [0, 1, 2, 3]),
        ("4-11", 12, list(range(4, 12))),
        ("3,1,1", 4, [1, 3]),
    ],
)
def test_resolve_layers(spec, depth, expected):
    assert resolve_layers(spec, depth) == expected


@pytest.mark.parametrize("spec", ["5-12", "nope", "last:x", ""])
def test_resolve_layers_rejects(spec):
    with pytest.raises(RingfoldError):
        resolve_layers(spec, 12)


def test_arc_paper_setting_vit_b16_visual_is_96432():
    cfg = ArcConfig(rank=50, layers="all", sites="both", towers=("visual",))
    rows = parameter_rows("ViT-B-16", cfg)
    assert sum(r.total for r in rows) == 96_432
    assert all(r.shared == 768 * 50 and r.per_layer == 12 * (50 + 768) for r in rows)


@pytest.mark.parametrize("rank,layers,sites", [(8, "all", "both"), (4, "last:2", "attn"), (3, "1,3", "mlp")])
def test_arc_parameter_count_matches_formula(rank, layers, sites):
    loaded = load_clip(TINY, random_init=True)
    aset = inject(loaded.model, ArcConfig(rank=rank, layers=layers, sites=sites))
    expected = 0
    for _tower, width, depth in (("visual", 128, 4), ("text", 128, 4)):
        n = len(resolve_layers(layers, depth))
        expected += len(aset.config.site_kinds) * (width * rank + n * (rank + width))  # d·r + L·(r + d), DESIGN §3
    assert aset.num_parameters() == expected


def _logits(model, tokenizer, images):
    with torch.no_grad():
        emb = class_embeddings(model, tokenizer, ["cat", "dog", "car"], ["a photo of a {}."])
        return clip_logits(model, images, emb)


def test_identity_at_init_and_gradient_reaches_rescale():
    base = load_clip(TINY, random_init=True, seed=3)
    adapted = load_clip(TINY, random_init=True, seed=3)
    aset = inject(adapted.model, ArcConfig(rank=8, layers="all"))
    images = torch.randn(2, 3, 64, 64)
    assert torch.equal(_logits(base.model, base.tokenizer, images), _logits(adapted.model, adapted.tokenizer, images))

    emb = class_embeddings(adapted.model, adapted.tokenizer, ["cat", "dog", "car"], ["a photo of a {}."])
    loss = torch.nn.functional.cross_entropy(clip_logits(adapted.model, images, emb), torch.tensor([0, 2]))
    loss.backward()
    for key, adapter in aset.adapters.items():
        assert adapter.rescale.grad is not None and adapter.rescale.grad.abs().sum() > 0, key
        assert adapter.bias.grad.abs().sum() > 0, key
    frozen = [n for n, p in adapted.model.named_parameters() if not n.startswith("adapters.")]
    assert frozen and all(
        not p.requires_grad and p.grad is None for n, p in adapted.model.named_parameters() if n in frozen
    )


def test_xavier_mlp_lambda_option_is_not_identity():
    cfg = ArcConfig(rank=8, layers="all", mlp_lambda_init="xavier")
    loaded = load_clip(TINY, random_init=True)
    aset = inject(loaded.model, cfg)
    assert aset.adapters["visual_mlp"].rescale.abs().sum() > 0
    assert aset.adapters["visual_attn"].rescale.abs().sum() == 0


def test_registry_knows_arc_and_rejects_unknown():
    assert get("arc").config_cls is ArcConfig
    with pytest.raises(RingfoldError, match="unknown adapter method"):
        get("lora-nope")


def test_registry_holds_the_table_and_never_imports_a_method():
    """PEFT's shape: the methods register themselves when imported; the registry imports none (no circle)."""
    import ast
    from pathlib import Path

    from ringfold.trainer.adapters import registry
    from ringfold.trainer.config import CONFIGS

    tree = ast.parse(Path(registry.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not imported & {"arc", "adaring", "mma"}
    # importing the package registered every method: the table is full before any lookup
    assert sorted(registry._METHODS) == sorted(CONFIGS) == registry.names()


def test_text_embeddings_match_open_clip_zero_shot_classifier():
    import open_clip

    loaded = load_clip(TINY, random_init=True)
    names, templates = ["cat", "dog", "red car"], ["a photo of a {}.", "a drawing of a {}."]
    ours = class_embeddings(loaded.model, loaded.tokenizer, names, templates)
    ref = open_clip.build_zero_shot_classifier(loaded.model, loaded.tokenizer, names, templates)
    assert torch.allclose(ours.detach(), ref.t(), atol=1e-6)
