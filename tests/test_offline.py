"""--pretrained TAG on a machine without network or cache: one line within seconds, no hub retry noise."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ringfold.errors import RingfoldError
from ringfold.trainer import pretrained as P

HUB_CFG = {"hf_hub": "laion/CLIP-ViT-B-32-laion2B-s34B-b79K/"}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def _no_download(*args, **kwargs):
    raise AssertionError("a download was attempted")


def test_hub_file_and_candidates():
    assert P.hub_file(HUB_CFG) == ("laion/CLIP-ViT-B-32-laion2B-s34B-b79K", P.HF_WEIGHTS_NAME)
    assert P.hub_file({"hf_hub": "timm/vit/open_clip_pytorch_model.bin"}) == ("timm/vit", P.HF_WEIGHTS_NAME)
    assert P.hub_file({"url": "https://x/y.pt"}) is None
    assert P.candidate_files(P.HF_WEIGHTS_NAME) == [P.HF_SAFE_WEIGHTS_NAME, P.HF_WEIGHTS_NAME]
    assert P.candidate_files("w.pth") == ["w.safetensors", "w.pth"]
    assert P.candidate_files("w.safetensors") == ["w.safetensors"]


def test_cached_checkpoint_found_without_network(tmp_path, monkeypatch):
    repo = tmp_path / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / P.HF_SAFE_WEIGHTS_NAME).write_bytes(b"weights")
    monkeypatch.setattr(P, "unreachable_reason", _no_download)
    monkeypatch.setattr("open_clip.pretrained.download_pretrained", _no_download)
    found = P.fetch_pretrained("ViT-B-32", "laion2b_s34b_b79k", HUB_CFG, cache_dir=str(tmp_path))
    assert Path(found).read_bytes() == b"weights"


def test_url_tag_cache(tmp_path):
    cfg = {"url": "https://openaipublic.azureedge.net/clip/models/abc/ViT-B-32.pt"}
    assert P.cached_checkpoint(cfg, str(tmp_path)) is None
    (tmp_path / "ViT-B-32.pt").write_bytes(b"x")
    assert P.cached_checkpoint(cfg, str(tmp_path)) == str(tmp_path / "ViT-B-32.pt")


def test_hub_offline_env_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(P, "unreachable_reason", _no_download)
    monkeypatch.setattr("open_clip.pretrained.download_pretrained", _no_download)
    with pytest.raises(RingfoldError, match="not in the local cache and HF_HUB_OFFLINE is set; download it"):
        P.fetch_pretrained("ViT-B-32", "laion2b_s34b_b79k", HUB_CFG, cache_dir=str(tmp_path))


def test_unreachable_host_fails_without_download(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setattr("open_clip.pretrained.download_pretrained", _no_download)
    t0 = time.perf_counter()
    with pytest.raises(RingfoldError, match=r"cannot connect to 127\.0\.0\.1:\d+ \(Connection refused\)") as err:
        P.fetch_pretrained("ViT-B-32", "laion2b_s34b_b79k", HUB_CFG, cache_dir=str(tmp_path))
    assert time.perf_counter() - t0 < P.CONNECT_TIMEOUT_S
    assert "\n" not in str(err.value) and "--pretrained path/to/checkpoint.safetensors" in str(err.value)


def test_unresolvable_host_is_named():
    assert P.unreachable_reason("https://no-such-host.invalid/x", timeout=2) == "cannot resolve no-such-host.invalid"
    assert P.unreachable_reason("not a url") == "no host in 'not a url'"


def test_cli_offline_tag_is_one_line_within_seconds(tmp_path, demo_data):
    """End to end, as a user meets it: the whole command (imports included) ends within seconds, exit 2."""
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}")
    args = ["train", "--model", "ViT-B-32", "--pretrained", "laion2b_s34b_b79k", "--data", str(demo_data)]
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "ringfold", *args, "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "not in the local cache and cannot connect to 127.0.0.1" in lines[0], proc.stderr
    assert "Retry" not in proc.stderr + proc.stdout
    assert elapsed < 30, f"{elapsed:.1f} s"  # imports dominate (~5 s on 2 cores); the hub's retries took ~53 s
    assert not (tmp_path / "run").exists()
