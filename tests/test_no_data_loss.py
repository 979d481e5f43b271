"""Exports and the demo never delete what ringfold did not write; interrupted or racing writers leave
nothing behind; files get the user's umask; I/O failures are one line and read-only bundles still work."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ringfold.atomic import _DirectoryLock, atomic_directory
from ringfold.cli import main
from tests.helpers import one_line_error


def _export(run, out, *extra) -> int:
    return main(["export", str(run), "--out", str(out), "--quiet", "--ref-count", "2", *extra])


# ---------------------------------------------------------------------------------------- --overwrite
def test_overwrite_never_deletes_a_folder_that_is_not_a_bundle(tiny_run, tmp_path, capsys):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("three years of work")
    assert _export(tiny_run, out, "--overwrite") == 2
    one_line_error(capsys, "thesis", "ringfold did not write it", "only replaces what it wrote")
    assert (out / "chapter1.tex").read_text() == "three years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis"]  # no .partial, no lock left


def test_overwrite_keeps_a_bundle_holding_a_user_file(tiny_bundle, tiny_run, tmp_path, capsys):
    out = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, out)
    (out / "notes.txt").write_text("mine")
    assert _export(tiny_run, out, "--overwrite") == 2
    one_line_error(capsys, "notes.txt", "did not write")
    assert (out / "notes.txt").read_text() == "mine"


def _built_engine(bundle):
    from ringfold.runtime.bundle.engines import EngineKey, record_engine

    key = EngineKey("a" * 64, "10.3.0", "Orin", "8.7", "fp16", (1, 8, 16))
    engine = bundle / "engines" / key.file_name()
    engine.parent.mkdir()
    engine.write_bytes(b"engine")
    record_engine(engine, key)
    return engine


def test_overwrite_replaces_a_ringfold_bundle_with_its_engines(tiny_bundle, tiny_run, tmp_path):
    out = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, out)
    _built_engine(out)
    before = (out / "manifest.json").stat().st_mtime_ns
    assert _export(tiny_run, out, "--overwrite") == 0
    assert (out / "manifest.json").stat().st_mtime_ns != before and not (out / "engines").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_overwrite_keeps_a_bundle_with_an_unlisted_engine(tiny_bundle, tiny_run, tmp_path, capsys):
    out = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, out)
    _built_engine(out)
    (out / "engines" / "hand_tuned.engine").write_bytes(b"a week of tuning")
    assert _export(tiny_run, out, "--overwrite") == 2
    one_line_error(capsys, "hand_tuned.engine", "did not write")
    assert (out / "engines" / "hand_tuned.engine").is_file()


def test_symlink_at_out_is_not_followed_or_replaced(tiny_bundle, tiny_run, tmp_path, capsys):
    real = tmp_path / "real"
    shutil.copytree(tiny_bundle, real)
    link = tmp_path / "link"
    link.symlink_to(real)
    assert _export(tiny_run, link, "--overwrite") == 2
    one_line_error(capsys, "symlink")
    assert link.is_symlink() and (real / "manifest.json").is_file()


# --------------------------------------------------------------------------------------------- demo
def test_demo_refuses_a_folder_that_is_not_a_demo(tmp_path, capsys):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"precious")
    assert main(["demo", "--out", str(out), "--quiet", "--overwrite"]) == 2
    one_line_error(capsys, "photos", "ringfold did not write it", "only replaces what it wrote")
    assert sorted(p.name for p in out.iterdir()) == ["holiday.jpg"]


def test_demo_over_an_earlier_demo_needs_overwrite_and_keeps_a_user_file(tmp_path, capsys, monkeypatch):
    """The demo folder follows the one ownership rule: --overwrite, and nothing of the user's in it."""
    import ringfold.demo as demo
    from ringfold.ownership import RECORD_FILE

    monkeypatch.setattr(demo, "_run_demo", lambda out, epochs, quiet: demo._generate_data(out / "data") and 0)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quiet"]) == 0
    assert main(["demo", "--out", str(out), "--quiet"]) == 2
    one_line_error(capsys, "demo", "already exists", "--overwrite")
    assert main(["demo", "--out", str(out), "--quiet", "--overwrite"]) == 0
    (out / "data" / "my_notes.txt").write_text("keep me")
    assert main(["demo", "--out", str(out), "--quiet", "--overwrite"]) == 2
    one_line_error(capsys, "data/ holds my_notes.txt, which ringfold did not write")
    assert (out / "data" / "my_notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in out.iterdir()) == [RECORD_FILE, "data"]


# ------------------------------------------------------------------------------------------- races
def test_directory_appearing_at_out_during_export_is_not_replaced(tiny_run, tmp_path, capsys, monkeypatch):
    import ringfold.exporter.export as export_mod

    out = tmp_path / "bundle"
    real_export = export_mod.export_onnx

    def export_and_race(*args, **kwargs):
        out.mkdir()  # another program creates the folder meanwhile (empty: a plain rename would replace it)
        return real_export(*args, **kwargs)

    monkeypatch.setattr(export_mod, "export_onnx", export_and_race)
    assert _export(tiny_run, out) == 2
    one_line_error(capsys, "appeared while writing")
    assert out.is_dir() and list(out.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_second_writer_to_the_same_out_fails_clearly(tiny_run, tmp_path, capsys):
    out = tmp_path / "bundle"
    lock = _DirectoryLock(out)  # an export in progress elsewhere holds it
    try:
        assert _export(tiny_run, out) == 2
        one_line_error(capsys, "another ringfold process is writing it")
    finally:
        lock.release()
    assert not out.exists()
    assert _export(tiny_run, out) == 0  # the lock dies with its holder


def _spawn_export(run: Path, out: Path) -> subprocess.Popen:
    code = "import sys; from ringfold.cli import main; sys.exit(main(sys.argv[1:]))"
    args = ["export", str(run), "--out", str(out), "--quiet", "--ref-count", "2"]
    return subprocess.Popen([sys.executable, "-c", code, *args], stderr=subprocess.PIPE, text=True)


def _wait_for_partial(parent: Path, proc: subprocess.Popen, timeout: float = 120) -> Path:
    end = time.time() + timeout
    while time.time() < end:
        found = [p for p in parent.glob(".*.partial") if any(p.iterdir())]
        if found:
            return found[0]
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.02)
    raise AssertionError("no .partial folder appeared")


@pytest.mark.slow
def test_two_concurrent_exports_one_wins_one_fails_clearly(tiny_run, tmp_path):
    out = tmp_path / "bundle"
    procs = [_spawn_export(tiny_run, out) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2).strip().splitlines()
    assert len(loser) == 1 and ("another ringfold process" in loser[0] or "already exists" in loser[0]), loser
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


@pytest.mark.slow
def test_sigterm_cleans_up_like_ctrl_c(tiny_run, tmp_path):
    out = tmp_path / "bundle"
    proc = _spawn_export(tiny_run, out)
    _wait_for_partial(tmp_path, proc)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=120)
    err = proc.stderr.read().strip().splitlines()
    assert code == 143 and "terminated" in err[-1], err
    assert list(tmp_path.iterdir()) == []  # no bundle, no .partial, no lock


@pytest.mark.slow
def test_sigkill_leftover_partial_is_removed_by_the_next_export(tiny_run, tmp_path):
    out = tmp_path / "bundle"
    proc = _spawn_export(tiny_run, out)
    partial = _wait_for_partial(tmp_path, proc)
    proc.kill()
    proc.wait(timeout=60)
    assert partial.exists()  # SIGKILL cannot be cleaned up after…
    bystander = tmp_path / ".bundle.mine.partial"  # …but only what ringfold recorded is removed later
    bystander.mkdir()
    assert _export(tiny_run, out) == 0
    assert not partial.exists() and bystander.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".bundle.mine.partial", "bundle"]


def test_atomic_directory_cleans_up_on_exception(tmp_path):
    with pytest.raises(ValueError), atomic_directory(tmp_path / "x") as tmp:
        (tmp / "f").write_text("half")
        raise ValueError
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ file modes
def _modes(root: Path) -> set[tuple[str, int]]:
    return {("d" if p.is_dir() else "f", stat.S_IMODE(p.stat().st_mode)) for p in [root, *root.rglob("*")]}


@pytest.mark.parametrize("umask,file_mode,dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_bundle_and_run_follow_the_umask(tiny_run, tmp_path, umask, file_mode, dir_mode):
    from ringfold.trainer.run import read_run, save_run

    old = os.umask(umask)
    try:
        assert _export(tiny_run, tmp_path / "bundle") == 0
        record = read_run(tiny_run)
        from ringfold.trainer.run import load_adapted_model

        _, _, adapters = load_adapted_model(tiny_run)
        save_run(tmp_path / "run", record, adapters)
    finally:
        os.umask(old)
    for root in (tmp_path / "bundle", tmp_path / "run"):
        assert _modes(root) == {("f", file_mode), ("d", dir_mode)}, (root, _modes(root))


# --------------------------------------------------------------------------------------- read-only / I/O
def _unshare_works() -> bool:
    if sys.platform != "linux" or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    return probe.returncode == 0


needs_mount_ns = pytest.mark.skipif(
    not _unshare_works(), reason="needs `unshare -rm` (Linux user + mount namespaces) to mount read-only/full disks"
)


def _in_namespace(setup: str, argv: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    """Run the CLI in a private mount namespace after ``setup`` (mount commands) ran there."""
    code = "import sys; from ringfold.cli import main; sys.exit(main(sys.argv[1:]))"
    script = f'{setup} && exec "$0" "$@"'
    cmd = ["unshare", "-rm", "sh", "-c", script, sys.executable, "-c", code, *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _ro(path: Path) -> str:
    return f"mount --bind {path} {path} && mount -o remount,bind,ro {path}"


@needs_mount_ns
@pytest.mark.slow
def test_parity_and_bench_work_on_a_read_only_bundle(tiny_bundle, tmp_path):
    bundle = tmp_path / "ro" / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    before = sorted(str(p) for p in bundle.rglob("*"))
    parity = _in_namespace(_ro(bundle), ["parity", str(bundle), "--provider", "cpu"])
    assert parity.returncode == 0, parity.stderr
    assert (tmp_path / "ro" / "bundle.parity" / "parity.json").is_file()
    bench = _in_namespace(_ro(bundle), ["bench", str(bundle), "--runs", "2", "--warmup", "0", "--batch-sizes", "1"])
    assert bench.returncode == 0, bench.stderr
    assert (tmp_path / "ro" / "bundle.bench" / "bench.json").is_file()
    assert sorted(str(p) for p in bundle.rglob("*")) == before


@needs_mount_ns
@pytest.mark.slow
def test_report_beside_a_read_only_bundle_says_which_flag_to_pass(tiny_bundle, tmp_path):
    parent = tmp_path / "ro"
    shutil.copytree(tiny_bundle, parent / "bundle")
    result = _in_namespace(_ro(parent), ["parity", str(parent / "bundle"), "--provider", "cpu"])
    err = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(err) == 1, result.stderr
    assert "read-only file system" in err[0] and "--report" in err[0] and "bundle.parity" in err[0]


@needs_mount_ns
@pytest.mark.slow
def test_disk_full_during_export_is_one_line_and_leaves_nothing(tiny_run, tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    result = _in_namespace(
        f"mount -t tmpfs -o size=64k tmpfs {full}",
        ["export", str(tiny_run), "--out", str(full / "bundle"), "--quiet", "--ref-count", "2"],
    )
    err = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(err) == 1, result.stderr
    assert "no space left" in err[0] and str(full) in err[0]


def test_unwritable_out_is_one_line(tiny_run, tmp_path, capsys, monkeypatch):
    import errno

    import ringfold.atomic as atomic_mod

    def refuse(*_args, **_kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "locked"))

    monkeypatch.setattr(atomic_mod.tempfile, "mkdtemp", refuse)
    assert _export(tiny_run, tmp_path / "locked" / "bundle") == 2
    one_line_error(capsys, "locked", "permission denied")
