"""Find an open_clip pretrained tag's checkpoint: the local cache first, the network only when it answers.

open_clip hands a tag to the Hugging Face hub client, which on a machine
without network retries each candidate file five times with back-off: a
minute of "Retrying in 8s" lines before any error. Workstations behind
firewalls and air-gapped labs are where ringfold is used, so the order here
is: a cached file (no network at all); ``HF_HUB_OFFLINE`` set → one line at
once; the download host not answering a TCP connect within a few seconds →
one line; only then the real download, with the hub's retry chatter kept
out of the terminal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from urllib.parse import urlparse

from ringfold.errors import RingfoldError

#: open_clip's default file name inside a hub repository, and its safetensors twin
HF_WEIGHTS_NAME = "open_clip_pytorch_model.bin"
HF_SAFE_WEIGHTS_NAME = "open_clip_model.safetensors"
#: seconds to wait for the download host before calling the machine offline
CONNECT_TIMEOUT_S = 3.0


def hub_file(cfg: dict) -> tuple[str, str] | None:
    """(repository id, file name) of a tag hosted on the hub, or None for URL-hosted tags."""
    entry = cfg.get("hf_hub", "")
    if not entry:
        return None
    repo_id, filename = os.path.split(entry)  # "org/model/" means the default file name
    return repo_id, filename or HF_WEIGHTS_NAME


def candidate_files(filename: str) -> list[str]:
    """The files open_clip would fetch for ``filename``, in its order: a safetensors twin first."""
    names = []
    if filename == HF_WEIGHTS_NAME:
        names.append(HF_SAFE_WEIGHTS_NAME)
    elif filename.endswith((".bin", ".pth")):
        names.append(filename[:-4] + ".safetensors")
    return [*names, filename]


def cached_checkpoint(cfg: dict, cache_dir: str | None = None) -> str | None:
    """The checkpoint for this tag already on disk, looked up without touching the network."""
    hub = hub_file(cfg)
    if hub is not None:
        from huggingface_hub import try_to_load_from_cache

        repo_id, filename = hub
        for name in candidate_files(filename):
            found = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir)
            if isinstance(found, str) and os.path.isfile(found):
                return found
        return None
    url = cfg.get("url", "")
    if url:
        path = os.path.join(cache_dir or os.path.expanduser("~/.cache/clip"), os.path.basename(url))
        return path if os.path.isfile(path) else None
    return None


def download_host(cfg: dict) -> str:
    """The URL whose host a download of this tag would contact."""
    if hub_file(cfg) is not None:
        from huggingface_hub import constants

        return constants.ENDPOINT
    return cfg.get("url", "")


def unreachable_reason(url: str, timeout: float = CONNECT_TIMEOUT_S) -> str | None:
    """Why ``url``'s host cannot be reached (DNS or TCP connect), or None when it answers."""
    parsed = urlparse(url)
    host = parsed.hostname
    if not host:
        return f"no host in {url!r}"
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except socket.gaierror:
        return f"cannot resolve {host}"
    except OSError as exc:
        return f"cannot connect to {host}:{port} ({exc.strerror or type(exc).__name__})"


@contextlib.contextmanager
def _quiet_hub() -> Iterator[None]:
    """Keep the hub client's per-retry warnings off the terminal; its errors still surface as exceptions."""
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub_logger.setLevel(level)


def fetch_pretrained(model_name: str, tag: str, cfg: dict, cache_dir: str | None = None) -> str:
    """Local path of the tag's checkpoint; one-line :class:`RingfoldError` when it is neither cached nor reachable."""
    found = cached_checkpoint(cfg, cache_dir)
    if found:
        return found
    fix = (
        "download it on a machine with network (it lands in the Hugging Face cache; copy that cache here, "
        "or set HF_HOME to it) or pass --pretrained path/to/checkpoint.safetensors"
    )
    if hub_file(cfg) is not None and os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise RingfoldError(f"{model_name}/{tag}: weights are not in the local cache and HF_HUB_OFFLINE is set; {fix}")
    host = download_host(cfg)
    reason = unreachable_reason(host)
    if reason:
        raise RingfoldError(f"{model_name}/{tag}: weights are not in the local cache and {reason}; {fix}")
    from open_clip.pretrained import download_pretrained

    try:
        with _quiet_hub():
            path = download_pretrained(cfg, cache_dir=cache_dir)
    except Exception as exc:  # network and hub errors come in many types
        detail = " ".join(str(exc).split())[:160]
        raise RingfoldError(
            f"{model_name}/{tag}: download from {host} failed ({type(exc).__name__}: {detail}); {fix}"
        ) from None
    if not path or not os.path.isfile(path):
        raise RingfoldError(f"{model_name}/{tag}: open_clip returned no checkpoint file; pass --pretrained PATH")
    return path
