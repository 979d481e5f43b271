#!/usr/bin/env bash
# CI's "lowest" job: every declared lower bound at once (.ci/lowest.txt), running the
# export, precision, runtime and TensorRT-configuration tests. A bound that stops
# working fails here before a user with an older torch or ONNX Runtime meets it.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d)/lowest
trap 'rm -rf "$(dirname "$venv")"' EXIT
python3 -m venv "$venv"
"$venv/bin/pip" install -q -c .ci/lowest.txt -e ".[dev]"
"$venv/bin/python" - <<'PY'
import importlib.metadata as md
names = ("torch", "torchvision", "numpy", "onnx", "onnxruntime", "open_clip_torch", "tensorly", "polygraphy")
print("lowest job:", ", ".join(f"{n} {md.version(n)}" for n in names))
PY
"$venv/bin/python" -m pytest -q -p no:cacheprovider -m "not slow" \
    tests/test_export.py tests/test_precision.py tests/test_fp16_convert.py tests/test_runtime.py \
    tests/test_bundle_trust.py tests/test_runtime_only.py tests/test_trt.py tests/test_compress.py \
    tests/test_models.py tests/test_offline.py tests/test_triton.py \
    tests/test_raw_input.py tests/test_deepstream.py tests/test_open_vocab.py tests/test_tokenizer.py \
    tests/test_text_tower.py tests/test_aux_every.py tests/test_adaring_speed.py tests/test_host_ops.py
