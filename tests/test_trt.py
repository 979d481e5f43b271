"""TensorRT: engine identity and refusal logic (no GPU needed), and real builds through Polygraphy (GPU only).

The build plan, the Polygraphy configuration and the trtexec line are tested in test_trt_polygraphy.py.
"""

import json
import shutil
import sys
import types

import numpy as np
import pytest

from ringfold.cli import main
from ringfold.errors import RingfoldError
from ringfold.runtime.backends.tensorrt.engines import check_engine, find_engine
from ringfold.runtime.bundle.engines import EngineKey, record_engine
from tests.trt_stand_ins import FakeEnv


def _engine(tmp_path, env, precision="fp16", sha="a" * 64):
    key = EngineKey(sha, env.trt_version(), env.device_name(), env.compute_capability(), precision, (1, 8, 16))
    path = tmp_path / "engines" / key.file_name()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"serialized engine")
    record_engine(path, key)
    return path, key


def test_engine_name_carries_every_part_of_the_key(tmp_path):
    path, key = _engine(tmp_path, FakeEnv(device="NVIDIA Jetson AGX Orin"))
    assert path.name == "model-fp16-trt10.3-nvidia-jetson-agx-orin-sm87-b1-8-16-aaaaaaaaaaaa.engine"
    index = json.loads((path.parent / "index.json").read_text())
    assert index["engines"][path.name]["compute_capability"] == "8.7"


def test_matching_engine_is_accepted(tmp_path):
    env = FakeEnv()
    path, key = _engine(tmp_path, env)
    assert check_engine(path, env, "a" * 64) == key
    assert find_engine(tmp_path, "fp16", env, "a" * 64) == path


@pytest.mark.parametrize(
    "other,needle",
    [(FakeEnv(version="8.6.2"), "TensorRT 10.3.0"), (FakeEnv(device="RTX 4090", cc="8.9"), "built for Orin")],
)
def test_engine_for_another_version_or_gpu_is_refused_before_deserializing(tmp_path, other, needle):
    path, _ = _engine(tmp_path, FakeEnv())
    with pytest.raises(RingfoldError) as info:
        check_engine(path, other)
    msg = str(info.value)
    assert needle in msg and "rebuild" in msg and "\n" not in msg


def test_engine_from_another_onnx_or_without_sidecar_is_refused(tmp_path):
    env = FakeEnv()
    path, _ = _engine(tmp_path, env)
    with pytest.raises(RingfoldError, match="different ONNX"):
        check_engine(path, env, "b" * 64)
    path.with_suffix(".json").unlink()
    with pytest.raises(RingfoldError, match="rebuild"):
        check_engine(path, env)
    with pytest.raises(RingfoldError, match="no fp16 TensorRT engine"):
        find_engine(tmp_path, "fp16", env, "a" * 64)


def test_engine_modified_after_its_build_is_refused_before_deserializing(tmp_path):
    env = FakeEnv()
    path, _ = _engine(tmp_path, env)
    path.write_bytes(b"serialized engine, patched by someone")
    with pytest.raises(RingfoldError, match="sha256 differs"):
        check_engine(path, env, "a" * 64)
    with pytest.raises(RingfoldError, match="sha256 differs"):
        find_engine(tmp_path, "fp16", env, "a" * 64)


@pytest.mark.parametrize(
    "edit,needle",
    [
        (lambda d: d["key"].__setitem__("batch", [16, 8, 1]), "key.batch"),
        (lambda d: d["key"].__setitem__("batch", "1,8,16"), "key.batch"),
        (lambda d: d["key"].__setitem__("compute_capability", 8.7), "key.compute_capability"),
        (lambda d: d["key"].pop("trt_version"), "key.trt_version"),
        (lambda d: d.__setitem__("sha256", "x"), "sha256"),
        (lambda d: d.pop("key"), "key"),
    ],
)
def test_tampered_engine_sidecar_is_one_line(tmp_path, edit, needle):
    env = FakeEnv()
    path, _ = _engine(tmp_path, env)
    meta = path.with_suffix(".json")
    data = json.loads(meta.read_text())
    edit(data)
    meta.write_text(json.dumps(data))
    with pytest.raises(RingfoldError) as info:
        check_engine(path, env, "a" * 64)
    msg = str(info.value)
    assert needle in msg and meta.name in msg and "\n" not in msg


def test_engine_symlinked_out_of_the_bundle_is_refused(tmp_path):
    env = FakeEnv()
    bundle = tmp_path / "bundle"
    path, _ = _engine(bundle, env)
    outside = tmp_path / "outside.engine"
    shutil.move(path, outside)
    path.symlink_to(outside)
    with pytest.raises(RingfoldError, match="outside the bundle"):
        find_engine(bundle, "fp16", env, "a" * 64)


def test_engines_are_the_ones_the_index_lists_for_every_reader(tmp_path):
    """engines/index.json is the folder's table of contents: an engine and sidecar someone put beside it without
    `build-engine` is no candidate, and a listed engine whose file is gone is a note, not a crash."""
    import hashlib

    from ringfold.runtime.bundle.engines import list_engines

    env = FakeEnv()
    path, key = _engine(tmp_path, env, precision="fp16")
    stray = path.with_name("stray.engine")
    stray.write_bytes(b"an engine copied in by hand")
    sidecar = json.loads(path.with_suffix(".json").read_text())
    sidecar["key"]["precision"] = "int8"
    sidecar["sha256"] = hashlib.sha256(stray.read_bytes()).hexdigest()
    stray.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(RingfoldError, match="no int8 TensorRT engine built yet"):
        find_engine(tmp_path, "int8", env, "a" * 64)
    entries, notes = list_engines(tmp_path)
    assert [(e.path, e.key) for e in entries] == [(path, key)] and notes == []
    path.unlink()
    entries, notes = list_engines(tmp_path)
    assert entries == [] and notes == [f"{path}: listed in index.json but it or its sidecar is missing"]


def test_engine_name_without_a_gpu_leaves_the_gpu_part_out():
    key = EngineKey("a" * 64, "8.6.2", "", "", "fp16", (1, 4, 8))
    assert key.file_name() == "model-fp16-trt8.6-b1-4-8-aaaaaaaaaaaa.engine"


def test_engine_from_any_of_its_possible_onnx_files_is_found(tmp_path):
    env = FakeEnv()
    path, _ = _engine(tmp_path, env, sha="f" * 64)  # e.g. strongly typed, from the fp16 graph
    assert find_engine(tmp_path, "fp16", env, ["a" * 64, "f" * 64]) == path
    with pytest.raises(RingfoldError, match="no fp16 TensorRT engine"):
        find_engine(tmp_path, "fp16", env, ["a" * 64])


def _without(monkeypatch, *modules):
    for name in modules:  # an import of a None entry raises ImportError, even where the package is installed
        monkeypatch.setitem(sys.modules, name, None)


@pytest.mark.parametrize("register", [False, True])
def test_build_engine_without_tensorrt_is_one_line_naming_the_package(
    tiny_bundle, tmp_path, capsys, monkeypatch, register
):
    _without(monkeypatch, "tensorrt")
    engine = tmp_path / "x.engine"
    engine.write_bytes(b"engine")
    tail = ["--register", str(engine)] if register else []
    assert main(["build-engine", str(tiny_bundle), *tail]) == 2
    err = capsys.readouterr().err.strip()
    assert "TensorRT is not installed" in err and "pip install 'dist/ringfold-0.1.0-py3-none-any.whl[tensorrt]'" in err
    assert "JetPack" in err and len(err.splitlines()) == 1


def test_build_engine_without_polygraphy_is_one_line_naming_the_package(tiny_bundle, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.3.0"))
    _without(monkeypatch, "polygraphy", "polygraphy.backend", "polygraphy.backend.trt")
    assert main(["build-engine", str(tiny_bundle)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ringfold build-engine: error: Polygraphy") and len(err.splitlines()) == 1
    assert "pip install 'dist/ringfold-0.1.0-py3-none-any.whl[trt]'" in err and "pip install polygraphy" in err


def test_tensorrt_backend_without_polygraphy_is_one_line(tiny_bundle, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="8.6.2"))
    _without(monkeypatch, "polygraphy", "polygraphy.backend", "polygraphy.backend.trt")
    img = sorted((tiny_bundle / "reference" / "images").glob("*.png"))[0]
    assert main(["classify", str(tiny_bundle), str(img), "--backend", "tensorrt", "--precision", "fp16"]) == 2
    err = capsys.readouterr().err.strip()
    assert "Polygraphy" in err and "pip install" in err and len(err.splitlines()) == 1


def _has_trt_and_cuda() -> str | None:
    """Why the GPU tests cannot run here (None: TensorRT, Polygraphy and a CUDA device are all present)."""
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:  # missing, or the pip stub that only downloads from NVIDIA
        return f"TensorRT is not importable ({type(exc).__name__}: {str(exc)[:80]})"
    try:
        import polygraphy  # noqa: F401
    except ImportError:
        return "polygraphy is not installed (pip install polygraphy)"
    try:
        from ringfold.runtime.backends.tensorrt.engines import LiveTrtEnvironment

        LiveTrtEnvironment().device_name()
    except Exception as exc:  # no CUDA runtime or device
        return f"no usable CUDA device ({exc})"
    return None


_SKIP = _has_trt_and_cuda()
needs_gpu = [
    pytest.mark.trt,
    pytest.mark.skipif(_SKIP is not None, reason=f"needs TensorRT, Polygraphy and a CUDA device: {_SKIP}"),
]


def _gpu(test):
    for mark in reversed(needs_gpu):
        test = mark(test)
    return test


def _copy(bundle, tmp_path):
    out = tmp_path / "b"
    shutil.copytree(bundle, out)
    return out


def _onnx_runtime_outputs(bundle_path, precision="fp32"):
    from ringfold.runtime.backends.onnxruntime.model import open_bundle_model
    from ringfold.runtime.bundle.loader import load_bundle

    bundle = load_bundle(bundle_path)
    pixels = bundle.reference().pixel_values
    return pixels, open_bundle_model(bundle, precision, provider="cpu").run_batched(pixels, 4)


def _cosine(a, b):
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return float(np.min((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


@_gpu
def test_fp16_engine_built_with_polygraphy_matches_onnx_runtime(tiny_bundle, tmp_path, capsys):
    from ringfold.runtime.backends.tensorrt.runner import open_trt_model
    from ringfold.runtime.bundle.loader import load_bundle

    bundle = _copy(tiny_bundle, tmp_path)
    cache = tmp_path / "timing cache.bin"  # a space in the path, as users have
    args = ["build-engine", str(bundle), "--precision", "fp16", "--batch", "1,4,8", "--fp32-layers"]
    assert main([*args, "--timing-cache", str(cache)]) == 0
    out = capsys.readouterr()
    assert "pinned" in out.out and "engine written to" in out.out
    engines = list((bundle / "engines").glob("model-fp16-*.engine"))
    assert len(engines) == 1 and cache.stat().st_size > 0
    sidecar = json.loads(engines[0].with_suffix(".json").read_text())
    assert sidecar["source_kind"] == "fp32" and sidecar["fp32_layers"] is True and sidecar["polygraphy_version"]
    assert not [p for p in (bundle / "engines").iterdir() if p.name.startswith(".")]  # no staging files left

    pixels, reference = _onnx_runtime_outputs(bundle)
    model = open_trt_model(load_bundle(bundle), "fp16")
    assert (model.min_batch, model.max_batch) == (1, 8) and model.backend == "tensorrt"
    assert model.provider.startswith("TensorRT ")
    got = model.run_batched(pixels)
    for name in ("logits", "embedding"):
        assert got[name].dtype == np.float32 and got[name].shape == reference[name].shape
        assert _cosine(got[name], reference[name]) > 0.999, name
    assert np.array_equal(got["logits"].argmax(1), reference["logits"].argmax(1))
    first = model.run(pixels[:2])
    kept = first["logits"].copy()
    model.run(pixels[2:4])  # the runner reuses its output buffers: the earlier result must not change
    assert np.array_equal(first["logits"], kept)
    model.close()

    # a second build reuses the timing cache (and rewrites it whole)
    assert main([*args, "--timing-cache", str(cache)]) == 0


@_gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_build_engine_classify_and_parity_on_gpu(tiny_bundle, tmp_path, precision, capsys):
    bundle = _copy(tiny_bundle, tmp_path)
    args = ["build-engine", str(bundle), "--precision", precision, "--batch", "1,4,8"]
    assert main(args + (["--fp32-layers"] if precision == "fp16" else [])) == 0
    assert list((bundle / "engines").glob(f"model-{precision}-*.engine"))
    gate = ["--min-cosine", "0.999", "--min-top1", "1.0"] if precision == "fp16" else []
    report = ["--report", str(tmp_path / "r")]
    assert main(["parity", str(bundle), "--backend", "tensorrt", "--precision", precision, *report, *gate]) == 0
    img = sorted((bundle / "reference" / "images").glob("*.png"))[0]
    capsys.readouterr()
    assert main(["classify", str(bundle), str(img), "--backend", "tensorrt", "--precision", precision, "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["labels"]  # stdout holds the JSON only, no Polygraphy log


@_gpu
def test_batch_outside_profile_is_refused_on_gpu(tiny_bundle, tmp_path):
    from ringfold.runtime.backends.tensorrt.runner import open_trt_model
    from ringfold.runtime.bundle.loader import load_bundle

    bundle = _copy(tiny_bundle, tmp_path)
    assert main(["build-engine", str(bundle), "--precision", "fp32", "--batch", "2,2,4"]) == 0
    model = open_trt_model(load_bundle(bundle), "fp32")
    with pytest.raises(RingfoldError, match="outside this engine's profile") as info:
        model.run(np.zeros((1, 3, 64, 64), np.float32))
    assert "--batch 1,1,4" in str(info.value)
    with pytest.raises(RingfoldError, match="outside this engine's profile"):
        model.run(np.zeros((5, 3, 64, 64), np.float32))
    assert model.run_batched(np.zeros((8, 3, 64, 64), np.float32))["logits"].shape[0] == 8  # split at max


@_gpu
def test_engine_copied_in_without_sidecar_is_registered_and_used(tiny_bundle, tmp_path, capsys):
    """What a trtexec user does: an engine file with no sidecar, taken in with --register."""
    bundle = _copy(tiny_bundle, tmp_path)
    assert main(["build-engine", str(bundle), "--precision", "fp16", "--batch", "1,2,4"]) == 0
    built = next((bundle / "engines").glob("*.engine"))
    foreign = tmp_path / "from trtexec.engine"
    foreign.write_bytes(built.read_bytes())
    shutil.rmtree(bundle / "engines")
    capsys.readouterr()
    assert main(["build-engine", str(bundle), "--precision", "fp16", "--register", str(foreign)]) == 0
    registered = next((bundle / "engines").glob("*.engine"))
    assert registered.name == built.name  # the same key: batch profile read from the engine, GPU from here
    assert json.loads(registered.with_suffix(".json").read_text())["built_by"].startswith("trtexec")
    img = sorted((bundle / "reference" / "images").glob("*.png"))[0]
    assert main(["classify", str(bundle), str(img), "--backend", "tensorrt", "--precision", "fp16"]) == 0


@_gpu
def test_trtexec_line_builds_an_engine_ringfold_registers(tiny_bundle, tmp_path, capsys):
    import shlex
    import subprocess

    if shutil.which("trtexec") is None:
        pytest.skip("trtexec is not on PATH (on Jetson: /usr/src/tensorrt/bin)")
    bundle = _copy(tiny_bundle, tmp_path)
    assert main(["build-engine", str(bundle), "--precision", "fp16", "--batch", "1,2,4", "--print-trtexec"]) == 0
    out = capsys.readouterr()
    subprocess.run(shlex.split(out.out.strip()), check=True, capture_output=True)
    register = shlex.split(out.err[out.err.index(": ringfold build-engine ") + 2 :])
    assert register[:2] == ["ringfold", "build-engine"] and "--register" in register
    assert main(register[1:]) == 0
    img = sorted((bundle / "reference" / "images").glob("*.png"))[0]
    assert main(["classify", str(bundle), str(img), "--backend", "tensorrt", "--precision", "fp16"]) == 0


@_gpu
def test_strongly_typed_fp32_engine_on_tensorrt_10(tiny_bundle, tmp_path):
    import tensorrt

    from ringfold.runtime.bundle.engines import parse_version

    if parse_version(tensorrt.__version__) < (10,):
        pytest.skip(f"strongly typed networks need TensorRT 10 (this is {tensorrt.__version__})")
    bundle = _copy(tiny_bundle, tmp_path)
    assert main(["build-engine", str(bundle), "--precision", "fp32", "--strongly-typed", "--batch", "1,4,8"]) == 0
    sidecar = json.loads(next((bundle / "engines").glob("*.json")).read_text())
    assert sidecar["strongly_typed"] is True
    pixels, reference = _onnx_runtime_outputs(bundle)
    from ringfold.runtime.backends.tensorrt.runner import open_trt_model
    from ringfold.runtime.bundle.loader import load_bundle

    got = open_trt_model(load_bundle(bundle), "fp32").run_batched(pixels)
    assert _cosine(got["logits"], reference["logits"]) > 0.9999


def test_tensorrt_version_window(monkeypatch, capsys):
    """8.6, 10.x and 11.x are accepted silently, older is refused in one line, a newer major gets one note."""
    from ringfold.runtime.backends.tensorrt import stack as trt_stack

    def fake(version: str):
        monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__=version))
        trt_stack._warn_untested_trt.cache_clear()
        return trt_stack.import_tensorrt()

    assert fake("10.3.0").__version__ == "10.3.0" and fake("8.6.2").__version__ == "8.6.2"
    assert fake("11.4.0").__version__ == "11.4.0" and fake("10.16.0").__version__ == "10.16.0"
    assert capsys.readouterr().err == ""
    with pytest.raises(RingfoldError, match=r"TensorRT 8\.5\.3 is too old: ringfold needs 8\.6"):
        fake("8.5.3")
    fake("12.0.1")
    trt_stack.import_tensorrt()  # the note is printed once per process
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "TensorRT 12.0.1 is newer than the 8.6, 10.x and 11.x" in err[0]
