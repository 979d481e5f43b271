"""Export the test suite's tiny bundle (and its demo images) to a folder, for CI's device job.

``python -m tests.export_for_device OUT`` writes OUT/bundle and OUT/images with
the same fixtures the tests use (a random-weights tiny ViT trained for two
epochs on the generated demo set), so the runtime-only wheel is proven on a
bundle the suite itself checks. OUT/bundle-full is the same run exported with
every precision (fp16, static int8, int8-dynamic) and the raw-input models: the
device walk checks it for TensorRT, builds from it with the printed trtexec line
and evaluates each precision.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from ringfold.demo_data import make_demo_dataset
from ringfold.exporter.export import export_run
from ringfold.exporter.precision import PrecisionRequest
from tests.conftest import train_tiny


def main(out: Path) -> None:
    data = out / "data"
    make_demo_dataset(data, per_class=6, size=80, seed=0)
    run = train_tiny(out / "run", data, epochs=2)
    export_run(run, out / "bundle", ref_count=8, progress=False)
    every = PrecisionRequest(("fp32", "fp16", "int8", "int8-dynamic"), str(data / "train"), "minmax", 8, calib_min=8)
    export_run(run, out / "bundle-full", ref_count=8, progress=False, precision=every, raw_input=("float32", "uint8"))
    shutil.copytree(data / "test", out / "images")
    print(f"bundle: {out / 'bundle'}\nimages: {out / 'images'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
