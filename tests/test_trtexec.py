"""``build-engine --print-trtexec`` without TensorRT: the trtexec argv per TensorRT version, and the printed line
run for real against a stand-in trtexec (a shell script) on PATH or in JetPack's /usr/src/tensorrt/bin.

The version table's rows (8.6, 10.3, 10.16, 11.x) are tested in test_trt_versions.py; this file is the line itself.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("polygraphy", reason="polygraphy is not installed (pip install polygraphy)")

from ringfold.cli import build_parser, main  # noqa: E402
from ringfold.errors import RingfoldError  # noqa: E402
from ringfold.ownership import ownership_problem  # noqa: E402
from ringfold.runtime.backends.tensorrt import cuda as trt_cuda  # noqa: E402
from ringfold.runtime.backends.tensorrt import plan as trt_plan  # noqa: E402
from ringfold.runtime.backends.tensorrt.cuda import parse_nvidia_smi  # noqa: E402
from ringfold.runtime.backends.tensorrt.plan import BuildOptions, plan_build  # noqa: E402
from ringfold.runtime.backends.tensorrt.trtexec import TrtexecRecipe, build_script, trtexec_argv  # noqa: E402
from ringfold.runtime.bundle.loader import load_bundle  # noqa: E402
from tests.trt_stand_ins import LN, FakeBundle  # noqa: E402


@pytest.fixture
def fake(tiny_bundle, tmp_path):
    real = load_bundle(tiny_bundle)
    return lambda *variants: FakeBundle(real, tmp_path / "bundle", variants or ("fp32",))


def _copy(bundle, dest):
    shutil.copytree(bundle, dest)
    return dest


# ------------------------------------------------------------------------------------------- trtexec
def test_trtexec_argv_matches_the_plan_per_tensorrt_version(fake, tmp_path):
    bundle = fake("fp32", "int8")
    plan = plan_build(
        bundle, BuildOptions("fp16", (1, 4, 8), workspace_mib=2048, timing_cache=tmp_path / "tc"), "8.6.2"
    )
    argv = trtexec_argv(plan, "e.engine")
    assert argv == [
        "trtexec",
        f"--onnx={plan.onnx}",
        "--saveEngine=e.engine",
        "--minShapes=image:1x3x64x64",
        "--optShapes=image:4x3x64x64",
        "--maxShapes=image:8x3x64x64",
        "--memPoolSize=workspace:2048",  # MiB: the unit 8.6 and 10.x both read without a suffix
        "--fp16",
        "--noTF32",
        f"--timingCacheFile={tmp_path / 'tc'}",
        "--profilingVerbosity=detailed",
        "--skipInference",
    ]
    strongly = trtexec_argv(plan_build(bundle, BuildOptions("fp32", strongly_typed=True), "10.3"), "e")
    assert "--stronglyTyped" in strongly and "--fp16" not in strongly and "--int8" not in strongly
    int8 = trtexec_argv(plan_build(bundle, BuildOptions("int8", strongly_typed=False), "10.3"), "e")
    assert "--int8" in int8 and "--fp16" in int8 and "--stronglyTyped" not in int8
    int8 = trtexec_argv(plan_build(bundle, BuildOptions("int8"), "10.3"), "e")  # 10.x default: strongly typed
    assert "--stronglyTyped" in int8 and not {"--int8", "--fp16"} & set(int8)
    fp32 = trtexec_argv(plan_build(bundle, BuildOptions("fp32"), "8.6"), "e")
    assert not {"--fp16", "--int8", "--stronglyTyped"} & set(fp32)
    pinned = trtexec_argv(plan_build(bundle, BuildOptions("fp16", fp32_layers=True), "8.6"), "e")
    assert "--precisionConstraints=obey" in pinned
    layers = next(a for a in pinned if a.startswith("--layerPrecisions=")).split("=", 1)[1].split(",")
    assert f"{LN}:fp32" in layers and f"--layerOutputTypes={','.join(layers)}" in pinned


def test_trtexec_refuses_what_it_cannot_express(fake, tmp_path, monkeypatch):
    bundle = fake()
    monkeypatch.setattr(trt_plan, "fp32_layer_names", lambda onnx: None)  # no onnx package
    plan = plan_build(bundle, BuildOptions("fp16", fp32_layers=True), "10.3")
    assert plan.fp32_layers.names is None
    with pytest.raises(RingfoldError, match="pip install onnx"):
        trtexec_argv(plan, "e")
    monkeypatch.setattr(trt_plan, "fp32_layer_names", lambda onnx: ["a,b"])
    with pytest.raises(RingfoldError, match="cannot parse"):
        trtexec_argv(plan_build(bundle, BuildOptions("fp16", fp32_layers=True), "10.3"), "e")


def _print(capsys, bundle, *extra, version="8.6.2"):
    argv = ["build-engine", str(bundle), "--print-trtexec", *(["--trt-version", version] if version else []), *extra]
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def _register_argv(err: str) -> list[str]:
    assert len(err.strip().splitlines()) == 1, err
    return shlex.split(err[err.index(": ringfold build-engine ") + 2 :])  # "…registered on the device: <command>"


@pytest.fixture
def gpu(monkeypatch):
    """What this machine's GPU looks like to --print-trtexec (None: no CUDA, no nvidia-smi)."""

    def set_gpu(value):
        monkeypatch.setattr(trt_cuda, "detect_gpu", lambda: value)

    set_gpu(("NVIDIA Jetson AGX Orin", "8.7"))
    return set_gpu


TRTEXEC_STAND_IN = """#!/bin/sh
# stands in for TensorRT's trtexec: records its arguments, one a line, and writes the --saveEngine file
printf '%s\\n' "$@" > "$TRTEXEC_ARGS"
for a in "$@"; do case "$a" in --saveEngine=*) printf 'stand-in engine' > "${a#--saveEngine=}" ;; esac; done
"""


def _stand_in_trtexec(folder):
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "trtexec"
    exe.write_text(TRTEXEC_STAND_IN)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


def _run_line(line, tmp_path, *path_dirs):
    """Run the printed line in sh with only ``path_dirs`` and the system's folders on PATH; the args trtexec got."""
    record = tmp_path / "trtexec args.txt"
    path = os.pathsep.join([*map(str, path_dirs), "/usr/bin", "/bin"])
    done = subprocess.run(
        ["sh", "-c", line], env={"PATH": path, "TRTEXEC_ARGS": str(record)}, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return record.read_text().splitlines()


def test_print_trtexec_line_runs_as_printed_with_trtexec_on_path(tiny_bundle, tmp_path, capsys, gpu):
    bundle = _copy(tiny_bundle, tmp_path / "my bundles" / "pets v2")
    cache = tmp_path / "cache dir" / "timing.cache"
    code, out, err = _print(capsys, bundle, "--batch", "1,4,8", "--timing-cache", str(cache), "--workspace", "512")
    assert code == 0 and len(out.strip().splitlines()) == 1
    line = out.strip()
    assert "'" in line and line.startswith(f"mkdir -p {shlex.quote(str(bundle / 'engines'))} && ")
    assert "command -v trtexec || echo /usr/src/tensorrt/bin/trtexec" in line
    assert not (bundle / "engines").exists()  # printing writes nothing without --fp32-layers
    sha = load_bundle(bundle).model_sha256("fp32")[:12]
    engine = bundle / "engines" / f"model-fp16-trt8.6-nvidia-jetson-agx-orin-sm87-b1-4-8-{sha}.engine"
    got = _run_line(line, tmp_path, _stand_in_trtexec(tmp_path / "bin").parent)
    assert got == [
        f"--onnx={bundle / 'model.onnx'}",
        f"--saveEngine={engine}",
        "--minShapes=image:1x3x64x64",
        "--optShapes=image:4x3x64x64",
        "--maxShapes=image:8x3x64x64",
        "--memPoolSize=workspace:512",
        "--fp16",
        "--noTF32",
        f"--timingCacheFile={cache}",
        "--profilingVerbosity=detailed",
        "--skipInference",
    ]
    assert engine.read_bytes() == b"stand-in engine"  # engines/ was created by the line, not by trtexec
    register = _register_argv(err)
    assert register == ["ringfold", "build-engine", str(bundle), "--precision", "fp16", "--register", str(engine)]
    args = build_parser().parse_args(register[1:])  # the next step is a valid command
    assert args.register == str(engine) and args.precision == "fp16"


def test_print_trtexec_line_finds_trtexec_in_jetpacks_folder_off_path(tiny_bundle, tmp_path, capsys, gpu, monkeypatch):
    """JetPack installs trtexec in /usr/src/tensorrt/bin, not on PATH (here a fake one, through the env override)."""
    bundle = _copy(tiny_bundle, tmp_path / "b")
    jetpack = tmp_path / "usr src" / "tensorrt" / "bin"
    _stand_in_trtexec(jetpack)
    monkeypatch.setenv("RINGFOLD_TRTEXEC_DIR", str(jetpack))
    code, out, err = _print(capsys, bundle, "--precision", "fp32", version="11.4")
    assert code == 0 and shlex.quote(str(jetpack / "trtexec")) in out
    got = _run_line(out.strip(), tmp_path)  # no trtexec on PATH
    assert got[0] == f"--onnx={bundle / 'model.onnx'}" and (bundle / "engines").is_dir()
    assert not {"--fp16", "--int8", "--stronglyTyped", "--best"} & set(got)  # TensorRT 11's trtexec has none
    engine = next(a.split("=", 1)[1] for a in got if a.startswith("--saveEngine="))
    assert "-trt11.4-" in engine and _register_argv(err)[-1] == engine


def test_print_trtexec_without_a_gpu_names_the_engine_without_it(tiny_bundle, capsys, gpu, monkeypatch):
    gpu(None)
    monkeypatch.setattr("ringfold.commands.installed_trt_version", lambda: None)
    code, out, err = _print(capsys, tiny_bundle, version=None)
    assert code == 0
    sha = load_bundle(tiny_bundle).model_sha256("fp32")[:12]
    assert f"--saveEngine={tiny_bundle.absolute() / 'engines'}/model-fp16-trt10.3-b1-8-16-{sha}.engine" in out
    assert "TensorRT 10.3 assumed" in err and "no GPU seen here" in err and "--register" in _register_argv(err)
    assert err.startswith("ringfold build-engine: trtexec writes no sidecar")


def test_print_trtexec_for_another_device_takes_gpu_and_sm(tiny_bundle, capsys, monkeypatch):
    def no_detection():
        raise AssertionError("--gpu/--sm given: nothing to detect")

    monkeypatch.setattr(trt_cuda, "detect_gpu", no_detection)
    code, out, err = _print(capsys, tiny_bundle, "--gpu", "Orin", "--sm", "8.7", version="10.3.0")
    assert code == 0 and "-trt10.3-orin-sm87-b1-8-16-" in out and "no GPU" not in err


def test_print_trtexec_asks_nvidia_smi_when_cuda_cannot_say(tiny_bundle, tmp_path, capsys, monkeypatch):
    def no_cuda(device=0):
        raise RingfoldError("no libcudart")

    monkeypatch.setattr(trt_cuda, "cuda_device", no_cuda)
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text("#!/bin/sh\necho 'NVIDIA GeForce RTX 4090, 8.9'\n")
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{smi.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    code, out, _ = _print(capsys, tiny_bundle, version="10.3")
    assert code == 0 and "-nvidia-geforce-rtx-4090-sm89-" in out


@pytest.mark.parametrize(
    "text,expected",
    [
        ("NVIDIA GeForce RTX 4090, 8.9\n", ("NVIDIA GeForce RTX 4090", "8.9")),
        ("NVIDIA A100-SXM4-80GB, 8.0\nNVIDIA A100-SXM4-80GB, 8.0\n", ("NVIDIA A100-SXM4-80GB", "8.0")),
        ("Orin (nvgpu), [N/A]\n", None),  # Jetson's nvidia-smi does not report it
        ("", None),
        ("garbage", None),
    ],
)
def test_nvidia_smi_output_is_read_or_ignored(text, expected):
    assert parse_nvidia_smi(text) == expected


def test_print_trtexec_per_tensorrt_version(tiny_bundle, capsys, gpu):
    code, out, err = _print(capsys, tiny_bundle, "--precision", "fp32", "--strongly-typed", version="8.6.2")
    assert code == 2 and out == "" and "--strongly-typed needs TensorRT 10" in err and len(err.splitlines()) == 1
    code, out, err = _print(capsys, tiny_bundle, "--precision", "fp32", "--strongly-typed", version="10.3")
    argv = shlex.split(out.split(" && ", 1)[1])
    assert code == 0 and "--stronglyTyped" in argv and "--fp16" not in argv and "-trt10.3-" in out
    assert "--strongly-typed" in _register_argv(err)
    code, out, err = _print(capsys, tiny_bundle, "--precision", "int8", "--calibrator", "entropy", "--calib", ".")
    assert code == 2 and "trtexec cannot calibrate" in err and len(err.splitlines()) == 1


def test_print_trtexec_with_fp32_layers_writes_a_build_script_and_prints_the_line_that_runs_it(
    tiny_bundle, tmp_path, capsys, gpu
):
    bundle = _copy(tiny_bundle, tmp_path / "my bundles" / "pets v2")
    code, out, err = _print(capsys, bundle, "--fp32-layers")
    line = out.strip()
    scripts = sorted((bundle / "engines").glob("build_*.sh"))
    assert code == 0 and len(scripts) == 1 and line == f"sh {shlex.quote(str(scripts[0]))}" and len(line) < 300
    assert scripts[0].name == f"build_{Path(_register_argv(err)[-1]).stem}.sh"  # beside the engine it builds
    text = scripts[0].read_text()
    assert text.startswith("#!/bin/sh\n") and "mkdir -p" in text and "/usr/src/tensorrt/bin/trtexec" in text
    assert ownership_problem(bundle / "engines") is None  # recorded in engines/' ownership record
    shutil.rmtree(bundle / "engines")  # the script is run from where it was written: keep a copy, re-print
    code, out, err = _print(capsys, bundle, "--fp32-layers")
    got = _run_line(out.strip(), tmp_path, _stand_in_trtexec(tmp_path / "bin").parent)
    layers = next(a for a in got if a.startswith("--layerPrecisions=")).split("=", 1)[1].split(",")
    assert f"{LN}:fp32" in layers and "/visual/transformer/resblocks.0/attn/Softmax:fp32" in layers
    assert "--precisionConstraints=obey" in got and "--fp16" in got and f"--layerOutputTypes={','.join(layers)}" in got
    engine = Path(_register_argv(err)[-1])
    assert engine.read_bytes() == b"stand-in engine"
    code, out, again = _print(capsys, bundle, "--fp32-layers")  # printing again rewrites its own script
    assert code == 0 and out == f"sh {shlex.quote(str(scripts[0]))}\n"


def test_print_trtexec_never_replaces_a_script_it_did_not_write(tiny_bundle, tmp_path, capsys, gpu):
    bundle = _copy(tiny_bundle, tmp_path / "b")
    code, out, err = _print(capsys, bundle, "--fp32-layers")
    script = Path(shlex.split(out)[1])
    script.write_text("#!/bin/sh\necho mine\n")
    code, out, err = _print(capsys, bundle, "--fp32-layers")
    assert code == 2 and out == "" and "not written by ringfold build-engine" in err and len(err.splitlines()) == 1
    assert script.read_text() == "#!/bin/sh\necho mine\n"


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--print-trtexec", "--gpu", "Orin"], "--gpu and --sm go together"),
        (["--print-trtexec", "--sm", "87"], "is not a compute capability"),
        (["--print-trtexec", "--gpu", "  ", "--sm", "8.7"], "is not a GPU name"),
        (["--print-trtexec", "--trt-version", "8.5.2"], "older than TensorRT 8.6"),
        (["--print-trtexec", "--trt-version", "ten"], "is not a TensorRT version"),
        (["--gpu", "Orin", "--sm", "8.7"], "describe the target of --print-trtexec"),
        (["--trt-version", "10.3"], "describe the target of --print-trtexec"),
        (["--print-trtexec", "--register", "x.engine"], "not allowed with argument"),
    ],
)
def test_print_trtexec_values_are_checked(tiny_bundle, capsys, args, needle):
    try:
        code = main(["build-engine", str(tiny_bundle), *args])
    except SystemExit as exc:  # refused by the parser
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


def test_gpu_queries_never_raise_on_a_machine_without_cuda(monkeypatch):
    monkeypatch.setenv("PATH", "")
    assert isinstance(trt_cuda.cuda_device_count(), int)
    found = trt_cuda.detect_gpu()
    assert found is None or (isinstance(found[0], str) and "." in found[1])


def test_build_script_keeps_every_argument_whole_even_with_a_line_break_in_a_path(tmp_path):
    """A path with a line break must not end the script's comment and run the rest as a command."""
    bundle = tmp_path / "pets\nrm -rf x"
    engine = bundle / "engines" / "e.engine"
    argv = ["trtexec", f"--onnx={bundle / 'model.onnx'}", f"--saveEngine={engine}", "--layerPrecisions=a b:fp32"]
    recipe = TrtexecRecipe(argv, ["ringfold", "build-engine", str(bundle), "--register", str(engine)], engine, True)
    script = tmp_path / "build.sh"
    script.write_text(build_script(recipe))
    stand_in = tmp_path / "bin" / "trtexec"
    stand_in.parent.mkdir()
    stand_in.write_text('#!/bin/sh\nprintf \'%s\\0\' "$@" > "$TRTEXEC_ARGS"\n')
    stand_in.chmod(0o755)
    record = tmp_path / "args"
    env = {"PATH": f"{stand_in.parent}:/usr/bin:/bin", "TRTEXEC_ARGS": str(record)}
    done = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert record.read_text().split("\0")[:-1] == argv[1:] and (bundle / "engines").is_dir()
    lines = script.read_text().splitlines()
    assert all(line.startswith("#") for line in lines[1:4]) and lines[4] == "set -e"
