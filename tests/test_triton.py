"""Triton model repositories (``ringfold triton``, ``export --triton``) on the tiny random-weights model.

Every ``config.pbtxt`` is parsed with Triton's own ``ModelConfig`` protobuf (``tritonclient``), so a
field or enum value Triton does not know fails here; the values are then checked against the bundle.
No Triton server runs here: what is proven is the repository's layout, configs and model files.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from ringfold.cli import main
from ringfold.ownership import RECORD_FILE
from ringfold.runtime.bundle.engines import EngineKey, record_engine
from ringfold.runtime.bundle.loader import load_bundle
from tests.helpers import one_line_error

VARIANTS = ("fp32", "fp16", "int8", "int8-dynamic")


@pytest.fixture(scope="module")
def model_config_pb2():
    return pytest.importorskip(
        "tritonclient.grpc.model_config_pb2",
        reason="Triton's ModelConfig protobuf comes with tritonclient: pip install 'tritonclient[grpc]' "
        "(in ringfold's [dev] extra)",
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_run, demo_data) -> tuple[Path, Path]:
    """(bundle, repository) from one `export --precision … --triton DIR`: every variant a bundle can have."""
    root = tmp_path_factory.mktemp("triton")
    bundle, repo = root / "tiny bundle", root / "repo"
    argv = ["export", str(tiny_run), "--out", str(bundle), "--ref-count", "8", "--quiet", "--triton", str(repo)]
    argv += ["--precision", *VARIANTS[1:], "--calib", str(demo_data / "test"), "--calib-min", "8"]
    assert main(argv) == 0
    return bundle, repo


def parse(model_config_pb2, path: Path):
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def _add_engine(bundle: Path, precision="fp16", batch=(1, 8, 16), payload=b"stand-in engine bytes", sha=None) -> Path:
    """A registered engine as `build-engine` records it; the bytes are a stand-in (no TensorRT here)."""
    b = load_bundle(bundle)
    key = EngineKey(sha or b.model_sha256("fp32"), "10.3.0", "Orin", "8.7", precision, batch)
    path = bundle / "engines" / key.file_name()
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(payload)
    record_engine(path, key)
    return path


@pytest.fixture
def engine_bundle(tmp_path, tiny_bundle) -> Path:
    bundle = tmp_path / "eb"
    shutil.copytree(tiny_bundle, bundle)
    _add_engine(bundle)
    return bundle


# ------------------------------------------------------------------------------------------- configs
def test_export_triton_writes_one_model_per_precision_and_triton_parses_every_config(exported, model_config_pb2):
    bundle_path, repo = exported
    bundle = load_bundle(bundle_path)
    names = {"tiny_bundle": "fp32", "tiny_bundle_fp16": "fp16", "tiny_bundle_int8": "int8"}
    names["tiny_bundle_int8_dynamic"] = "int8-dynamic"
    assert sorted(p.name for p in repo.iterdir()) == sorted(names)
    h, w = bundle.manifest.input_size
    width = bundle.reference().embedding.shape[1]
    for name, precision in names.items():
        folder = repo / name
        cfg = parse(model_config_pb2, folder / "config.pbtxt")
        assert cfg.name == name
        assert (cfg.platform, cfg.backend) == ("onnxruntime_onnx", "onnxruntime")
        assert cfg.max_batch_size == 8 and cfg.dynamic_batching.max_queue_delay_microseconds == 100
        assert (folder / "1" / cfg.default_model_filename).is_file() and cfg.default_model_filename == "model.onnx"
        (image,) = cfg.input
        assert image.name == "image" and image.data_type == model_config_pb2.TYPE_FP32
        assert list(image.dims) == [3, h, w]  # no batch axis: max_batch_size > 0
        logits, embedding = cfg.output
        assert (logits.name, embedding.name) == ("logits", "embedding")
        assert list(logits.dims) == [len(bundle.labels)] and list(embedding.dims) == [width]
        assert logits.data_type == embedding.data_type == model_config_pb2.TYPE_FP32
        assert logits.label_filename == "labels.txt" and not embedding.label_filename
        assert (folder / "labels.txt").read_text().splitlines() == bundle.labels
        (group,) = cfg.instance_group
        cpu_only = precision == "int8-dynamic"
        kind = (
            model_config_pb2.ModelInstanceGroup.KIND_CPU if cpu_only else model_config_pb2.ModelInstanceGroup.KIND_AUTO
        )
        assert group.count == 1 and group.kind == kind
        # the bundle's ONNX Runtime optimisation level, in the onnxruntime backend's numbering
        want_level = {"all": None, "extended": 1, "basic": -1}[bundle.variants[precision].ort_optimization]
        assert (cfg.optimization.graph.level if cfg.HasField("optimization") else None) == want_level
        assert (folder / "1" / "model.onnx").read_bytes() == bundle.model_path(precision).read_bytes()
        readme = (folder / "README.md").read_text()
        assert "random weights" in readme and f"[batch, 3, {h}, {w}]" in readme
        assert "preprocess.json" in readme and "no Triton server" in readme
    assert bundle.variants["fp16"].ort_optimization == "extended"  # so one config above carries a level


def test_the_protobuf_parse_rejects_what_triton_would(exported, model_config_pb2):
    """The check above can fail: a field or enum value Triton's ModelConfig does not have is a ParseError."""
    from google.protobuf import text_format

    text = (exported[1] / "tiny_bundle" / "config.pbtxt").read_text()
    for bad in (text + "max_batch: 4\n", text.replace("KIND_AUTO", "KIND_TPU"), text.replace("TYPE_FP32", "FP32")):
        with pytest.raises(text_format.ParseError):
            text_format.Parse(bad, model_config_pb2.ModelConfig())


def test_repository_onnx_reproduces_the_bundle_reference_logits(exported):
    """The copied files are the right ones: ONNX Runtime on them gives the bundle's stored outputs."""
    from ringfold.runtime.backends.onnxruntime.model import OnnxModel

    bundle_path, repo = exported
    bundle = load_bundle(bundle_path)
    ref = bundle.reference()
    cases = (("tiny_bundle", "fp32", 1.0), ("tiny_bundle_fp16", "fp16", 0.99))
    for name, precision, top1 in (*cases, ("tiny_bundle_int8_dynamic", "int8-dynamic", 0.8)):
        # at the optimisation level the config gives Triton (fp16: extended, as the bundle says)
        level = bundle.variants[precision].ort_optimization
        out = OnnxModel(repo / name / "1" / "model.onnx", provider="cpu", optimization=level).run(ref.pixel_values)
        logits, embedding = out["logits"], out["embedding"]
        if name == "tiny_bundle":
            assert np.abs(logits - ref.logits_folded).max() <= 1e-4
            assert np.abs(embedding - ref.embedding_folded).max() <= 1e-5
        agreement = (logits.argmax(1) == ref.logits_folded.argmax(1)).mean()
        assert agreement >= top1, (name, agreement)


def test_engine_becomes_a_tensorrt_plan_model_with_its_gpu_in_the_config(engine_bundle, tmp_path, model_config_pb2):
    repo = tmp_path / "repo"
    assert main(["triton", str(engine_bundle), "--out", str(repo), "--name", "clf", "--max-batch", "32"]) == 0
    assert sorted(p.name for p in repo.iterdir()) == ["clf", "clf_trt_fp16"]
    plan_dir = repo / "clf_trt_fp16"
    text = (plan_dir / "config.pbtxt").read_text()
    cfg = parse(model_config_pb2, plan_dir / "config.pbtxt")
    assert (cfg.platform, cfg.backend, cfg.default_model_filename) == ("tensorrt_plan", "tensorrt", "model.plan")
    assert cfg.max_batch_size == 16  # the engine profile's maximum, not the 32 asked for
    assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert parse(model_config_pb2, repo / "clf" / "config.pbtxt").max_batch_size == 32
    assert (plan_dir / "1" / "model.plan").read_bytes() == b"stand-in engine bytes"
    assert "ONLY LOADS ON Orin (compute capability 8.7) with TensorRT 10.3.0" in text
    assert "only loads on a Orin GPU" in (plan_dir / "README.md").read_text()
    assert (plan_dir / "labels.txt").read_text().splitlines() == load_bundle(engine_bundle).labels


def test_no_engine_means_no_plan_and_precision_picks_the_models(tiny_bundle, engine_bundle, tmp_path):
    assert main(["triton", str(tiny_bundle), "--out", str(tmp_path / "a")]) == 0
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["bundle"]  # never an invented engine
    assert main(["triton", str(engine_bundle), "--out", str(tmp_path / "b"), "--precision", "fp32"]) == 0
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["eb"]
    assert main(["triton", str(engine_bundle), "--out", str(tmp_path / "c"), "--precision", "fp16"]) == 0
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["eb_trt_fp16"]


def test_unusable_engines_are_left_out_with_a_note(tiny_bundle, tmp_path, capsys):
    bundle = tmp_path / "eb"
    shutil.copytree(tiny_bundle, bundle)
    _add_engine(bundle, precision="fp16", batch=(4, 8, 16))
    _add_engine(bundle, precision="fp32", sha="b" * 64)
    assert main(["triton", str(bundle), "--out", str(tmp_path / "repo")]) == 0
    err = capsys.readouterr().err
    assert "batch profile starts at 4" in err and "an ONNX file this bundle does not have" in err
    assert [p.name for p in (tmp_path / "repo").iterdir()] == ["eb"]


def test_two_engines_of_one_precision_get_distinct_names(engine_bundle, tmp_path, model_config_pb2):
    _add_engine(engine_bundle, batch=(1, 4, 4), payload=b"another stand-in")
    assert main(["triton", str(engine_bundle), "--out", str(tmp_path / "repo"), "--precision", "fp16"]) == 0
    names = sorted(p.name for p in (tmp_path / "repo").iterdir())
    assert len(names) == 2 and all(n.startswith("eb_trt_fp16_sm87_trt10.3_b") for n in names)
    batches = sorted(parse(model_config_pb2, tmp_path / "repo" / n / "config.pbtxt").max_batch_size for n in names)
    assert batches == [4, 8]


# ------------------------------------------------------------------------------------- hostile input
def test_corrupt_engine_or_bundle_is_refused_before_anything_is_written(engine_bundle, tmp_path, capsys):
    engine = next((engine_bundle / "engines").glob("*.engine"))
    engine.write_bytes(b"tampered")
    repo = tmp_path / "repo"
    assert main(["triton", str(engine_bundle), "--out", str(repo)]) == 2
    assert "sha256 differs" in one_line_error(capsys) and not repo.exists()
    (engine_bundle / "model.onnx").write_bytes(b"tampered")
    assert main(["triton", str(engine_bundle), "--out", str(repo), "--precision", "fp32"]) == 2
    assert "model.onnx: sha256 differs from the manifest" in one_line_error(capsys) and not repo.exists()


def test_folders_ringfold_did_not_write_are_never_replaced(tiny_bundle, tmp_path, capsys):
    repo = tmp_path / "repo"
    (repo / "users_model" / "1").mkdir(parents=True)
    (repo / "users_model" / "config.pbtxt").write_text('name: "users_model"\n')
    assert main(["triton", str(tiny_bundle), "--out", str(repo), "--name", "clf"]) == 0
    assert (repo / "users_model" / "config.pbtxt").read_text() == 'name: "users_model"\n'  # left alone
    assert main(["triton", str(tiny_bundle), "--out", str(repo), "--name", "clf"]) == 2
    assert "already exists; pass --overwrite" in one_line_error(capsys)
    assert main(["triton", str(tiny_bundle), "--out", str(repo), "--name", "clf", "--overwrite"]) == 0
    # the user's own model, or a folder of ours the user changed, is never deleted
    assert main(["triton", str(tiny_bundle), "--out", str(repo), "--name", "users_model", "--overwrite"]) == 2
    assert f"has no {RECORD_FILE}, so ringfold did not write it" in one_line_error(capsys)
    (repo / "clf" / "2").mkdir()  # an empty version folder the user added would go with ours
    assert main(["triton", str(tiny_bundle), "--out", str(repo), "--name", "clf", "--overwrite"]) == 2
    assert "holds 2/, which ringfold did not write" in one_line_error(capsys)
    (repo / "clf" / "2").rmdir()
    config = repo / "clf" / "config.pbtxt"
    config.write_text(config.read_text() + "# tuned\n")
    assert main(["triton", str(tiny_bundle), "--out", str(repo), "--name", "clf", "--overwrite"]) == 2
    assert "holds config.pbtxt, changed since ringfold wrote it" in one_line_error(capsys)
    (repo / "clf" / "notes.txt").write_text("mine")
    assert main(["triton", str(tiny_bundle), "--out", str(repo), "--name", "clf", "--overwrite"]) == 2
    assert "ringfold only replaces what it wrote" in one_line_error(capsys)
    assert (repo / "clf" / "notes.txt").read_text() == "mine" and config.read_text().endswith("# tuned\n")


@pytest.mark.parametrize(
    ("argv", "needle"),
    [(["--max-batch", "0"], "argument --max-batch"), (["--name", "../up"], "is not a Triton model name")],
)
def test_bad_flag_values_are_refused_when_parsed(tiny_bundle, tmp_path, capsys, argv, needle):
    with pytest.raises(SystemExit) as caught:
        main(["triton", str(tiny_bundle), "--out", str(tmp_path / "repo"), *argv])
    assert caught.value.code == 2 and needle in one_line_error(capsys) and not (tmp_path / "repo").exists()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [(["--precision", "fp8"], "--precision fp8: not a precision"), (["--precision", "fp16"], "no fp16 model")],
)
def test_precisions_the_bundle_lacks_are_one_line_errors(tiny_bundle, tmp_path, capsys, argv, needle):
    assert main(["triton", str(tiny_bundle), "--out", str(tmp_path / "repo"), *argv]) == 2
    assert needle in one_line_error(capsys) and not (tmp_path / "repo").exists()


def test_out_that_is_a_file_or_inside_the_bundle_is_refused(tiny_bundle, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["triton", str(tiny_bundle), "--out", str(tmp_path / "file")]) == 2
    assert "exists and is not a folder" in one_line_error(capsys)
    assert main(["triton", str(tiny_bundle), "--out", str(tiny_bundle / "triton")]) == 2
    assert "inside the bundle" in one_line_error(capsys) and not (tiny_bundle / "triton").exists()


def test_a_failed_write_leaves_no_model_folder(tiny_bundle, tmp_path, monkeypatch, capsys):
    from ringfold.runtime.deploy import triton_repo

    def disk_full(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(triton_repo, "model_readme", disk_full)
    repo = tmp_path / "repo"
    assert main(["triton", str(tiny_bundle), "--out", str(repo)]) == 2
    assert "no space left on the device" in one_line_error(capsys)
    assert list(repo.iterdir()) == []  # no model folder, no .partial, no lock


def test_triton_runs_on_a_runtime_only_install(tiny_bundle, tmp_path, monkeypatch):
    for module in ("torch", "onnx", "open_clip"):
        monkeypatch.setitem(sys.modules, module, None)  # importing them now fails, as on a Jetson
    assert main(["triton", str(tiny_bundle), "--out", str(tmp_path / "repo")]) == 0
    assert (tmp_path / "repo" / "bundle" / "1" / "model.onnx").is_file()


@pytest.mark.slow
def test_vit_b16_bundle_becomes_a_repository_whose_onnx_matches_the_reference(tmp_path, demo_data, model_config_pb2):
    """Realistic size (ViT-B/16, random weights, untrained adapters): 224×224 input, 512-wide embedding."""
    from ringfold.runtime.backends.onnxruntime.model import OnnxModel

    run, bundle, repo = tmp_path / "run", tmp_path / "vit b16", tmp_path / "repo"
    train = ["train", "--model", "ViT-B-16", "--random-init", "--method", "arc", "--rank", "8", "--epochs", "0"]
    train += ["--data", str(demo_data), "--shots", "1", "--device", "cpu", "--out", str(run), "--quiet"]
    assert main(train) == 0
    export = ["export", str(run), "--out", str(bundle), "--ref-count", "4", "--precision", "fp16", "--quiet"]
    assert main([*export, "--triton", str(repo)]) == 0
    assert sorted(p.name for p in repo.iterdir()) == ["vit_b16", "vit_b16_fp16"]
    cfg = parse(model_config_pb2, repo / "vit_b16" / "config.pbtxt")
    assert list(cfg.input[0].dims) == [3, 224, 224] and [list(o.dims) for o in cfg.output] == [[4], [512]]
    ref = load_bundle(bundle).reference()
    out = OnnxModel(repo / "vit_b16" / "1" / "model.onnx", provider="cpu").run(ref.pixel_values)
    assert np.abs(out["logits"] - ref.logits_folded).max() <= 1e-4


def test_export_refuses_an_unwritable_repository_before_exporting(tiny_run, tmp_path, capsys):
    repo, bundle = tmp_path / "repo", tmp_path / "pets"
    (repo / "pets").mkdir(parents=True)
    (repo / "pets" / "config.pbtxt").write_text('name: "pets"\n')  # the user's own model of that name
    assert main(["export", str(tiny_run), "--out", str(bundle), "--triton", str(repo), "--overwrite"]) == 2
    assert f"has no {RECORD_FILE}, so ringfold did not write it" in one_line_error(capsys)
    assert not bundle.exists() and (repo / "pets" / "config.pbtxt").read_text() == 'name: "pets"\n'


def test_raw_input_models_become_raw_triton_models(raw_bundle, tmp_path, model_config_pb2):
    """A --raw-input bundle also gets <name>_raw (FP32) and <name>_raw_uint8 (UINT8) models, RGB 0..255 in."""
    import onnxruntime as ort

    from ringfold.runtime.pixels.images import load_image
    from ringfold.runtime.pixels.raw import raw_pixels_uint8

    repo = tmp_path / "repo"
    assert main(["triton", str(raw_bundle), "--out", str(repo), "--name", "m"]) == 0
    bundle = load_bundle(raw_bundle)
    assert {"m", "m_int8", "m_raw", "m_raw_uint8"} <= {p.name for p in repo.iterdir()}
    h, w = bundle.manifest.input_size
    ref = bundle.reference()
    pixels = np.stack([raw_pixels_uint8(load_image(raw_bundle / name), bundle.preprocess) for name in ref.images])
    for name, triton_type, feed in (
        ("m_raw", "TYPE_FP32", pixels.astype(np.float32)),
        ("m_raw_uint8", "TYPE_UINT8", pixels),
    ):
        cfg = parse(model_config_pb2, repo / name / "config.pbtxt")
        (image,) = cfg.input
        assert image.name == "image_raw" and image.data_type == getattr(model_config_pb2, triton_type)
        assert list(image.dims) == [3, h, w] and cfg.output[0].label_filename == "labels.txt"
        readme = (repo / name / "README.md").read_text()
        assert "0..255" in readme and "normalised tensor, not raw pixels" not in readme
        session = ort.InferenceSession(str(repo / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
        logits = session.run(["logits"], {"image_raw": feed})[0]
        # end to end from the reference images: the client's resize, then the folded model
        assert np.abs(logits - ref.logits).max() <= 1e-4, name
    # asking only for int8 leaves the raw (fp32-graph) models out
    assert main(["triton", str(raw_bundle), "--out", str(tmp_path / "r2"), "--precision", "int8"]) == 0
    assert not any("raw" in p.name for p in (tmp_path / "r2").iterdir())
