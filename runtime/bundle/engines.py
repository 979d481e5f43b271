"""The bundle's ``engines/`` folder: the one module that reads and writes its format.

A serialized TensorRT engine only runs on the TensorRT version and GPU it was built with, so
ringfold names every engine by its :class:`EngineKey` (the ONNX file's sha256, the TensorRT
version, the GPU name and compute capability, the precision, the batch profile), and records
the key and the engine's sha256 twice: in a sidecar ``<engine>.json`` beside it, and in
``engines/index.json``, the folder's table of contents. Every reader lists engines through
:func:`list_engines` (the index, each entry's sidecar read and confined to the bundle); every
writer goes through :func:`record_engine`. Nothing here imports TensorRT: whether an engine fits
this machine is the TensorRT backend's question (:mod:`ringfold.runtime.backends.tensorrt.engines`).
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from ringfold.atomic import sha256_file, write_json
from ringfold.errors import RingfoldError
from ringfold.ownership import read_record, record_files
from ringfold.runtime.base.fields import Fields, confined, read_json, relative_member_problem
from ringfold.runtime.base.limits import limits

from .precisions import ENGINE_PRECISIONS

ENGINE_DIR = "engines"
INDEX_FILE = "index.json"
INDEX_FORMAT = "ringfold-engines"
#: the INT8 calibration cache ``build-engine --calibrator`` writes beside the engines
CALIBRATION_CACHE = "calibration.cache"
ENGINE_FIX = "rebuild it with `ringfold build-engine BUNDLE`"


def parse_version(text: str) -> tuple[int, ...]:
    """(major, minor, patch) of a version string such as TensorRT's ``10.3.0.26``."""
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def slug(text: str) -> str:
    """``text`` as lower-case letters, digits and dashes (a GPU name in an engine's file name)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


@dataclass(frozen=True)
class EngineKey:
    onnx_sha256: str
    trt_version: str
    device: str
    compute_capability: str
    precision: str
    batch: tuple[int, int, int]  # min, opt, max

    def file_name(self) -> str:
        """``model-fp16-trt10.3-orin-sm87-b1-8-16-<sha12>.engine``; without the GPU part when ``device`` is empty.

        A key without a device only names an engine a user builds elsewhere (``--print-trtexec`` on a
        machine that cannot see the target GPU); ``--register`` renames it once the GPU is known.
        """
        major_minor = ".".join(str(v) for v in parse_version(self.trt_version)[:2])
        b = "-".join(str(x) for x in self.batch)
        gpu = f"-{slug(self.device)}-sm{self.compute_capability.replace('.', '')}" if self.device else ""
        return f"model-{self.precision}-trt{major_minor}{gpu}-b{b}-{self.onnx_sha256[:12]}.engine"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["batch"] = list(self.batch)
        return d

    @classmethod
    def parse(cls, f: Fields) -> EngineKey:
        """A key from an engine sidecar or index entry, every field type-checked."""
        batch = f.raw("batch")
        if not isinstance(batch, list) or len(batch) != 3:
            raise f.fail("must be [min, opt, max]", "batch")
        lo, opt, hi = (f.check_integer(b, f"batch[{i}]", 1, 1 << 16) for i, b in enumerate(batch))
        if not lo <= opt <= hi:
            raise f.fail(f"is {batch}, needs min <= opt <= max", "batch")
        capability = f.string("compute_capability", max_len=16)
        if not re.fullmatch(r"\d+\.\d+", capability):
            raise f.fail(f"is {capability!r}, not MAJOR.MINOR", "compute_capability")
        return cls(
            onnx_sha256=f.sha256(f.raw("onnx_sha256"), "onnx_sha256"),
            trt_version=f.string("trt_version", max_len=64),
            device=f.string("device", max_len=256),
            compute_capability=capability,
            precision=f.string("precision", choices=ENGINE_PRECISIONS),
            batch=(lo, opt, hi),
        )


@dataclass(frozen=True)
class EngineEntry:
    """One engine the index lists, with its sidecar's record: key and the engine's sha256 at build time."""

    path: Path
    sidecar: Path
    key: EngineKey
    sha256: str


def engine_dir(bundle_path: Path) -> Path:
    """``BUNDLE/engines``, refused when it (a symlink) leads out of the bundle."""
    if confined(bundle_path, ENGINE_DIR) is None:
        raise RingfoldError(f"{bundle_path / ENGINE_DIR}: resolves outside the bundle (symlink?); remove the link")
    return bundle_path / ENGINE_DIR


def sidecar(engine_path: Path) -> Path:
    return engine_path.with_suffix(".json")


def read_sidecar(meta: Path) -> tuple[EngineKey, str]:
    """(key, engine sha256) recorded when the engine was built."""
    f = Fields(read_json(meta, ENGINE_FIX, limits().max_json_bytes), meta, ENGINE_FIX)
    return EngineKey.parse(f.section("key")), f.sha256(f.raw("sha256"), "sha256")


def read_index(index_path: Path) -> dict[str, dict]:
    """engines/index.json: engine file name -> its key and sha256, each entry type-checked."""
    f = Fields(read_json(index_path, ENGINE_FIX, limits().max_json_bytes), index_path, ENGINE_FIX)
    engines = f.section("engines")
    for name in engines.data:
        if relative_member_problem(name) or "/" in name or not name.endswith(".engine"):
            raise engines.fail("must name .engine files inside engines/", name)
        entry = engines.section(name)
        EngineKey.parse(entry)
        entry.sha256(entry.raw("sha256"), "sha256")
    return dict(engines.data)


def list_engines(bundle_path: Path) -> tuple[list[EngineEntry], list[str]]:
    """The engines ``engines/index.json`` lists, by file name, each with its sidecar's key and sha256.

    Returns (entries, notes): an engine or sidecar the index lists but the folder lacks is left out
    with a note; one that resolves outside the bundle (a symlink) is refused. No index: no engines.
    """
    directory = engine_dir(bundle_path)
    index = directory / INDEX_FILE
    if not index.is_file():
        return [], []
    entries, notes = [], []
    for file_name in sorted(read_index(index)):
        path = confined(bundle_path, f"{ENGINE_DIR}/{file_name}")
        meta = confined(bundle_path, f"{ENGINE_DIR}/{sidecar(Path(file_name)).name}")
        if path is None or meta is None:
            raise RingfoldError(f"{directory / file_name}: resolves outside the bundle (symlink?); {ENGINE_FIX}")
        if not path.is_file() or not meta.is_file():
            notes.append(f"{path}: listed in {INDEX_FILE} but it or its sidecar is missing")
            continue
        key, digest = read_sidecar(meta)
        entries.append(EngineEntry(path, meta, key, digest))
    return entries, notes


def record_engine(engine_path: Path, key: EngineKey, extra: dict | None = None) -> None:
    """Write the engine's key and sha256 next to it and into the bundle's engines/index.json."""
    digest = sha256_file(engine_path)
    write_json(sidecar(engine_path), {"key": key.to_dict(), "sha256": digest, **(extra or {})})
    index_path = engine_path.parent / INDEX_FILE
    engines = dict(read_index(index_path)) if index_path.is_file() else {}
    engines[engine_path.name] = {**key.to_dict(), "sha256": digest}
    write_json(index_path, {"format": INDEX_FORMAT, "engines": engines})
    record_files(engine_path.parent, "ringfold build-engine", [engine_path.name, sidecar(engine_path).name, INDEX_FILE])


def check_engine_slot(engine_path: Path) -> None:
    """Before a build: what ``record_engine`` will replace in engines/ (this engine, its sidecar, the index)
    must be absent or ringfold's, unchanged — an engine or index someone else put there is never overwritten."""
    directory = engine_path.parent
    recorded = None
    for path in (engine_path, sidecar(engine_path), directory / INDEX_FILE):
        if not os.path.lexists(path):
            continue
        if recorded is None:
            try:
                recorded = read_record(directory)
            except RingfoldError:
                recorded = {}
        if path.is_symlink() or sha256_file(path) not in recorded.get(path.name, set()):
            raise RingfoldError(
                f"{path}: not written by ringfold build-engine (or changed since); ringfold never replaces it — "
                "move it out of engines/ and build again"
            )
