"""TensorRT: engine identity and refusal logic (no GPU needed), trtexec recipes, and real builds (GPU only)."""

import json
import shutil

import pytest

from ringfold.cli import main
from ringfold.errors import RingfoldError
from ringfold.runtime.trt_engine import EngineKey, check_engine, find_engine, record_engine, trtexec_command


class FakeEnv:
    def __init__(self, version="10.3.0", device="Orin", cc="8.7"):
        self.version, self.device, self.cc = version, device, cc

    def trt_version(self):
        return self.version

    def device_name(self):
        return self.device

    def compute_capability(self):
        return self.cc


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


def test_trtexec_command_per_version():
    cmd10 = trtexec_command(
        "b/model.onnx", "e.engine", "image", (3, 224, 224), (1, 8, 16), "fp16", "10.3.0", 2048, "tc.bin", ["ln1"]
    )
    assert "--minShapes=image:1x3x224x224" in cmd10 and "--optShapes=image:8x3x224x224" in cmd10
    assert "--maxShapes=image:16x3x224x224" in cmd10 and "--memPoolSize=workspace:2048M" in cmd10
    assert "--fp16" in cmd10 and "--timingCacheFile=tc.bin" in cmd10 and "--layerPrecisions=ln1:fp32" in cmd10
    assert "--workspace=" not in cmd10
    old = trtexec_command("m.onnx", "e", "image", (3, 64, 64), (1, 1, 1), "int8", "8.2.1")
    assert "--workspace=1024" in old and "--int8" in old and "--memPoolSize" not in old


def test_print_trtexec_needs_no_tensorrt(tiny_bundle, capsys):
    assert (
        main(["build-engine", str(tiny_bundle), "--print-trtexec", "--trt-version", "8.6.2", "--batch", "1,4,8"]) == 0
    )
    out = capsys.readouterr().out.strip()
    assert out.startswith("trtexec --onnx=") and "--maxShapes=image:8x3x64x64" in out and "trt8.6" in out


def test_build_engine_without_tensorrt_is_a_clear_error(tiny_bundle, capsys):
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    assert main(["build-engine", str(tiny_bundle)]) == 2
    err = capsys.readouterr().err
    assert "TensorRT is not installed" in err and len(err.strip().splitlines()) == 1


def _has_trt_and_cuda() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT is not installed (import tensorrt failed)"
    try:
        from ringfold.runtime.trt_engine import LiveTrtEnvironment

        LiveTrtEnvironment().device_name()
    except Exception as exc:  # no CUDA device / cuda-python
        return f"no usable CUDA device ({exc})"
    return None


_SKIP = _has_trt_and_cuda()


@pytest.mark.trt
@pytest.mark.skipif(_SKIP is not None, reason=f"needs TensorRT and a CUDA device: {_SKIP}")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_build_engine_classify_and_parity_on_gpu(tiny_bundle, tmp_path, precision, capsys):
    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    args = [
        "build-engine",
        str(bundle),
        "--precision",
        precision,
        "--batch",
        "1,4,8",
        "--timing-cache",
        str(tmp_path / "tc.bin"),
    ]
    assert main(args + (["--fp32-layers"] if precision == "fp16" else [])) == 0
    assert list((bundle / "engines").glob(f"model-{precision}-*.engine"))
    assert (tmp_path / "tc.bin").stat().st_size > 0
    gate = ["--min-cosine", "0.999", "--min-top1", "1.0"] if precision == "fp16" else []
    assert (
        main(
            [
                "parity",
                str(bundle),
                "--backend",
                "tensorrt",
                "--precision",
                precision,
                "--report",
                str(tmp_path / "r"),
                *gate,
            ]
        )
        == 0
    )
    img = sorted((bundle / "reference" / "images").glob("*.png"))[0]
    assert main(["classify", str(bundle), str(img), "--backend", "tensorrt", "--precision", precision]) == 0


@pytest.mark.trt
@pytest.mark.skipif(_SKIP is not None, reason=f"needs TensorRT and a CUDA device: {_SKIP}")
def test_batch_outside_profile_is_refused_on_gpu(tiny_bundle, tmp_path):
    import numpy as np

    from ringfold.runtime.bundle import load_bundle
    from ringfold.runtime.trt_backend import open_trt_model

    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    assert main(["build-engine", str(bundle), "--precision", "fp32", "--batch", "2,2,4"]) == 0
    model = open_trt_model(load_bundle(bundle), "fp32")
    with pytest.raises(RingfoldError, match="outside this engine's profile"):
        model.run(np.zeros((1, 3, 64, 64), np.float32))
