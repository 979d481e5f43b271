"""Whole-or-nothing file output.

A killed process must never leave a half-written artifact that a later step
would load, so every writer goes through a temporary sibling and an
``os.replace`` (atomic on POSIX within one file system).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .errors import RingfoldError


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _naming(target: Path) -> Iterator[None]:
    """Give an OSError raised without a file name (a failed write(): disk full, quota) the target's name."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror, os.fspath(target)) from exc
        raise


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; move it into place only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with _naming(target):
            yield tmp_path
        apply_umask(tmp_path)  # after the block: some writers (safetensors) recreate the file owner-only
        os.replace(tmp_path, target)
        _fsync_dir(target.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def write_text(target: str | os.PathLike, text: str) -> None:
    write_bytes(target, text.encode("utf-8"))


def write_json(target: str | os.PathLike, obj: Any) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask has no getter)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: Path, directory: bool = False) -> None:
    """Give a mkstemp/mkdtemp result (owner-only by design) the modes a plain open/mkdir would have had,
    so a device's service account can read what ringfold writes."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst`` only if ``dst`` does not exist, atomically where the OS allows.

    A plain rename silently replaces an empty directory that appeared at ``dst``; Linux's
    renameat2(RENAME_NOREPLACE) refuses instead. Elsewhere: check, then rename.
    """
    import ctypes
    import errno

    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None:
        at_fdcwd, rename_noreplace_flag = -100, 1
        if renameat2(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), rename_noreplace_flag) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(err, os.strerror(err), os.fspath(dst))
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fspath(dst))
    os.rename(src, dst)


class _DirectoryLock:
    """An exclusive, non-blocking lock on ``.NAME.lock`` beside a target; released by the OS if we die.

    The lock file also records the temporary folder being built, so the next writer to this
    target can remove a ``.partial`` left by a SIGKILL, knowing ringfold made it.
    """

    def __init__(self, target: Path) -> None:
        import fcntl

        self.path = target.with_name(f".{target.name}.lock")
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RingfoldError(
                    f"{target}: another ringfold process is writing it right now; wait for it or choose another --out"
                ) from None
            # the holder before us may have unlinked the file after we opened it: lock the live one
            if os.path.exists(self.path) and os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                break
            os.close(fd)
        self.fd = fd

    def previous_partial(self) -> str | None:
        os.lseek(self.fd, 0, os.SEEK_SET)
        text = os.read(self.fd, 4096).decode("utf-8", "replace").strip()
        return text or None

    def record_partial(self, name: str) -> None:
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)
        os.write(self.fd, name.encode())
        os.fsync(self.fd)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self.fd)


def _remove_recorded_partial(target: Path, lock: _DirectoryLock) -> None:
    name = lock.previous_partial()
    if name and "/" not in name and name.startswith(f".{target.name}.") and name.endswith(".partial"):
        leftover = target.with_name(name)
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(
    target: str | os.PathLike,
    overwrite: bool = False,
    replaceable: Callable[[Path], str | None] | None = None,
) -> Iterator[Path]:
    """Build a directory in a temporary sibling and move it into place at the end.

    Readers see either the old directory, nothing, or the complete new one. With
    ``overwrite``, an existing ``target`` is replaced only when ``replaceable(target)``
    returns None (its reason otherwise): ringfold never deletes a folder it did not write.
    The final move never replaces a directory that appeared meanwhile, and one writer per
    target holds a lock, so two concurrent writers cannot both win.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = _DirectoryLock(target)
    tmp: Path | None = None
    try:
        _remove_recorded_partial(target, lock)
        existed = os.path.lexists(target)
        identity = None
        if existed:
            if not overwrite:
                raise RingfoldError(f"{target}: already exists; pass --overwrite or choose another --out")
            reason = "is a symlink" if target.is_symlink() or not target.is_dir() else None
            reason = reason or (replaceable(target) if replaceable else "is not a folder ringfold wrote")
            if reason:
                raise RingfoldError(
                    f"{target}: {reason}; ringfold only replaces what it wrote — choose another --out "
                    "or move it away yourself"
                )
            identity = os.stat(target).st_ino
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
        apply_umask(tmp, directory=True)
        lock.record_partial(tmp.name)
        with _naming(target):
            yield tmp
        if existed:
            if not target.is_dir() or os.stat(target).st_ino != identity:
                raise RingfoldError(f"{target}: changed while writing; left it as it is, nothing was written")
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.rename(target, old)  # onto the empty placeholder
            try:
                rename_noreplace(tmp, target)
            except OSError:
                os.rename(old, target)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                rename_noreplace(tmp, target)
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                raise RingfoldError(
                    f"{target}: appeared while writing; left it as it is, nothing was written — choose another --out"
                ) from None
        _fsync_dir(target.parent)
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        lock.release()


class FinalFiles:
    """While started, a file is hashed once per (device, inode, size, mtime): see :func:`hashed_once`."""

    def __init__(self) -> None:
        self.started = False
        self.digests: dict[tuple[int, int, int, int], str] = {}

    def start(self) -> None:
        """From here on the files being written are final: the manifest, the verify pass and the
        ownership record each ask for the same digests (a ViT-B/16 bundle is ~1 GB: ~0.6 s a pass)."""
        self.started = True


_FINAL: FinalFiles | None = None


@contextlib.contextmanager
def hashed_once() -> Iterator[FinalFiles]:
    """A scope in which, once ``start()`` is called, each file's sha256 is computed once.

    Only a writer's own finishing stage uses it, over files it has just written and will not touch again;
    a file rewritten in place gets a new mtime and is hashed again. Outside the scope every call hashes.
    """
    global _FINAL
    previous, _FINAL = _FINAL, FinalFiles()
    try:
        yield _FINAL
    finally:
        _FINAL = previous


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    with open(path, "rb") as fh:
        key = None
        if _FINAL is not None and _FINAL.started:
            st = os.fstat(fh.fileno())
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            if key in _FINAL.digests:
                return _FINAL.digests[key]
        digest = hashlib.sha256()
        while block := fh.read(chunk):
            digest.update(block)
    if key is not None:
        _FINAL.digests[key] = digest.hexdigest()
    return digest.hexdigest()
