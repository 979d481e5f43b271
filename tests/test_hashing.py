"""sha256_file and hashed_once: a finished bundle's files are hashed once, and only inside that scope."""

from __future__ import annotations

import hashlib
import os

from ringfold.atomic import hashed_once, sha256_file


def _rewrite_keeping_stat(path, data: bytes) -> None:
    """Change the content in place while keeping size and mtime (what a memo keyed on stat could miss)."""
    st = path.stat()
    with open(path, "r+b") as fh:
        fh.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_outside_the_scope_every_call_hashes(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"a" * 100)
    assert sha256_file(path) == hashlib.sha256(b"a" * 100).hexdigest()
    _rewrite_keeping_stat(path, b"b")
    assert sha256_file(path) == hashlib.sha256(b"b" + b"a" * 99).hexdigest()


def test_before_start_nothing_is_remembered(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"a" * 100)
    with hashed_once():
        sha256_file(path)
        _rewrite_keeping_stat(path, b"b")
        assert sha256_file(path) == hashlib.sha256(b"b" + b"a" * 99).hexdigest()


def test_after_start_a_file_is_hashed_once_and_a_rewrite_is_hashed_again(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"a" * 100)
    first = hashlib.sha256(b"a" * 100).hexdigest()
    with hashed_once() as final:
        final.start()
        assert sha256_file(path) == first
        _rewrite_keeping_stat(path, b"b")
        assert sha256_file(path) == first  # remembered: same inode, size and mtime
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # what any write does to mtime
        assert sha256_file(path) == hashlib.sha256(b"b" + b"a" * 99).hexdigest()
    _rewrite_keeping_stat(path, b"c")
    assert sha256_file(path) == hashlib.sha256(b"c" + b"a" * 99).hexdigest()  # the scope is gone
