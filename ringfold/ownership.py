"""Which files in a folder ringfold wrote: the one rule every command that writes a folder follows.

Every folder ringfold writes (a run, a bundle, its engines, a report, a DeepStream or Triton folder,
the demo) carries ``.ringfold-files.json``: each file ringfold wrote there with its sha256. Writing into
an existing folder needs ``--overwrite`` (``--resume`` for a run), and even then a folder is replaced
only when every file in it is listed with the hash it still has: a file the user added or edited is
never replaced or deleted — the command refuses and names it. A sub-folder carrying its own record
(``engines/`` inside a bundle, the demo's parts) is judged by that record.

Two ways to write, one rule:

* ``owned_directory``: build the folder in a temporary sibling and move it into place whole
  (``atomic_directory``); the record is written last, inside it. Export, compress, relabel, reports,
  DeepStream and Triton folders.
* ``claim_folder``: for commands that fill a folder over a long time and must be resumable (train, the
  demo): check and lock the folder up front, remove only what the record vouches for, and let the caller
  re-record (``write_record``) after each step, so an interrupted run leaves a folder that is recorded
  up to its last finished step and that no reader takes for complete (a run is complete only with
  run.json).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

from .atomic import _DirectoryLock, atomic_directory, sha256_file, write_json
from .errors import RingfoldError

RECORD_FILE = ".ringfold-files.json"
RECORD_FORMAT = "ringfold-files"
#: a record larger than this is not one ringfold wrote (a run or bundle lists a few hundred files)
MAX_RECORD_BYTES = 16 << 20


def read_record(folder: Path) -> dict[str, set[str]]:
    """``folder``'s record: relative path → accepted sha256 values. RingfoldError when absent or damaged."""
    path = folder / RECORD_FILE
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise RingfoldError(f"{folder}: has no {RECORD_FILE}, so ringfold did not write it") from None
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_RECORD_BYTES:
        raise RingfoldError(f"{path}: not a ringfold file record")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
        if data.get("format") != RECORD_FORMAT or not isinstance(data.get("files"), dict):
            raise ValueError
        files = {}
        for rel, digest in data["files"].items():
            digests = digest if isinstance(digest, list) else [digest]
            if not all(isinstance(d, str) and len(d) == 64 for d in digests) or not _safe_rel(rel):
                raise ValueError
            files[rel] = set(digests)
        return files
    except (UnicodeDecodeError, ValueError, AttributeError, TypeError):
        raise RingfoldError(f"{path}: damaged ringfold file record") from None


def _safe_rel(rel: object) -> bool:
    return isinstance(rel, str) and bool(rel) and not rel.startswith("/") and ".." not in Path(rel).parts


def _walk_owned(folder: Path, root: Path) -> Iterator[tuple[str, Path, os.stat_result, bool]]:
    """Every entry below ``folder`` judged by ``root``'s record: (path relative to root, path, lstat, nested).

    A sub-folder with a record of its own is yielded with ``nested`` True and not entered: its record
    judges it.
    """
    with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            path = Path(entry.path)
            info = entry.stat(follow_symlinks=False)
            nested = stat.S_ISDIR(info.st_mode) and os.path.lexists(path / RECORD_FILE)
            yield path.relative_to(root).as_posix(), path, info, nested
            if stat.S_ISDIR(info.st_mode) and not nested:
                yield from _walk_owned(path, root)


def ownership_problem(folder: str | os.PathLike) -> str | None:
    """None when every file under ``folder`` is one ringfold recorded there, unchanged; else why it must stay.

    The reason names the first file the user added or changed, so the refusal can say which.
    """
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        return "is not a folder"
    try:
        record = read_record(folder)
    except RingfoldError as exc:
        return str(exc).split(": ", 1)[1]
    folders = {p for rel in record for p in Path(rel).parents} - {Path(".")}
    for rel, path, info, nested in _walk_owned(folder, folder):
        if nested:
            problem = ownership_problem(path)
            if problem:
                return f"{rel}/ {problem}"
        elif stat.S_ISDIR(info.st_mode):
            if Path(rel) not in folders:
                return f"holds {rel}/, which ringfold did not write"
        elif rel == RECORD_FILE:
            continue
        elif not stat.S_ISREG(info.st_mode):
            return f"holds {rel}, which ringfold did not write (not a regular file)"
        elif rel not in record:
            return f"holds {rel}, which ringfold did not write"
        elif sha256_file(path) not in record[rel]:
            return f"holds {rel}, changed since ringfold wrote it"
    return None


def write_record(folder: str | os.PathLike, command: str) -> None:
    """Record every regular file now under ``folder`` (but sub-folders with their own record) as ringfold's."""
    folder = Path(folder)
    files = {
        rel: sha256_file(path)
        for rel, path, info, _nested in _walk_owned(folder, folder)
        if rel != RECORD_FILE and stat.S_ISREG(info.st_mode)
    }
    write_json(folder / RECORD_FILE, {"format": RECORD_FORMAT, "written_by": command, "files": files})


def record_files(folder: str | os.PathLike, command: str, rels: Sequence[str]) -> None:
    """Add (or re-hash) ``rels`` in ``folder``'s record, keeping what it already lists; creates the record.
    A name in ``rels`` with no regular file behind it is dropped from the record.

    For folders filled step by step: only the files the command itself wrote are vouched for, so a
    file someone else put there is never laundered into the record.
    """
    folder = Path(folder)
    try:
        files = {rel: sorted(digests) for rel, digests in read_record(folder).items()}
    except RingfoldError:
        if (folder / RECORD_FILE).exists():
            raise
        files = {}
    for rel in rels:
        path = folder / rel
        if path.is_file() and not path.is_symlink():
            files[rel] = [sha256_file(path)]
        else:
            files.pop(rel, None)
    write_json(folder / RECORD_FILE, {"format": RECORD_FORMAT, "written_by": command, "files": files})


def refuse_unless_owned(target: Path, flag: str = "--out") -> None:
    """Raise the one-line refusal when ``target`` holds anything ringfold did not write, unchanged."""
    problem = ownership_problem(target)
    if problem:
        raise RingfoldError(
            f"{target}: {problem}; ringfold only replaces what it wrote, unchanged — move that away or choose "
            f"another {flag}"
        )


def check_target(target: str | os.PathLike, overwrite: bool, flag: str = "--out", also: str = "") -> None:
    """Before the long work: ``target`` may be written (absent, or ``overwrite`` and wholly ringfold's)."""
    target = Path(target)
    if not os.path.lexists(target):
        return
    if not overwrite:
        raise RingfoldError(f"{target}: already exists; pass --overwrite to replace it{also}, or choose another {flag}")
    refuse_unless_owned(target, flag)


@contextlib.contextmanager
def owned_directory(
    target: str | os.PathLike, command: str, overwrite: bool = False, flag: str = "--out"
) -> Iterator[Path]:
    """Build ``target`` whole in a temporary sibling (``atomic_directory``) and record its files last.

    An existing ``target`` needs ``overwrite`` and is replaced only when ``ownership_problem`` finds
    nothing of the user's in it.
    """
    target = Path(target)
    check_target(target, overwrite, flag)
    with atomic_directory(target, overwrite=overwrite, replaceable=ownership_problem) as tmp:
        yield tmp
        write_record(tmp, command)


class Claim:
    """A folder held by ``claim_folder``; ``prepare`` empties (on ``--overwrite``) and creates it at the
    first write, so a command refused after the claim (bad data found while loading) leaves it as it was."""

    def __init__(self, target: Path, clear: bool) -> None:
        self.path = target
        self._clear = clear

    def prepare(self) -> Path:
        if self._clear:
            _remove_owned(self.path)
            self._clear = False
        self.path.mkdir(exist_ok=True)
        return self.path


@contextlib.contextmanager
def claim_folder(
    target: str | os.PathLike,
    command: str,
    *,
    overwrite: bool = False,
    resume: bool = False,
    flag: str = "--out",
    also: str = "",
) -> Iterator[Claim]:
    """Hold ``target`` for a command that fills it step by step (train, demo); one holder at a time.

    New or empty: taken. ``resume``: taken as it is (continuing ringfold's own run). ``overwrite``: taken
    when the record vouches for everything in it, which ``Claim.prepare`` removes just before the first
    write; anything else refuses now. The caller records what it wrote with ``record_files`` after each
    step.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = _DirectoryLock(target)
    try:
        clear = not resume and _has_content(target)
        if clear:
            check_target(target, overwrite, flag, also)
        elif target.is_symlink() or (target.exists() and not target.is_dir()):
            raise RingfoldError(f"{target}: is not a folder; choose another {flag}")
        yield Claim(target, clear)
    finally:
        lock.release()


def _has_content(target: Path) -> bool:
    if target.is_symlink() or (os.path.lexists(target) and not target.is_dir()):
        return True
    return target.is_dir() and any(target.iterdir())


def _remove_owned(target: Path) -> None:
    """Empty a folder ``ownership_problem`` has just cleared (all of it is ringfold's, unchanged)."""
    for entry in target.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


OWNED_JSON_KEY = "ringfold_written"


def _content_sha256(obj: dict) -> str:
    import hashlib

    rest = {k: v for k, v in obj.items() if k != OWNED_JSON_KEY}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def check_owned_json(path: str | os.PathLike, command: str, overwrite: bool, flag: str = "--out") -> None:
    """Before the long work: a single JSON result file may be written at ``path``.

    Absent: yes. Present: only with ``overwrite`` and only a file ``command`` wrote whose content still
    hashes to what it recorded in itself (a folder-less output has nowhere else to keep its record).
    """
    path = Path(path)
    if not os.path.lexists(path):
        return
    if not overwrite:
        raise RingfoldError(f"{path}: already exists; pass --overwrite to replace it, or choose another {flag}")
    why = "is not a file ringfold wrote"
    with contextlib.suppress(OSError, ValueError, UnicodeDecodeError):
        info = os.lstat(path)
        if stat.S_ISREG(info.st_mode) and info.st_size <= MAX_RECORD_BYTES:
            obj = json.loads(path.read_bytes().decode("utf-8"))
            mark = obj.get(OWNED_JSON_KEY) if isinstance(obj, dict) else None
            if isinstance(mark, dict) and mark.get("by") == command:
                why = None if mark.get("sha256") == _content_sha256(obj) else "changed since ringfold wrote it"
    if why:
        raise RingfoldError(f"{path}: {why}; ringfold only replaces what it wrote, unchanged — choose another {flag}")


def write_owned_json(path: str | os.PathLike, obj: dict, command: str) -> None:
    """Write ``obj`` atomically with the mark ``check_owned_json`` reads back (who wrote it, its hash)."""
    obj = {k: v for k, v in obj.items() if k != OWNED_JSON_KEY}
    obj[OWNED_JSON_KEY] = {"by": command, "sha256": _content_sha256(obj)}
    write_json(path, obj)


def check_apart(
    target: str | os.PathLike, source: str | os.PathLike, what: str, flag: str = "--out", inside_ok: bool = False
) -> None:
    """``target`` must not be ``source`` (what the command reads) or hold it, nor (unless ``inside_ok``) lie
    inside it.

    Even a folder that is wholly ringfold's must not be replaced by an output made from it: ``export
    RUN --out RUN --overwrite`` would otherwise delete the run it exports, ``parity B --report B`` the
    bundle it checks. A bundle takes nothing inside it either (its files are exactly what its manifest and
    signature list); a run may hold a bundle or a compressed run exported from it (``inside_ok``): that
    folder carries its own ownership record.
    """
    target_real = Path(os.path.realpath(target))
    source_real = Path(os.path.realpath(source))
    inside = source_real in target_real.parents
    if target_real == source_real or target_real in source_real.parents or (inside and not inside_ok):
        raise RingfoldError(f"{target}: is, holds or lies inside the {what} {source}; choose another {flag}")
