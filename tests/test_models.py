import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from ringfold.errors import RingfoldError
from ringfold.trainer.models import load_clip

TINY = "ringfold-tiny-vit"


def test_random_init_is_reproducible_and_labelled():
    a = load_clip(TINY, random_init=True, seed=5)
    b = load_clip(TINY, random_init=True, seed=5)
    c = load_clip(TINY, random_init=True, seed=6)
    assert a.weights_fingerprint == b.weights_fingerprint != c.weights_fingerprint
    assert a.source.describe() == "random weights (seed 5)"
    assert all(not p.requires_grad for p in a.model.parameters())


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_local_checkpoint_loads_same_weights(tmp_path, suffix):
    src = load_clip(TINY, random_init=True, seed=9)
    state = {k: v.contiguous() for k, v in src.model.state_dict().items()}
    path = tmp_path / f"ckpt{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    loaded = load_clip(TINY, str(path))
    assert loaded.weights_fingerprint == src.weights_fingerprint
    assert loaded.source.kind == "file" and len(loaded.source.sha256) == 64


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/ringfold_pwned",))


def test_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"state_dict": _Evil()}, fh)
    if os.path.exists("/tmp/ringfold_pwned"):
        os.remove("/tmp/ringfold_pwned")
    with pytest.raises(RingfoldError, match="pickled code is refused"):
        load_clip(TINY, str(path))
    assert not os.path.exists("/tmp/ringfold_pwned")


def test_checkpoint_for_another_config_is_refused(tmp_path):
    other = load_clip("ViT-B-32", random_init=True)
    path = tmp_path / "vitb32.safetensors"
    save_file({k: v.contiguous() for k, v in other.model.state_dict().items()}, str(path))
    with pytest.raises(RingfoldError, match="does not match model config"):
        load_clip(TINY, str(path))


def test_pretrained_tag_without_cache_or_network_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RingfoldError) as info:
        load_clip("ViT-B-16", "openai", cache_dir=str(tmp_path))
    msg = str(info.value)
    assert "not in the local cache and HF_HUB_OFFLINE is set" in msg and "--pretrained path/to" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("bad", ["no-such-tag", "missing/file.safetensors"])
def test_unknown_tag_or_missing_file(bad):
    with pytest.raises(RingfoldError):
        load_clip(TINY, bad)


def test_unknown_model_and_both_sources():
    with pytest.raises(RingfoldError, match="not an open_clip model config"):
        load_clip("ViT-Q-99", random_init=True)
    with pytest.raises(RingfoldError, match="exactly one"):
        load_clip(TINY, "openai", random_init=True)


def test_preprocess_is_typed_and_open_clip_transform_is_open_clips_own(tiny_run):
    """The run record carries the runtime's PreprocessConfig; the reference transform is open_clip's, from it."""
    import dataclasses

    import numpy as np
    from open_clip.model import get_model_preprocess_cfg
    from open_clip.transform import PreprocessCfg, image_transform_v2
    from PIL import Image

    from ringfold.runtime.pixels.preprocess import PreprocessConfig
    from ringfold.trainer.models import openclip_transform
    from ringfold.trainer.run import read_run

    loaded = load_clip(TINY, random_init=True)
    assert isinstance(loaded.preprocess, PreprocessConfig) and loaded.preprocess.size == (64, 64)
    record = read_run(tiny_run)
    assert record.preprocess == loaded.preprocess
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 70, 3), dtype=np.uint8))
    theirs = image_transform_v2(PreprocessCfg(**get_model_preprocess_cfg(loaded.model)), is_train=False)(img)
    for given in (record.preprocess, dataclasses.asdict(record.preprocess), record.preprocess.to_dict()):
        assert (openclip_transform(given)(img) == theirs).all()


def test_model_errors_name_fields_and_the_cli_names_flags(tmp_path, capsys):
    """The library speaks of fields (model, pretrained); the CLI maps them to the flags the user typed."""
    from ringfold.cli import main
    from ringfold.errors import FieldError

    with pytest.raises(FieldError) as err:
        load_clip("ViT-Q-99", random_init=True)
    assert err.value.field == "model" and str(err.value).startswith("field model 'ViT-Q-99' is not")
    with pytest.raises(FieldError) as err:
        load_clip(TINY, str(tmp_path / "missing.safetensors"))
    assert err.value.field == "pretrained" and "checkpoint file not found" in str(err.value)
    argv = ["train", "--model", TINY, "--pretrained", "no-such-tag", "--data", str(tmp_path)]
    assert main([*argv, "--out", str(tmp_path / "r")]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("ringfold train: error: --pretrained: 'no-such-tag' is neither a file nor an open_clip tag")
    assert not (tmp_path / "r").exists()
