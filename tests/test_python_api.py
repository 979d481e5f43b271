"""The supported Python API: what ``ringfold.runtime`` exports, and docs/python-api.md's example, run as written."""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import subprocess
import sys
from pathlib import Path

import ringfold.runtime as runtime

DOC = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"


def _example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 1, "python-api.md holds one example"
    return blocks[0]


def test_the_documented_example_runs_on_a_bundle(tiny_bundle, demo_data):
    code = _example()
    placeholders = 'BUNDLE, IMAGES = "my_bundle", "photos"'
    assert placeholders in code
    code = code.replace(placeholders, f"BUNDLE, IMAGES = {str(tiny_bundle)!r}, {str(demo_data / 'test')!r}")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(DOC), "exec"), {"__name__": "python_api_example"})
    lines = out.getvalue().splitlines()
    images = sorted(p.name for p in (demo_data / "test").rglob("*.png"))
    assert sorted(line.split()[0] for line in lines[: len(images)]) == images
    assert lines[len(images)].startswith("parity passed on ")
    assert [line.split(":")[0] for line in lines[len(images) + 1 :]] == ["batch 1", "batch 4"]


def test_every_public_name_is_importable_and_documented():
    documented = DOC.read_text()
    for name in runtime.__all__:
        assert getattr(runtime, name) is not None
        assert f"`{name}" in documented, f"{name} is exported but docs/python-api.md does not name it"
    assert set(runtime.__all__) == set(runtime._API)
    assert sorted(runtime.__all__) == runtime.__all__


def test_the_api_names_the_modules_that_define_them():
    for name, module in runtime._API.items():
        assert getattr(importlib.import_module(module), name) is getattr(runtime, name), name


def test_importing_a_runtime_module_does_not_load_the_whole_api():
    """The names are imported on first use: a runtime module imported for one rule (the CLI's value checks)
    does not load the backends, parity or bench."""
    code = (
        "import sys, ringfold.runtime.base.limits\n"
        "print(sorted(m for m in sys.modules if m.startswith('ringfold.runtime.') and '.base' not in m))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_an_unknown_name_is_an_attribute_error():
    try:
        runtime.classify_paths  # noqa: B018 (gone: iter_predictions is the API)
    except AttributeError as exc:
        assert "classify_paths" in str(exc)
    else:
        raise AssertionError("ringfold.runtime.classify_paths exists")
