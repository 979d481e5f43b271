"""Bad input: each case gets a one-line error naming the file and the fix, exit code 2, and nothing written."""

import io
import json
import os
import pickle
import shutil

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file, save_file

from ringfold.cli import main
from tests.helpers import no_hang, one_line_error

TINY = ["--model", "ringfold-tiny-vit", "--random-init", "--quiet", "--epochs", "0", "--shots", "2"]


def _png_bytes(img):
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------------------- image files
BAD_IMAGES = {
    "zero_byte.jpg": b"",
    "not_an_image.png": b"hello, I am text",
    "truncated.png": _png_bytes(
        Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    )[:2000],  # of ~12 KB
    "one_pixel.png": _png_bytes(Image.new("RGB", (1, 1))),
}


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_bad_image_file_is_refused_in_one_line(tiny_bundle, tmp_path, capsys, name):
    path = tmp_path / name
    path.write_bytes(BAD_IMAGES[name])
    assert main(["classify", str(tiny_bundle), str(path), "--provider", "cpu"]) == 2
    one_line_error(capsys, name)


def test_decompression_bomb_is_refused_quickly(tiny_bundle, tmp_path, capsys):
    path = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(path)  # a few KB on disk, 400 Mpx decoded
    assert main(["classify", str(tiny_bundle), str(path), "--provider", "cpu"]) == 2
    one_line_error(capsys, "bomb.png")


def _unusual_images(tmp_path):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (70, 90, 3), dtype=np.uint8))
    cmyk = tmp_path / "cmyk.jpg"
    rgb.convert("CMYK").save(cmyk)
    sixteen = tmp_path / "sixteen.png"
    Image.fromarray((np.arange(70 * 90).reshape(70, 90) * 10).astype(np.uint16)).save(sixteen)
    palette = tmp_path / "palette.png"
    pal = rgb.convert("P")
    pal.info["transparency"] = 0
    pal.save(palette, transparency=0)
    gif = tmp_path / "animated.gif"
    frames = [rgb.convert("P"), Image.new("RGB", (90, 70), (255, 0, 0)).convert("P")]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return [cmyk, sixteen, palette, gif]


def test_unusual_but_valid_images_are_classified_not_refused(tiny_bundle, tmp_path, capsys):
    paths = _unusual_images(tmp_path)
    assert main(["classify", str(tiny_bundle), *map(str, paths), "--json", "--provider", "cpu"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["path"] for r in rows] == [str(p) for p in paths] and all("top" in r for r in rows)


def test_skip_bad_reports_each_and_goes_on(tiny_bundle, tmp_path, capsys):
    good = tmp_path / "good.png"
    Image.new("RGB", (80, 80), (0, 0, 255)).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"")
    assert main(["classify", str(tiny_bundle), str(bad), str(good), "--skip-bad", "--provider", "cpu"]) == 2
    out = capsys.readouterr().out
    assert "bad.jpg: ERROR" in out and "good.png:" in out


@pytest.mark.parametrize("kind", ["fifo", "symlink to a fifo"])
def test_named_pipe_among_images_is_refused_not_read(tiny_bundle, tmp_path, capsys, kind):
    """Reading a FIFO blocks until a writer comes: classify (and every image reader) must name it instead."""
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (80, 80), (0, 0, 255)).save(folder / "a_good.png")
    pipe = folder / "b_pipe.jpg"
    if kind == "fifo":
        os.mkfifo(pipe)
    else:
        os.mkfifo(tmp_path / "elsewhere")
        pipe.symlink_to(tmp_path / "elsewhere")
    with no_hang(30):  # a read of the pipe would block forever: fail instead
        assert main(["classify", str(tiny_bundle), str(folder), "--provider", "cpu"]) == 2
        one_line_error(capsys, f"{pipe}: is a named pipe (FIFO), not a regular file")
        assert main(["classify", str(tiny_bundle), str(folder), "--skip-bad", "--provider", "cpu"]) == 2
    out = capsys.readouterr().out
    assert "b_pipe.jpg: ERROR" in out and "a_good.png:" in out


# -------------------------------------------------------------------------------------------- datasets
def _tree(root, counts):
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (32, 32), (i * 20, 0, 0)).save(root / cls / f"{i}.png")


@pytest.mark.parametrize("counts,needle", [({"cat": 3, "dog": 0}, "empty class"), ({"cat": 3}, "one class")])
def test_dataset_problems(tmp_path, capsys, counts, needle):
    data = tmp_path / "data"
    _tree(data, counts)
    out = tmp_path / "run"
    assert main(["train", *TINY, "--data", str(data), "--out", str(out)]) == 2
    one_line_error(capsys, needle)
    assert not out.exists()


def test_split_json_with_missing_files(tmp_path, capsys):
    split = tmp_path / "split_zhou_X.json"
    entries = [["a/1.png", 0, "a"], ["b/1.png", 1, "b"]]
    split.write_text(json.dumps({"train": entries, "val": [], "test": entries}))
    out = tmp_path / "run"
    assert main(["train", *TINY, "--data", str(split), "--out", str(out)]) == 2
    one_line_error(capsys, "missing", "1.png")
    assert not out.exists()


# ------------------------------------------------------------------------------------- checkpoints/runs
def _copy_run(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    return run


def test_adapter_checkpoint_with_wrong_shapes(tiny_run, tmp_path, capsys):
    run = _copy_run(tiny_run, tmp_path)
    tensors = load_file(str(run / "adapters.safetensors"))
    key = next(k for k in tensors if k.endswith("down"))
    tensors[key] = tensors[key][:, :3].contiguous()
    save_file(tensors, str(run / "adapters.safetensors"))
    out = tmp_path / "bundle"
    assert main(["export", str(run), "--out", str(out), "--quiet"]) == 2
    one_line_error(capsys, "adapters.safetensors", "shape")
    assert not out.exists() and not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_adapter_checkpoint_for_another_model_config(tiny_run, tmp_path, capsys):
    run = _copy_run(tiny_run, tmp_path)
    record = json.loads((run / "run.json").read_text())
    record["model"]["name"] = "ViT-B-32"
    record["model"]["weights_fingerprint"] = ""
    (run / "run.json").write_text(json.dumps(record))
    assert main(["export", str(run), "--out", str(tmp_path / "bundle"), "--quiet"]) == 2
    one_line_error(capsys, "adapters.safetensors")
    assert not (tmp_path / "bundle").exists()


def test_nan_in_adapter_weights(tiny_run, tmp_path, capsys):
    run = _copy_run(tiny_run, tmp_path)
    tensors = load_file(str(run / "adapters.safetensors"))
    key = next(iter(tensors))
    tensors[key][0] = float("nan")
    save_file(tensors, str(run / "adapters.safetensors"))
    assert main(["export", str(run), "--out", str(tmp_path / "bundle"), "--quiet"]) == 2
    one_line_error(capsys, "NaN/Inf", "adapters.safetensors")
    assert not (tmp_path / "bundle").exists()


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/ringfold_bad_input_pwned",))


def test_pickle_bearing_checkpoint_is_refused(demo_data, tmp_path, capsys):
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"state_dict": _Evil()}))
    marker = "/tmp/ringfold_bad_input_pwned"
    if os.path.exists(marker):
        os.remove(marker)
    args = [
        "train",
        "--model",
        "ringfold-tiny-vit",
        "--pretrained",
        str(evil),
        "--data",
        str(demo_data),
        "--out",
        str(tmp_path / "run"),
        "--quiet",
    ]
    assert main(args) == 2
    one_line_error(capsys, "evil.pt", "pickled code is refused")
    assert not os.path.exists(marker) and not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------ bundles
def _copy_bundle(tiny_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    return bundle


def test_bundle_with_a_modified_file(tiny_bundle, tmp_path, capsys):
    bundle = _copy_bundle(tiny_bundle, tmp_path)
    with open(bundle / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    assert main(["parity", str(bundle), "--provider", "cpu", "--report", str(tmp_path / "r")]) == 2
    one_line_error(capsys, "model.onnx", "sha256")
    assert not (tmp_path / "r").exists()


def test_bundle_missing_a_file(tiny_bundle, tmp_path, capsys):
    bundle = _copy_bundle(tiny_bundle, tmp_path)
    (bundle / "preprocess.json").unlink()
    assert main(["classify", str(bundle), str(bundle / "reference" / "images" / "000.png")]) == 2
    one_line_error(capsys, "preprocess.json", "missing")


def test_manifest_from_a_newer_ringfold(tiny_bundle, tmp_path, capsys):
    bundle = _copy_bundle(tiny_bundle, tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["format_version"] = 99
    manifest["ringfold_version"] = "9.0.0"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert main(["classify", str(bundle), str(bundle / "reference" / "images" / "000.png")]) == 2
    one_line_error(capsys, "newer ringfold", "upgrade")


def test_interrupted_export_leaves_no_bundle(tiny_run, tmp_path, monkeypatch):
    import ringfold.exporter.export as export_mod

    def explode(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export_mod, "export_onnx", explode)
    with pytest.raises(KeyboardInterrupt):
        export_mod.export_run(tiny_run, tmp_path / "bundle", progress=False)
    assert list(tmp_path.iterdir()) == []  # no bundle, no half-written temporary either
