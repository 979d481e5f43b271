"""OpenVINO's compiled-model cache, keyed and verified the way ringfold keeps TensorRT engines; off unless asked for.

OpenVINO's ``CACHE_DIR`` stores compiled blobs under its own hash and imports any blob it finds there
without a signature. ringfold never lets it read a cache it cannot account for:

- the cache lives outside the bundle (a folder inside it is refused: a bundle is data from elsewhere, and a
  blob shipped with it would run unchecked);
- each compiled configuration gets its own folder named by :func:`cache_key` — the ONNX file's sha256 from
  the verified manifest, the OpenVINO version, the CPU model and flags, the inference precision, the batch
  and the thread count — so a blob is never reused across any of them;
- right after OpenVINO writes a folder's blobs, :func:`record` stores each blob's sha256 in
  ``ringfold-cache.json``; :func:`check_folder` refuses (one line) a folder whose files differ from that
  record before OpenVINO is pointed at it. Like the engines' sidecars, this catches a stale, corrupted or
  swapped cache, not a writer who can also rewrite the record: keep the folder as private as the Python
  environment.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ringfold.atomic import sha256_file, write_json
from ringfold.errors import RingfoldError

RECORD = "ringfold-cache.json"
FORMAT = "ringfold-openvino-cache"


def cpu_identity() -> str:
    """The CPU model name and flags (from /proc/cpuinfo), or "" where there is none."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    wanted = [line for line in lines if line.startswith(("model name", "flags"))][:2]
    return "\n".join(wanted)


def cache_key(
    onnx_sha256: str, openvino_version: str, hint: str, batch: int | None, threads: int | None, streams: int = 1
) -> str:
    """The folder name of one compiled configuration: a sha256 over everything a blob depends on."""
    parts = [onnx_sha256, openvino_version, cpu_identity(), hint, str(batch), str(threads)]
    if streams != 1:  # a throughput-streams compile (the latency key is unchanged)
        parts.append(f"streams={streams}")
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def cache_folder(root: str | Path, bundle_path: Path, key: str) -> Path:
    """``root/key``, once ``root`` is outside the bundle; a cache inside a bundle is refused in one line."""
    root = Path(root).resolve()
    inside = bundle_path.resolve()
    if root == inside or inside in root.parents:
        raise RingfoldError(
            f"OpenVINO cache {root}: inside the bundle {bundle_path}; a bundle's compiled blobs are never "
            "trusted — pass a cache folder outside it"
        )
    return root / key


def _blobs(folder: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != RECORD}


def check_folder(folder: Path) -> bool:
    """True when ``folder`` holds blobs recorded by :func:`record`, unchanged; False when it is new or empty.

    A folder with blobs but no record, or blobs that differ from it, is refused in one line.
    """
    if not folder.is_dir() or not any(folder.iterdir()):
        return False
    fix = f"delete {folder} and ringfold recompiles it"
    try:
        data = json.loads((folder / RECORD).read_text(encoding="utf-8"))
        recorded = data["blobs"] if data.get("format") == FORMAT else None
    except (OSError, ValueError, KeyError, AttributeError):
        recorded = None
    if not isinstance(recorded, dict):
        raise RingfoldError(f"OpenVINO cache {folder}: no ringfold record of its blobs; {fix}")
    if _blobs(folder) != recorded:
        raise RingfoldError(f"OpenVINO cache {folder}: its blobs differ from ringfold's record; {fix}")
    return True


def record(folder: Path) -> None:
    """Store the sha256 of every blob OpenVINO just wrote into ``folder``."""
    write_json(folder / RECORD, {"format": FORMAT, "blobs": _blobs(folder)})
