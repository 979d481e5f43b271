#!/usr/bin/env bash
# CI's device job: what a Jetson gets. Build the wheel on the "workstation" (the dev venv),
# install it into a fresh venv with the lowest runtime versions and no torch, then run the
# runtime commands on a bundle exported by the test suite's own fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

.venv/bin/python -m tests.export_for_device "$work/export" >/dev/null
# build from a copy of the tracked (and new, unignored) files, so no build/ lands in the checkout
mkdir "$work/src" && git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$work/src"
.venv/bin/pip wheel -q --no-deps -w "$work/dist" "$work/src"
python3 -m venv "$work/device"
"$work/device/bin/pip" install -q -c .ci/runtime-lowest.txt "$work"/dist/ringfold-*.whl

cd "$work"  # away from the source tree: only the installed wheel is importable
ringfold=$work/device/bin/ringfold
bundle=$work/export/bundle
"$work/device/bin/python" - <<'PY'
import importlib.metadata as md, importlib.util, sys
assert importlib.util.find_spec("torch") is None, "torch must not be installed in the device venv"
print("device venv:", ", ".join(f"{p} {md.version(p)}" for p in ("ringfold", "numpy", "pillow", "onnxruntime", "protobuf")))
PY

expect() {  # expect RC COMMAND...: run, compare the exit code, show the last line
    local want=$1; shift
    set +e; out=$("$@" 2>&1); got=$?; set -e
    echo "[rc $got] ringfold ${*:2:1} … → $(tail -n 1 <<<"$out" | cut -c1-160)"
    if [ "$got" != "$want" ]; then echo "$out"; echo "device job: expected exit $want, got $got"; exit 1; fi
}
expect 0 "$ringfold" classify "$bundle" "$work/export/images" --top-k 2
expect 0 "$ringfold" parity "$bundle" --report "$work/parity"
expect 0 "$ringfold" classify "$bundle" "$work/export/images" --classes "cat,dog,red fox" --top-k 1
expect 0 "$ringfold" relabel "$bundle" --classes "cat,dog,red fox" --out "$work/relabelled"
expect 0 "$ringfold" parity "$work/relabelled" --report "$work/parity-relabelled"
expect 2 "$ringfold" relabel "$bundle" --classes "cat,Cat" --out "$work/r2"   # same class twice: one line, exit 2
expect 0 "$ringfold" bench "$bundle" --batch-sizes 1,4 --runs 3 --warmup 1 --out "$work/bench"
expect 0 "$ringfold" build-engine "$bundle" --print-trtexec --trt-version 10.3
expect 2 "$ringfold" build-engine "$bundle"                       # no TensorRT here: one line, exit 2
expect 2 "$ringfold" check "$bundle"                              # names the small package it needs
expect 2 "$ringfold" export "$work/export/run" --out "$work/b2"   # needs torch: one line, exit 2
expect 2 "$ringfold" parity "$bundle" --run "$work/export/run"
"$work/device/bin/pip" install -q -c "$repo/.ci/runtime-lowest.txt" onnx
expect 0 "$ringfold" check "$bundle" --target trt-10
[ ! -e "$work/b2" ] || { echo "device job: a refused export left $work/b2 behind"; exit 1; }
[ ! -e "$work/r2" ] || { echo "device job: a refused relabel left $work/r2 behind"; exit 1; }
# --- signed bundles (issue 27): sign on the "workstation" (dev venv) with an openssl-made P-256 key; on the
# device, with the [sign] extra and still no torch, verify it, require it for every command through
# RINGFOLD_PUBLIC_KEY, and refuse a bundle whose labels were swapped and whose manifest was re-hashed
openssl ecparam -name prime256v1 -genkey -noout -out "$work/private.pem"
openssl ec -in "$work/private.pem" -pubout -out "$work/public.pem" 2>/dev/null
cp -r "$bundle" "$work/signed"
"$repo/.venv/bin/ringfold" sign "$work/signed" --key "$work/private.pem" >/dev/null
"$work/device/bin/pip" install -q -c "$repo/.ci/runtime-lowest.txt" "$(ls "$work"/dist/ringfold-*.whl)[sign]"
"$work/device/bin/python" -c 'import importlib.util as u; assert u.find_spec("torch") is None, "[sign] brought torch"'
cp -r "$work/signed" "$work/tampered"
"$work/device/bin/python" - "$work/tampered" <<'PY'
import hashlib, json, pathlib, sys  # what an attacker ships: two class names swapped, the manifest re-hashed
b = pathlib.Path(sys.argv[1])
labels = json.loads((b / "labels.json").read_text())
(b / "labels.json").write_text(json.dumps([labels[1], labels[0], *labels[2:]]))
manifest = json.loads((b / "manifest.json").read_text())
manifest["files"]["labels.json"] = hashlib.sha256((b / "labels.json").read_bytes()).hexdigest()
(b / "manifest.json").write_text(json.dumps(manifest))
PY
expect 0 "$ringfold" verify "$work/signed" --public-key "$work/public.pem"
expect 2 "$ringfold" verify "$bundle" --public-key "$work/public.pem"              # unsigned
expect 0 "$ringfold" classify "$work/tampered" "$work/export/images" --top-k 1      # the manifest alone cannot tell
expect 2 "$ringfold" verify "$work/tampered" --public-key "$work/public.pem"        # the signature can
export RINGFOLD_PUBLIC_KEY=$work/public.pem                                         # a device's policy
expect 0 "$ringfold" classify "$work/signed" "$work/export/images" --top-k 1
expect 2 "$ringfold" classify "$work/tampered" "$work/export/images" --top-k 1
expect 2 "$ringfold" parity "$bundle" --report "$work/parity-unsigned"
unset RINGFOLD_PUBLIC_KEY
[ ! -e "$work/parity-unsigned" ] || { echo "device job: a refused parity left a report behind"; exit 1; }
echo "device job: passed"
