"""A tamper toolkit: copy a bundle, rewrite what an attacker (or a broken copy) would, re-hash.

Re-hashing matters: a tampered bundle whose manifest hashes still match is what an attacker
would ship, so every check below the sha256 layer must hold on its own.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def copy_bundle(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def read_manifest(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / "manifest.json").read_text())


def write_manifest(bundle: Path, manifest: dict[str, Any]) -> None:
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def rehash(bundle: Path, manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """Recompute the sha256 of every listed file that exists, as an attacker would."""
    manifest = manifest or read_manifest(bundle)
    for rel in manifest["files"]:
        path = bundle / rel
        if path.is_file():
            manifest["files"][rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    write_manifest(bundle, manifest)
    return manifest


def edit_manifest(bundle: Path, edit: Callable[[dict[str, Any]], Any], hash_files: bool = True) -> None:
    manifest = read_manifest(bundle)
    edit(manifest)
    if hash_files:
        rehash(bundle, manifest)
    else:
        write_manifest(bundle, manifest)


def write_json_file(bundle: Path, rel: str, value: Any) -> None:
    (bundle / rel).write_text(json.dumps(value))
    rehash(bundle)


def read_reference(bundle: Path) -> dict[str, np.ndarray]:
    with np.load(bundle / "reference" / "reference.npz", allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def write_reference(bundle: Path, arrays: dict[str, np.ndarray]) -> None:
    np.savez(bundle / "reference" / "reference.npz", **arrays)
    rehash(bundle)


def write_reference_members(bundle: Path, members: dict[str, bytes]) -> None:
    """Raw .npy members (e.g. a header that lies about its shape)."""
    with zipfile.ZipFile(bundle / "reference" / "reference.npz", "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    rehash(bundle)


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def lying_npy(shape: tuple[int, ...], dtype: str = "<f4", payload: bytes = b"\0" * 64) -> bytes:
    """A .npy whose header declares ``shape`` but which holds only ``payload``."""
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    text = repr(header).encode("latin1")
    pad = 64 - (10 + len(text) + 1) % 64
    text += b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + payload
