"""The runtime-only install (numpy, Pillow, ONNX Runtime): commands that need more say so in one line, exit 2.

torch is hidden the way a Jetson without it would see it (an import that
fails); CI's device job (.ci/device.sh) proves the same with a real wheel
in a venv that has no torch at all.
"""

from __future__ import annotations

import sys

import pytest

from ringfold.cli import main
from ringfold.extras import EXTRA_MODULES, MODULE_EXTRA, WHEEL, missing_module, optional_module
from tests.helpers import one_line_error

TORCH_COMMANDS = {
    "params": (["params", "--model", "ringfold-tiny-vit"], "train"),
    "train": (["train", "--model", "ringfold-tiny-vit", "--random-init", "--data", "D", "--out", "O"], "train"),
    "evaluate": (["evaluate", "RUN", "--data", "D"], "train"),
    "compress": (["compress", "RUN", "--ranks", "4", "--out", "O"], "train"),
    "export": (["export", "RUN", "--out", "O"], "export"),
    "demo": (["demo", "--out", "O"], "export"),
    "parity": (["parity", "BUNDLE", "--run", "RUN"], "train"),
}


@pytest.mark.parametrize("command", sorted(TORCH_COMMANDS))
def test_torch_commands_name_the_extra(command, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails, as on a device
    argv, extra = TORCH_COMMANDS[command]
    assert main(argv) == 2
    line = one_line_error(capsys)
    assert f"`ringfold {command}` needs torch, which is not installed: build the wheel on the workstation" in line
    assert "`pip wheel --no-deps -w dist .` in the ringfold checkout), copy it here" in line
    assert f"then `pip install 'dist/{WHEEL}[{extra}]'`" in line and "'ringfold[" not in line
    assert "NVIDIA's PyTorch wheel for your JetPack" in line and "without it ringfold runs classify" in line
    assert list(tmp_path.iterdir()) == []  # refused before any work


def test_check_without_onnx_names_the_small_package(tiny_bundle, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert main(["check", str(tiny_bundle)]) == 2
    line = one_line_error(capsys)
    assert "`pip install onnx`, or ringfold's [check] extra" in line and f"pip install 'dist/{WHEEL}[check]'" in line


def test_runtime_commands_need_no_torch(tiny_bundle, demo_data, monkeypatch, capsys, tmp_path):
    """classify and the stored-reference parity run with torch unimportable."""
    monkeypatch.setitem(sys.modules, "torch", None)
    assert main(["classify", str(tiny_bundle), str(demo_data / "test"), "--top-k", "1"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == sum(1 for p in (demo_data / "test").rglob("*.png"))
    assert main(["parity", str(tiny_bundle), "--report", str(tmp_path / "parity")]) == 0
    assert (tmp_path / "parity" / "parity.json").is_file()


def test_unexpected_missing_module_keeps_its_traceback(monkeypatch):
    """Only ringfold's optional packages become a one-line hint; anything else is a bug and must show."""

    def broken(path, verify=True):
        raise ModuleNotFoundError("No module named 'not_ours'", name="not_ours")

    monkeypatch.setattr("ringfold.cli.classify.load_bundle", broken)
    with pytest.raises(ModuleNotFoundError, match="not_ours"):
        main(["classify", "B", "x.png"])


def test_optional_module_table():
    assert optional_module(ModuleNotFoundError(name="torch.nn")) == "torch"
    assert optional_module(ModuleNotFoundError(name="polygraphy.backend")) == "polygraphy"
    assert optional_module(ModuleNotFoundError(name="yaml")) is None
    assert missing_module(("sys", "no_such_module_xyz")) == "no_such_module_xyz"
    # every module an extra promises maps back to an extra that brings it
    for modules in EXTRA_MODULES.values():
        assert all(m in MODULE_EXTRA for m in modules)
