"""Resource caps on images, and `ringfold classify` streaming its results.

A 1,000,000 x 2 PNG is a few hundred bytes, yet resizing its short side to the
model's input makes an image of gigabytes; such files are refused from their
header, before anything is decoded or resized.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ringfold.cli import main
from ringfold.errors import ImageError

CPU = ["--provider", "cpu"]
RLIMIT_AS = 3 << 30  # a classify of a normal image needs well under 1 GiB of address space


def _one_line_error(capsys, *needles: str) -> str:
    """Check stderr is one line holding ``needles``; returns stdout."""
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return captured.out


def _png(path: Path, size: tuple[int, int], mode: str = "RGB") -> Path:
    Image.new(mode, size).save(path)
    return path


def _classify_under_memory_limit(bundle: Path, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    code = (
        "import resource, sys; "
        f"resource.setrlimit(resource.RLIMIT_AS, ({RLIMIT_AS}, {RLIMIT_AS})); "
        "from ringfold.cli import main; "
        "raise SystemExit(main(sys.argv[1:]))"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env = {k: v for k, v in env.items() if not k.startswith("RINGFOLD_MAX_")}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code, "classify", str(bundle), *args, *CPU],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    return proc, time.perf_counter() - start


# ------------------------------------------------------------------------------ (a) the 1,000,000 x 2 PNG


def test_extreme_aspect_png_is_refused_from_its_header_under_a_memory_limit(tiny_bundle, tmp_path):
    good = _png(tmp_path / "good.png", (80, 60))
    proc, _ = _classify_under_memory_limit(tiny_bundle, str(good))
    assert proc.returncode == 0, proc.stderr  # the memory limit itself leaves room for a normal classify
    assert "good.png:" in proc.stdout

    wide = _png(tmp_path / "wide.png", (1_000_000, 2), "L")
    assert wide.stat().st_size < 10_000
    proc, elapsed = _classify_under_memory_limit(tiny_bundle, str(wide))
    err = proc.stderr.strip()
    assert proc.returncode == 2, err
    assert len(err.splitlines()) == 1, err
    assert "wide.png" in err and "aspect" in err and "1000000x2" in err and "RINGFOLD_MAX_IMAGE_ASPECT" in err
    assert proc.stdout == ""
    assert elapsed < 20, f"took {elapsed:.1f}s: was it decoded or resized before being refused?"


# --------------------------------------------------------------------------- (b) the resize cap in preprocess


def _cfg(size, resize_mode="shortest"):
    from ringfold.runtime.pixels.preprocess import PreprocessConfig

    return PreprocessConfig(size=size, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize_mode=resize_mode)


def test_preprocess_refuses_an_oversized_resize_before_allocating(monkeypatch):
    from ringfold.runtime.pixels.preprocess import preprocess_image

    monkeypatch.setenv("RINGFOLD_MAX_RESIZE_PIXELS", "10_000_000")  # 4000x3 at 224 would make 298666x224
    calls = []

    def no_resize(self, *args, **kwargs):
        calls.append(args)
        raise AssertionError("resize was called before the cap was checked")

    monkeypatch.setattr(Image.Image, "resize", no_resize)
    monkeypatch.setattr(Image.Image, "convert", no_resize)
    img = Image.new("RGB", (4000, 3))
    with pytest.raises(ImageError) as info:
        preprocess_image(img, _cfg(224))
    message = str(info.value)
    assert "\n" not in message and "4000x3" in message and "298666x224" in message, message
    assert "RINGFOLD_MAX_RESIZE_PIXELS" in message and not calls


CASES = [
    ((517, 3), 224, "shortest"),
    ((3, 517), 224, "shortest"),
    ((517, 3), (160, 192), "shortest"),
    ((1001, 37), (160, 192), "longest"),
    ((2, 2), 224, "longest"),
    ((640, 480), (160, 192), "squash"),
]


@pytest.mark.parametrize("wh, size, resize_mode", CASES)
def test_resize_cap_uses_the_resize_arithmetic(monkeypatch, wh, size, resize_mode):
    """The size checked against the cap is exactly the size the resize then makes: at the cap it passes."""
    from ringfold.runtime.pixels.preprocess import preprocess_image, resized_size

    cfg = _cfg(size, resize_mode)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (wh[1], wh[0], 3), dtype=np.uint8))
    made = []
    real_resize = Image.Image.resize

    def recording_resize(self, new_size, *args, **kwargs):
        made.append(tuple(new_size))
        return real_resize(self, new_size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", recording_resize)
    new_w, new_h = resized_size(*wh, cfg)
    monkeypatch.setenv("RINGFOLD_MAX_RESIZE_PIXELS", str(new_w * new_h))
    preprocess_image(img, cfg)
    assert made in ([(new_w, new_h)], []), (made, (new_w, new_h))  # [] when already that size
    if new_w * new_h > 1:
        monkeypatch.setenv("RINGFOLD_MAX_RESIZE_PIXELS", str(new_w * new_h - 1))
        with pytest.raises(ImageError):
            preprocess_image(img, cfg)


def test_classify_names_the_file_when_the_resize_cap_refuses_it(tiny_bundle, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RINGFOLD_MAX_RESIZE_PIXELS", "1000")  # the tiny bundle's 64x64 input is 4096
    path = _png(tmp_path / "small.png", (80, 60))
    assert main(["classify", str(tiny_bundle), str(path), *CPU]) == 2
    _one_line_error(capsys, "small.png", "RINGFOLD_MAX_RESIZE_PIXELS")


# ------------------------------------------------------------------------------- (c) results stream per batch


def _images(root: Path, n: int) -> list[Path]:
    root.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = root / f"img{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_iter_predictions_yields_a_batch_before_decoding_the_next(tiny_bundle, tmp_path, monkeypatch):
    import ringfold.runtime.infer.classify as classify_mod
    from ringfold.runtime.backends.registry import open_model
    from ringfold.runtime.bundle.loader import load_bundle

    paths = _images(tmp_path / "imgs", 20)
    decoded = []
    real_load = classify_mod.load_image

    def recording_load(path):
        decoded.append(Path(path))
        return real_load(path)

    monkeypatch.setattr(classify_mod, "load_image", recording_load)
    bundle = load_bundle(tiny_bundle)
    model = open_model(bundle, "fp32", "onnxruntime", "cpu", None)
    preds = classify_mod.iter_predictions(bundle, model, [tmp_path / "imgs"], batch=8)
    assert decoded == []  # nothing decoded until asked for
    first = next(preds)
    assert first.path == paths[0] and len(decoded) == 8
    rest = list(preds)
    assert [p.path for p in [first, *rest]] == paths and len(decoded) == 20
    again = list(classify_mod.iter_predictions(bundle, model, paths[:3], top_k=2))
    assert again[2].labels == rest[1].labels[:2]


def test_classify_prints_each_batch_before_an_interrupt(tiny_bundle, tmp_path, capsys, monkeypatch):
    import ringfold.runtime.infer.classify as classify_mod

    paths = _images(tmp_path / "imgs", 12)
    calls = []
    real_load = classify_mod.load_image

    def interrupt_on_tenth(path):
        calls.append(path)
        if len(calls) == 10:
            raise KeyboardInterrupt
        return real_load(path)

    monkeypatch.setattr(classify_mod, "load_image", interrupt_on_tenth)
    assert main(["classify", str(tiny_bundle), str(tmp_path / "imgs"), "--json", *CPU]) == 130
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["path"] for r in rows] == [str(p) for p in paths[:8]]


def test_skip_bad_streams_and_still_exits_2(tiny_bundle, tmp_path, capsys):
    good = _images(tmp_path / "imgs", 3)
    wide = _png(tmp_path / "imgs" / "wide.png", (1000, 2))
    assert main(["classify", str(tiny_bundle), str(good[0]), str(wide), *map(str, good[1:]), "--skip-bad", *CPU]) == 2
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [str(good[0]), str(wide), str(good[1]), str(good[2])]
    assert "ERROR" in lines[1] and "aspect" in lines[1]


# ------------------------------------------------------------------------------------ (d) no images at all


@pytest.mark.parametrize("content", [[], ["notes.txt", ".hidden.png"]])
def test_folder_without_images_is_an_error(tiny_bundle, tmp_path, capsys, content):
    folder = tmp_path / "nothing_here"
    folder.mkdir()
    for name in content:
        (folder / name).write_text("x")
    assert main(["classify", str(tiny_bundle), str(folder), *CPU]) == 2
    assert _one_line_error(capsys, "nothing_here", "no image files", ".png", ".jpg") == ""


# ---------------------------------------------------------------------------------------------- (e) --top-k


def test_top_k_above_the_class_count_is_an_error_and_the_default_fits(tiny_bundle, tmp_path, capsys):
    path = _png(tmp_path / "img.png", (80, 60))
    assert main(["classify", str(tiny_bundle), str(path), "--top-k", "10", *CPU]) == 2
    _one_line_error(capsys, "--top-k 10", "4", "classes")

    assert main(["classify", str(tiny_bundle), str(path), str(path), "--json", *CPU]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(rows) == 2 and all(len(r["top"]) == 4 for r in rows)

    assert main(["classify", str(tiny_bundle), str(path), "--json", "--top-k", "4", *CPU]) == 0
    assert len(json.loads(capsys.readouterr().out)["top"]) == 4


# ---------------------------------------------------------------------------------- (f) environment overrides


def test_aspect_cap_is_raised_by_its_environment_variable(tiny_bundle, tmp_path, capsys, monkeypatch):
    path = _png(tmp_path / "strip.png", (400, 4))  # 100:1
    assert main(["classify", str(tiny_bundle), str(path), *CPU]) == 2
    _one_line_error(capsys, "strip.png", "400x4", "aspect 100:1", "64:1", "RINGFOLD_MAX_IMAGE_ASPECT")

    monkeypatch.setenv("RINGFOLD_MAX_IMAGE_ASPECT", "100")
    assert main(["classify", str(tiny_bundle), str(path), "--json", *CPU]) == 0
    assert "top" in json.loads(capsys.readouterr().out)


def test_pixel_cap_is_set_by_its_environment_variable(tiny_bundle, tmp_path, capsys, monkeypatch):

    path = _png(tmp_path / "img.png", (80, 60))
    monkeypatch.setenv("RINGFOLD_MAX_IMAGE_PIXELS", "4000")
    assert main(["classify", str(tiny_bundle), str(path), *CPU]) == 2
    _one_line_error(capsys, "img.png", "4800 pixels", "4000-pixel", "RINGFOLD_MAX_IMAGE_PIXELS")


@pytest.mark.parametrize("skip_bad", [False, True])
def test_malformed_cap_variable_is_a_one_line_error(tiny_bundle, tmp_path, capsys, monkeypatch, skip_bad):
    path = _png(tmp_path / "img.png", (80, 60))
    monkeypatch.setenv("RINGFOLD_MAX_IMAGE_ASPECT", "lots")
    extra = ["--skip-bad"] if skip_bad else []
    assert main(["classify", str(tiny_bundle), str(path), *extra, *CPU]) == 2
    out = _one_line_error(capsys, "RINGFOLD_MAX_IMAGE_ASPECT", "lots")
    assert out == ""  # not an error row per image: the setting is wrong, not the file
