import json

import numpy as np
import onnx
import pytest
from PIL import Image

from ringfold.cli import main
from ringfold.errors import FieldError
from ringfold.exporter.precision import FP16_BLOCKED_OPS, PrecisionRequest
from ringfold.exporter.quant import attention_core_matmuls, weight_bearing_nodes
from ringfold.runtime.backends.onnxruntime.model import open_bundle_model
from ringfold.runtime.bundle.loader import load_bundle
from ringfold.runtime.graph.precision_policy import final_normalisation_nodes, is_fp32_node
from ringfold.runtime.parity.stored import bundle_parity


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, demo_data):
    """Trained long enough that the reference logits have real margins (near-ties make top-1 meaningless)."""
    from .conftest import train_tiny

    return train_tiny(tmp_path_factory.mktemp("trun") / "run", demo_data, epochs=20, rank=16)


@pytest.fixture(scope="module")
def multi_bundle(tmp_path_factory, trained_run, demo_data):
    out = tmp_path_factory.mktemp("mp") / "bundle"
    code = main(
        [
            "export",
            str(trained_run),
            "--out",
            str(out),
            "--precision",
            "fp16",
            "int8",
            "int8-dynamic",
            "int8-fp16",
            "--calib",
            str(demo_data / "train"),
            "--calib-min",
            "24",  # the demo set's 24 training images, under the default minimum
            "--ref-count",
            "8",
            "--quiet",
        ]
    )
    assert code == 0
    return out


def test_variants_are_written_with_their_recipe(multi_bundle):
    manifest = json.loads((multi_bundle / "manifest.json").read_text())
    assert set(manifest["variants"]) == {"fp32", "fp16", "int8", "int8-dynamic", "int8-fp16"}
    int8 = manifest["variants"]["int8"]
    assert int8["format"] == "QDQ" and int8["calibration"]["images"] == 24 and len(int8["calibration"]["sha256"]) == 64
    for name in ("model_fp16.onnx", "model_int8.onnx", "model_int8_dynamic.onnx", "model_int8_fp16.onnx"):
        assert name in manifest["files"]


def test_fp16_keeps_io_fp32_and_sensitive_ops_fp32(multi_bundle):
    model = onnx.load(str(multi_bundle / "model_fp16.onnx"))
    f32 = onnx.TensorProto.FLOAT
    assert model.graph.input[0].type.tensor_type.elem_type == f32
    assert all(o.type.tensor_type.elem_type == f32 for o in model.graph.output)
    inits = {i.name: i.data_type for i in model.graph.initializer}
    assert any(t == onnx.TensorProto.FLOAT16 for t in inits.values())  # weights really are fp16
    for node in model.graph.node:
        if node.op_type in FP16_BLOCKED_OPS:
            for name in node.input:
                if name in inits:
                    assert inits[name] == f32, (node.op_type, name)


def test_int8_graph_is_qdq(multi_bundle):
    ops = {n.op_type for n in onnx.load(str(multi_bundle / "model_int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    dyn = {n.op_type for n in onnx.load(str(multi_bundle / "model_int8_dynamic.onnx")).graph.node}
    assert "DynamicQuantizeLinear" in dyn or "MatMulInteger" in dyn


@pytest.mark.parametrize("precision", ["fp16", "int8", "int8-dynamic", "int8-fp16"])
def test_reduced_precision_bundles_pass_their_gates(multi_bundle, precision):
    bundle = load_bundle(multi_bundle)
    report = bundle_parity(bundle, open_bundle_model(bundle, precision, provider="cpu"), precision)
    assert report.passed, report.to_markdown()
    comp = report.comparisons[0]
    assert comp.tolerance.max_abs_logit is None and comp.cosine_min >= comp.tolerance.min_cosine


def test_gate_fails_with_exit_1_when_tolerance_is_tighter_than_int8_can_do(multi_bundle, tmp_path, capsys):
    code = main(
        [
            "parity",
            str(multi_bundle),
            "--precision",
            "int8",
            "--min-cosine",
            "0.999999",
            "--report",
            str(tmp_path / "r"),
            "--provider",
            "cpu",
        ]
    )
    assert code == 1
    data = json.loads((tmp_path / "r" / "parity.json").read_text())
    assert not data["passed"] and any("min cosine" in f for c in data["comparisons"] for f in c["failures"])
    assert (tmp_path / "r" / "parity.png").exists()


def test_outlier_calibration_is_worse_than_real_calibration(trained_run, multi_bundle, tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    Image.new("RGB", (80, 80), (255, 255, 255)).save(calib / "white.png")
    noise = np.random.default_rng(0).integers(0, 2, size=(80, 80, 3), dtype=np.uint8) * 255
    Image.fromarray(noise).save(calib / "saltpepper.png")
    out = tmp_path / "bad"
    assert (
        main(
            [
                "export",
                str(trained_run),
                "--out",
                str(out),
                "--precision",
                "int8",
                "--calib",
                str(calib),
                "--calib-min",
                "2",
                "--ref-count",
                "8",
                "--quiet",
            ]
        )
        == 0
    )
    good_b, bad_b = load_bundle(multi_bundle), load_bundle(out)
    good = bundle_parity(good_b, open_bundle_model(good_b, "int8", provider="cpu"), "int8").comparisons[0]
    bad = bundle_parity(bad_b, open_bundle_model(bad_b, "int8", provider="cpu"), "int8").comparisons[0]
    assert bad.mean_abs_logit > good.mean_abs_logit


def test_int8_without_calibration_is_refused(tiny_run, tmp_path, capsys):
    """The library names the field; the CLI names the flag the user typed."""
    with pytest.raises(FieldError, match="field calib is needed for int8") as err:
        PrecisionRequest(("fp32", "int8"))
    assert err.value.field == "calib"
    with pytest.raises(FieldError, match="'int4' is not a precision") as err:
        PrecisionRequest(("fp32", "int4"))
    assert err.value.field == "precision"
    assert main(["export", str(tiny_run), "--out", str(tmp_path / "b"), "--precision", "int8"]) == 2
    assert "ringfold export: error: --calib: is needed for int8" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_relabel_rewrites_fp16_and_int8_dynamic_and_drops_static_int8(multi_bundle, tmp_path):
    """Open vocabulary: the fp16 head (fp32) and the dynamic int8 head are rewritten; static int8, int8-fp16 dropped."""
    from ringfold.runtime.vocab.relabel import relabel_bundle

    result = relabel_bundle(multi_bundle, tmp_path / "new", ["red fox", "barn owl", "eel"])
    assert result.variants == ["fp32", "fp16", "int8-dynamic"] and set(result.dropped) == {"int8", "int8-fp16"}
    new = load_bundle(tmp_path / "new")
    onnx.checker.check_model(onnx.load(str(new.model_path("fp16"))), full_check=True)
    pixels = new.reference().pixel_values
    fp32 = open_bundle_model(new, "fp32").run(pixels)["logits"]
    fp16 = open_bundle_model(new, "fp16").run(pixels)["logits"]
    assert fp16.shape == fp32.shape == (len(pixels), 3) and np.abs(fp16 - fp32).max() < 0.01
    assert new.manifest.raw["relabel"]["onnx_vs_reference_max_abs_logit"]["fp32"] <= 1e-4
    for precision in ("fp32", "fp16", "int8-dynamic"):
        report = bundle_parity(new, open_bundle_model(new, precision, provider="cpu"), precision)
        assert report.passed, report.to_markdown()


def test_relabel_to_the_same_classes_requantizes_like_quantize_dynamic(multi_bundle, tmp_path):
    from onnx import numpy_helper

    from ringfold.runtime.vocab.relabel import relabel_bundle

    old = load_bundle(multi_bundle)
    relabel_bundle(multi_bundle, tmp_path / "same", old.labels)
    new = load_bundle(tmp_path / "same")

    def head(bundle):
        graph = onnx.load(str(bundle.model_path("int8-dynamic"))).graph
        node = next(n for n in graph.node if n.op_type == "MatMulInteger")
        inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        return inits[node.input[1]]

    assert (head(new) != head(old)).sum() <= 1  # the text tower's float rounding may move one tie
    pixels = old.reference().pixel_values
    got = open_bundle_model(new, "int8-dynamic").run(pixels)["logits"]
    want = open_bundle_model(old, "int8-dynamic").run(pixels)["logits"]
    assert np.abs(got - want).max() <= 0.05


# ------------------------------------------------------------- calibration checked before the export (issue 23)
def _no_model(monkeypatch):
    import ringfold.exporter.export as export_mod

    def refuse(*_args, **_kwargs):
        raise AssertionError("the model was loaded before the calibration folder was checked")

    monkeypatch.setattr(export_mod, "load_adapted_model", refuse)


def _calib_folder(root, demo_data, n):
    root.mkdir()
    for i, src in enumerate(sorted((demo_data / "train").rglob("*.png"))[:n]):
        (root / f"{i:03d}.png").write_bytes(src.read_bytes())
    return root


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("typo", "--calib: {calib}: no such folder; check the path"),
        ("empty", "--calib: {calib} has no images for int8 calibration"),
        ("file", "--calib: {calib} is not a folder"),
        ("one", "--calib: {calib} has 1 image(s), fewer than the 32 int8 calibration needs"),
        ("corrupt", "--calib: holds an image that cannot be used: {calib}/040.png: not a readable image"),
        ("not-int8", "--calib: is only used by the int8 variant"),
    ],
)
def test_bad_calibration_is_refused_before_the_model_loads(
    tiny_run, demo_data, tmp_path, monkeypatch, capsys, case, needle
):
    from .helpers import one_line_error

    calib = tmp_path / "calib"
    if case == "empty":
        calib.mkdir()
    elif case == "file":
        calib.write_bytes(b"not a folder")
    elif case == "one":
        _calib_folder(calib, demo_data, 1)
    elif case in ("corrupt", "not-int8"):
        _calib_folder(calib, demo_data, 24)
        for i in range(24, 40):  # 40 files: the default minimum is met, one of them is not an image
            (calib / f"{i:03d}.png").write_bytes((calib / f"{i % 24:03d}.png").read_bytes())
        (calib / "040.png").write_bytes(b"text, not a PNG")
    _no_model(monkeypatch)
    out = tmp_path / "b"
    precision = [] if case == "not-int8" else ["--precision", "int8"]
    assert main(["export", str(tiny_run), "--out", str(out), *precision, "--calib", str(calib), "--quiet"]) == 2
    one_line_error(capsys, needle.format(calib=calib))
    assert not out.exists()


def test_one_calibration_image_is_accepted_with_calib_min(tiny_run, demo_data, tmp_path, capsys):
    calib = _calib_folder(tmp_path / "calib", demo_data, 1)
    out = tmp_path / "b"
    args = ["export", str(tiny_run), "--out", str(out), "--precision", "int8", "--calib", str(calib), "--quiet"]
    assert main(args) == 2
    assert "or pass --calib-min 1 to use them" in capsys.readouterr().err
    assert main([*args, "--calib-min", "1"]) == 0
    int8 = json.loads((out / "manifest.json").read_text())["variants"]["int8"]
    assert int8["calibration"]["images"] == 1 and int8["calibration"]["source"] == str(calib)


def test_fifo_in_the_calibration_folder_is_named_and_never_opened(tiny_run, demo_data, tmp_path, monkeypatch, capsys):
    """Reading a named pipe blocks until someone writes to it: the export used to hang there forever."""
    import builtins
    import os

    from .helpers import no_hang, one_line_error

    calib = _calib_folder(tmp_path / "calib", demo_data, 24)
    for i in range(24, 32):  # the default minimum of 32, so nothing but the pipe is wrong
        (calib / f"{i:03d}.png").write_bytes((calib / f"{i % 24:03d}.png").read_bytes())
    pipe = calib / "050_pipe.png"
    os.mkfifo(pipe)
    opened = []
    real_open, real_os_open = builtins.open, os.open

    def spy_open(file, *args, **kwargs):
        opened.append(os.fspath(file) if isinstance(file, (str, os.PathLike)) else file)
        return real_open(file, *args, **kwargs)

    def spy_os_open(path, *args, **kwargs):
        opened.append(os.fspath(path))
        return real_os_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(os, "open", spy_os_open)
    _no_model(monkeypatch)
    out = tmp_path / "b"
    with no_hang(30):  # the old code blocked in read(): fail the test instead of hanging the suite
        code = main(["export", str(tiny_run), "--out", str(out), "--precision", "int8", "--calib", str(calib)])
    assert code == 2
    one_line_error(capsys, "--calib: ", f"{pipe}: is a named pipe (FIFO), not a regular file")
    assert str(pipe) not in opened and not out.exists()


def _producers(model):
    return {o: n for n in model.graph.node for o in n.output}


def _fed_by_dq(model, node) -> list[str]:
    producers = _producers(model)
    return [i for i in node.input if i in producers and producers[i].op_type == "DequantizeLinear"]


def test_int8_quantizes_weights_only_and_keeps_the_attention_core_float(multi_bundle):
    """The transformer recipe: Q/DQ in front of the weight-bearing MatMul/Gemm/Conv only; LayerNorm, Softmax,
    GELU (Erf), the residual adds and Q·Kᵀ / softmax·V read float tensors (the old variant quantized the core)."""
    model = onnx.load(str(multi_bundle / "model_int8.onnx"))
    fp32 = onnx.load(str(multi_bundle / "model.onnx"))
    core = attention_core_matmuls(fp32)
    assert len(core) == 2 * 4  # Q·Kᵀ and softmax·V in each of the tiny ViT's 4 blocks
    by_name = {n.name: n for n in model.graph.node}
    assert all(name in by_name and not _fed_by_dq(model, by_name[name]) for name in core)
    kept = [n for n in model.graph.node if n.op_type in ("LayerNormalization", "Softmax", "Erf", "Add")]
    assert len(kept) > 20 and not [n.name for n in kept if _fed_by_dq(model, n)]
    weighted = weight_bearing_nodes(fp32)
    assert len(weighted) == 1 + 6 * 4 + 2  # patch Conv, q/k/v/out/fc/proj per block, projection and head
    assert all(len(_fed_by_dq(model, by_name[name])) == 2 for name in weighted)  # activation and weight
    entry = json.loads((multi_bundle / "manifest.json").read_text())["variants"]["int8"]
    assert entry["attention_core_float"] == 8 and entry["for"] == ["onnxruntime", "tensorrt"]
    assert entry["tool"].startswith("ringfold.exporter.qdq") and 0 < entry["seconds"] < 120
    assert entry["ranges_from"].startswith("int8-dynamic graph") and entry["quantized_nodes"] == len(weighted)


def test_int8_fp16_computes_in_fp16_outside_the_policy_islands(multi_bundle):
    """Every node with a float output computes in fp16 unless the precision policy keeps it fp32; DQ feeds the
    fp16 MatMuls directly (fp16 scales, opset 19), so TensorRT fuses them into int8 kernels."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(multi_bundle / "model_int8_fp16.onnx")))
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 19
    types = {v.name: v.type.tensor_type.elem_type for v in (*model.graph.value_info, *model.graph.output)}
    tail = set(final_normalisation_nodes(model))
    outputs = {o.name for o in model.graph.output}  # graph outputs stay fp32 (the embedding's DQ writes one)
    weights = {i.name for i in model.graph.initializer}  # an Identity alias of a LayerNorm weight computes nothing
    fp32_compute = [
        n.name
        for n in model.graph.node
        if n.op_type not in ("Cast", "Shape", "Constant")
        and not is_fp32_node(n, tail)
        and not all(i in weights for i in n.input)
        and any(types.get(o) == onnx.TensorProto.FLOAT and o not in outputs for o in n.output)
    ]
    assert fp32_compute == []
    by_name = {n.name: n for n in model.graph.node}
    weighted = weight_bearing_nodes(onnx.load(str(multi_bundle / "model.onnx")))
    assert all(len(_fed_by_dq(model, by_name[name])) == 2 for name in weighted)
    dq_scales = {n.input[1] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.output[0] not in outputs}
    inits = {i.name: i.data_type for i in model.graph.initializer}
    assert {inits[s] for s in dq_scales} == {onnx.TensorProto.FLOAT16}
    entry = json.loads((multi_bundle / "manifest.json").read_text())["variants"]["int8-fp16"]
    assert entry["for"] == ["tensorrt"] and entry["ort_optimization"] == "basic"


@pytest.mark.parametrize("target", ["trt-10", "trt-11"])
def test_tensorrt_check_passes_on_the_int8_variants(multi_bundle, target, capsys):
    """int8 and int8-fp16 are both TensorRT graphs: `ringfold check` judges them and finds no blocker."""
    code = main(["check", str(multi_bundle), "--target", target, "--precision", "int8", "int8-fp16"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "int8-fp16" in out


def test_int8_fp16_without_int8_writes_only_int8_fp16(trained_run, demo_data, tmp_path):
    out = tmp_path / "b"
    args = ["export", str(trained_run), "--out", str(out), "--precision", "int8-fp16", "--calib"]
    assert main([*args, str(demo_data / "train"), "--calib-min", "8", "--ref-count", "4", "--quiet"]) == 0
    assert set(json.loads((out / "manifest.json").read_text())["variants"]) == {"fp32", "int8-fp16"}
    assert not (out / "model_int8.onnx").exists() and (out / "model_int8_fp16.onnx").is_file()
    assert load_bundle(out).model_path("int8-fp16").name == "model_int8_fp16.onnx"


def test_int8_fp16_needs_calibration(tiny_run, tmp_path, capsys):
    code = main(["export", str(tiny_run), "--out", str(tmp_path / "b"), "--precision", "int8-fp16"])
    err = capsys.readouterr().err
    assert code == 2 and "calib" in err and "int8-fp16" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()


def test_calibration_reads_at_most_max_calibration_images(tiny_run, demo_data, tmp_path, monkeypatch):
    """One cheap pass: a folder larger than MAX_CALIBRATION_IMAGES is cut to it (the manifest says how many)."""
    import ringfold.exporter.precision as precision

    monkeypatch.setattr(precision, "MAX_CALIBRATION_IMAGES", 6)
    out = tmp_path / "b"
    args = ["export", str(tiny_run), "--out", str(out), "--precision", "int8", "--calib", str(demo_data / "train")]
    assert main([*args, "--calib-min", "2", "--calib-limit", "20", "--ref-count", "4", "--quiet"]) == 0
    assert json.loads((out / "manifest.json").read_text())["variants"]["int8"]["calibration"]["images"] == 6


def test_int8_fp16_is_listed_not_failed_for_tensorrt_8_6(multi_bundle, capsys):
    """int8-fp16 (opset 19, fp16 Q/DQ scales) is the source of a strongly typed build, which 8.6 does not do:
    `check --target trt-8.6` lists it with why and does not fail on it."""
    code = main(["check", str(multi_bundle), "--target", "trt-8.6", "--precision", "int8-fp16", "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "TensorRT 10 and later only" in out


def test_triton_serves_no_int8_fp16_onnx_model(multi_bundle, tmp_path, capsys):
    """int8-fp16 is meant for TensorRT only: the repository leaves it out by default and refuses it by name."""
    repo = tmp_path / "repo"
    assert main(["triton", str(multi_bundle), "--out", str(repo), "--name", "m"]) == 0
    assert sorted(p.name for p in repo.iterdir()) == ["m", "m_fp16", "m_int8", "m_int8_dynamic"]
    capsys.readouterr()
    assert main(["triton", str(multi_bundle), "--out", str(tmp_path / "r2"), "--precision", "int8-fp16"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "source of TensorRT's int8 engine" in err and not (tmp_path / "r2").exists()


@pytest.mark.parametrize("name", ["model_int8.onnx", "model_int8_dynamic.onnx", "model_int8_fp16.onnx"])
def test_quantized_variants_declare_only_the_opsets_they_use(multi_bundle, name):
    """onnxruntime's quantizer declares every domain it knows (ai.onnx.ml 5 …), which ONNX Runtime 1.17 — the
    oldest the runtime supports — refuses to load; the export keeps only what a node uses."""
    model = onnx.load(str(multi_bundle / name), load_external_data=False)
    used = {node.domain or "" for node in model.graph.node} | {""}
    assert {o.domain or "" for o in model.opset_import} == used


def _activation_scales(path) -> dict[str, float]:
    """The static int8 graph's activation scale per quantized tensor (QuantizeLinear's scale initializer)."""
    model = onnx.load(str(path))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    return {n.input[0]: float(inits[n.input[1]]) for n in model.graph.node if n.op_type == "QuantizeLinear"}


def test_histogram_calibration_reads_the_fp32_graph_and_clips_outliers(tiny_bundle, demo_data, tmp_path):
    """--calib-method percentile goes through onnxruntime's calibrator on fp32; minmax reads the dynamic graph."""
    import shutil

    from ringfold.exporter.precision import write_variants

    preprocess = load_bundle(tiny_bundle).preprocess
    scales = {}
    for method in ("minmax", "percentile"):
        folder = tmp_path / method
        folder.mkdir()
        shutil.copy(tiny_bundle / "model.onnx", folder / "model.onnx")
        request = PrecisionRequest(("fp32", "int8"), str(demo_data / "train"), method, calib_min=1)
        variants, failed = write_variants(folder, request, preprocess)
        assert failed == {}
        want = "int8-dynamic graph (max |x|)" if method == "minmax" else "fp32 graph (percentile)"
        assert variants["int8"]["ranges_from"] == want and variants["int8"]["calibration"]["method"] == method
        assert not (folder / "model_int8_dynamic.onnx").exists()  # minmax's dynamic graph stays in scratch
        scales[method] = _activation_scales(folder / "model_int8.onnx")
    assert scales["minmax"].keys() == scales["percentile"].keys() and len(scales["minmax"]) > 10
    ratios = np.array([scales["percentile"][k] / scales["minmax"][k] for k in scales["minmax"]])
    # the 99.999th percentile of |x| never exceeds max |x| (1 % slack: minmax read the int8-dynamic graph)
    assert ratios.max() <= 1.01 and ratios.min() < 0.98  # some tensors have outliers the percentile cuts
