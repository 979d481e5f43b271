"""Shared fixtures: a tiny random-weights open_clip model, the demo image set, a trained run and its bundle.

Tests run torch single-threaded: on small 2-core VMs two intra-op threads
are several times slower than one for these small graphs.

The suite passes wherever a user runs it, so the process environment the tests (and the commands
they start) depend on is set here, not inherited: offline model lookup, one OpenMP thread, and no
``RINGFOLD_*`` variable — a cap such as ``RINGFOLD_MAX_IMAGE_ASPECT`` exported in the user's shell
would otherwise change what the cap tests see.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

for _name in [n for n in os.environ if n.startswith("RINGFOLD_")]:
    del os.environ[_name]
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"

TINY = "ringfold-tiny-vit"


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    try:
        import torch
    except ImportError:  # runtime-only install
        yield
        return
    torch.set_num_threads(1)
    yield


@pytest.fixture(autouse=True, scope="session")
def _onnxruntime_threads():
    """ONNX Runtime sessions default to one intra-op thread per core, spinning while they wait: with
    pytest-xdist's workers on the same cores that is contention, not speed. A session whose options
    leave the thread count at 0 (the default) gets 1; an explicit count (``--threads``) is kept."""
    try:
        import onnxruntime as ort
    except ImportError:
        yield
        return
    original = ort.InferenceSession

    class OneThreadSession(original):
        def __init__(self, path_or_bytes, sess_options=None, *args, **kwargs):
            options = sess_options if sess_options is not None else ort.SessionOptions()
            if options.intra_op_num_threads == 0:
                options.intra_op_num_threads = 1
            super().__init__(path_or_bytes, options, *args, **kwargs)

    ort.InferenceSession = OneThreadSession
    yield
    ort.InferenceSession = original


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    from ringfold.demo_data import make_demo_dataset

    root = tmp_path_factory.mktemp("demo_data")
    make_demo_dataset(root, per_class=6, size=80, seed=0)
    return root


def train_tiny(
    out: Path, data: Path, epochs: int = 1, method: str = "arc", settings: dict | None = None, **adapter
) -> Path:
    """A short CPU run on the tiny random model; ``adapter`` overrides the method config, ``settings`` TrainConfig."""
    from ringfold.trainer.train import TrainConfig, train

    defaults = {"rank": 8, "layers": "all"} if method == "arc" else {"layers": "all"}
    cfg = TrainConfig(
        model=TINY,
        random_init=True,
        method=method,
        adapter={**defaults, **adapter},
        data=str(data),
        shots=4,
        epochs=epochs,
        batch_size=8,
        lr=1e-2,
        device="cpu",
        augment=False,
        progress=False,
    )
    for key, value in (settings or {}).items():
        setattr(cfg, key, value)
    train(cfg, out)
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, demo_data) -> Path:
    return train_tiny(tmp_path_factory.mktemp("run") / "run", demo_data, epochs=2)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_run) -> Path:
    from ringfold.exporter.export import export_run

    out = tmp_path_factory.mktemp("bundle") / "bundle"
    export_run(tiny_run, out, ref_count=8, progress=False)
    return out


@pytest.fixture(scope="session")
def raw_bundle(tmp_path_factory, tiny_run, demo_data) -> Path:
    """The tiny bundle with int8 and the raw-input models (float32 + uint8), so deepstream/ has an INT8 cache."""
    from ringfold.exporter.export import export_run
    from ringfold.exporter.precision import PrecisionRequest

    out = tmp_path_factory.mktemp("raw_bundle") / "bundle"
    request = PrecisionRequest(("fp32", "int8"), str(demo_data / "train"), "minmax", 8, calib_min=8)
    export_run(tiny_run, out, ref_count=8, progress=False, precision=request, raw_input=("float32", "uint8"))
    return out
