"""One batching loop for every backend: ``run_batched`` splits into ``run`` calls and concatenates in order, ONNX
Runtime by 16 (or the caller's batch), TensorRT by its profile's max, refusing a slice outside the profile."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from ringfold.errors import RingfoldError
from ringfold.runtime.backends.base import DEFAULT_BATCH, Backend, run_batched
from ringfold.runtime.backends.onnxruntime.model import OnnxModel
from ringfold.runtime.backends.registry import open_model
from tests.trt_stand_ins import stand_in_trt_model


class StandIn(Backend):
    """Outputs derived from each image so order mistakes show; records the batch of every ``run``."""

    backend = "stand-in"
    provider = "numpy"

    def __init__(self, max_batch=None):
        self.max_batch = max_batch
        self.calls: list[int] = []

    def run(self, pixels):
        self.calls.append(len(pixels))
        flat = pixels.reshape(len(pixels), -1)
        return {"logits": flat[:, :2].astype(np.float32), "embedding": flat.sum(1, keepdims=True).astype(np.float32)}

    def io(self):
        return [("image", "float32", [None, 3, 2, 2])], [("logits", "float32", [None, 2])]


def _pixels(n):
    return np.arange(n * 12, dtype=np.float32).reshape(n, 3, 2, 2)


@pytest.mark.parametrize(
    "n,max_batch,batch,calls",
    [
        (37, None, None, [16, 16, 5]),  # DEFAULT_BATCH
        (37, None, 10, [10, 10, 10, 7]),
        (10, 4, None, [4, 4, 2]),  # the backend's max
        (10, 4, 3, [3, 3, 3, 1]),
        (10, 4, 64, [4, 4, 2]),  # never above the max
        (3, None, None, [3]),
    ],
)
def test_run_batched_splits_and_concatenates_in_order(n, max_batch, batch, calls):
    model = StandIn(max_batch)
    pixels = _pixels(n)
    got = run_batched(model, pixels, batch)
    assert model.calls == calls
    whole = StandIn().run(pixels)
    assert set(got) == {"logits", "embedding"}
    for name in got:
        assert np.array_equal(got[name], whole[name]) and got[name].dtype == np.float32
    assert model.run_batched(pixels, batch).keys() == got.keys()  # the method is the same loop


def test_run_batched_of_nothing_is_empty_and_calls_nothing():
    model = StandIn(4)
    assert run_batched(model, _pixels(0)) == {} and model.calls == []
    assert DEFAULT_BATCH == 16


def _onnx_model(tmp_path: Path) -> Path:
    """logits = the first two values of each image, embedding = the image sum: what StandIn computes."""
    f32 = TensorProto.FLOAT
    nodes = [
        helper.make_node("Flatten", ["image"], ["flat"], axis=1),
        helper.make_node("Slice", ["flat", "zero", "two", "one"], ["logits"]),
        helper.make_node("ReduceSum", ["flat", "one"], ["embedding"], keepdims=1),
    ]
    inits = [
        helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
        helper.make_tensor("two", TensorProto.INT64, [1], [2]),
        helper.make_tensor("one", TensorProto.INT64, [1], [1]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("image", f32, ["batch", 3, 2, 2])],
        [
            helper.make_tensor_value_info("logits", f32, ["batch", 2]),
            helper.make_tensor_value_info("embedding", f32, ["batch", 1]),
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    return path


def test_onnx_runtime_model_uses_the_shared_loop(tmp_path, monkeypatch):
    model = OnnxModel(_onnx_model(tmp_path), provider="cpu")
    assert isinstance(model, Backend) and model.backend == "onnxruntime" and model.max_batch is None
    sizes = []
    run = model.run
    monkeypatch.setattr(model, "run", lambda pixels: sizes.append(len(pixels)) or run(pixels))
    pixels = _pixels(37)
    got = model.run_batched(pixels)
    assert sizes == [16, 16, 5]
    whole = StandIn().run(pixels)
    assert np.array_equal(got["logits"], whole["logits"]) and np.allclose(got["embedding"], whole["embedding"])
    sizes.clear()
    model.run_batched(pixels, 20)
    assert sizes == [20, 17]


class _Runner:
    """Polygraphy's TrtRunner stand-in: reuses its output buffer between calls, as the real one does."""

    is_active = False  # TensorRTModel.close() asks

    def __init__(self):
        self.batches = []

    def infer(self, feed, check_inputs=True):
        x = feed["image"]
        self.batches.append(len(x))
        flat = x.reshape(len(x), -1)
        return {"logits": flat[:, :2], "embedding": flat.sum(1, keepdims=True)}


def _trt_model(lo, hi):
    return stand_in_trt_model(lo, hi, _Runner())


def test_tensorrt_model_splits_by_its_profile_max():
    model = _trt_model(1, 4)
    assert isinstance(model, Backend) and model.backend == "tensorrt"
    pixels = _pixels(10)
    got = model.run_batched(pixels)
    assert model._runner.batches == [4, 4, 2]
    whole = StandIn().run(pixels)
    assert np.array_equal(got["logits"], whole["logits"]) and np.array_equal(got["embedding"], whole["embedding"])
    model._runner.batches.clear()
    model.run_batched(pixels, 8)  # capped at the profile's max
    assert model._runner.batches == [4, 4, 2]


def test_tensorrt_model_refuses_a_last_slice_below_the_profile_min():
    model = _trt_model(2, 4)
    with pytest.raises(RingfoldError, match=r"batch 1 is outside this engine's profile 2\.\.4.*--batch 1,1,4"):
        model.run_batched(_pixels(5))
    assert model._runner.batches == [4]


def test_open_model_returns_a_backend(tiny_bundle):
    from ringfold.runtime.bundle.loader import load_bundle

    model = open_model(load_bundle(tiny_bundle), "fp32", "onnxruntime", "cpu")
    assert isinstance(model, Backend) and model.provider == "CPUExecutionProvider"
    with pytest.raises(RingfoldError, match="--backend 'nope' invalid"):
        open_model(load_bundle(tiny_bundle), "fp32", "nope")


def test_the_registry_imports_a_backend_only_when_it_is_asked_for(tiny_bundle):
    """Opening an ONNX Runtime model never loads the TensorRT runner (nor Polygraphy); backends.base knows none."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from ringfold.runtime.backends.registry import BACKENDS, open_model\n"
        "from ringfold.runtime.bundle.loader import load_bundle\n"
        f"model = open_model(load_bundle({str(tiny_bundle)!r}), 'fp32', 'onnxruntime', 'cpu')\n"
        "print(BACKENDS, type(model).__name__, sorted(m for m in sys.modules if '.tensorrt' in m or 'polygraphy' in m))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "('onnxruntime', 'tensorrt', 'openvino') OnnxModel []"
    base = Path(__file__).resolve().parents[1] / "runtime" / "backends" / "base.py"
    imported = {n.module for n in ast.walk(ast.parse(base.read_text())) if isinstance(n, ast.ImportFrom)}
    assert imported == {"__future__", "abc"}  # backends.base knows no backend (and numpy is a plain import)


def test_an_unknown_backend_is_refused_in_one_line(tiny_bundle):
    from ringfold.runtime.bundle.loader import load_bundle

    with pytest.raises(RingfoldError, match=r"^--backend 'coreml' invalid; use onnxruntime or tensorrt or openvino$"):
        open_model(load_bundle(tiny_bundle), "fp32", "coreml")
