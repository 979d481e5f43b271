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
# --- the device walk (issue 25), as examples/jetson/README.md tells it: on a bundle with every precision and
# the raw-input models, check judges what TensorRT gets (int8-dynamic listed, never failed) for TensorRT 10 and
# 11; the printed trtexec line runs as printed against a stand-in trtexec in JetPack's /usr/src/tensorrt/bin
# (not on PATH; it makes the engine where the line says, refusing TensorRT 11's removed flags in 11 mode);
# the printed --register line is refused in one line without TensorRT; evaluate measures each precision on
# labelled images, torch-free, and refuses a folder that names no class before writing anything
full=$work/export/bundle-full
expect 0 "$ringfold" check "$full" --target trt-10
expect 0 "$ringfold" check "$full" --target trt-11
"$ringfold" check "$full" --target trt-11 --json >"$work/check.json"
"$work/device/bin/python" - "$work/check.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
rows = doc["precisions"]
assert doc["passed"] and doc["strongly_typed"], doc["passed"]
assert rows["int8-dynamic"]["for_tensorrt"] is False and "not for TensorRT" in rows["int8-dynamic"]["note"], rows
assert {"fp32", "fp16", "int8", "raw-float32", "raw-uint8", "text"} <= {k for k, r in rows.items() if r["for_tensorrt"]}
print("check: judged", ", ".join(k for k, r in rows.items() if r["for_tensorrt"]), "| listed: int8-dynamic")
PY
trtexec_dir=/usr/src/tensorrt/bin
if [ -e "$trtexec_dir/trtexec" ]; then
    echo "device job: a real trtexec is in $trtexec_dir: the stand-in goes beside the job instead"
    trtexec_dir=$work/tensorrt/bin
elif ! { mkdir -p "$trtexec_dir" 2>/dev/null && [ -w "$trtexec_dir" ]; }; then
    echo "device job: $trtexec_dir is not writable here: the stand-in goes beside the job instead"
    trtexec_dir=$work/tensorrt/bin
fi
mkdir -p "$trtexec_dir" && cp "$repo/.ci/trtexec-stand-in.sh" "$trtexec_dir/trtexec"
stand_in=$trtexec_dir/trtexec
trap 'rm -rf "$work"; rm -f "$stand_in"; rmdir -p "$trtexec_dir" 2>/dev/null || true' EXIT
[ "$trtexec_dir" = /usr/src/tensorrt/bin ] || export RINGFOLD_TRTEXEC_DIR=$trtexec_dir
[ ! -e "$full/engines" ] || { echo "device job: the bundle has an engines/ folder before any build"; exit 1; }
for version in 10.3 11.4; do
    for precision in fp32 fp16 int8; do
        line=$("$ringfold" build-engine "$full" --precision "$precision" --trt-version "$version" --print-trtexec \
            2>"$work/register.txt")
        before=$(ls "$full/engines" 2>/dev/null || true)
        STAND_IN_TRT=${version%%.*} env PATH=/usr/bin:/bin sh -c "$line" >/dev/null  # as pasted, no trtexec on PATH
        engine=$(comm -13 <(sort <<<"$before") <(ls "$full/engines" | sort) | grep '\.engine$' || true)
        case $engine in
            model-"$precision"-trt"$version"-*.engine) [ -s "$full/engines/$engine" ] ;;
            *) echo "device job: the printed line wrote no $precision engine for $version"; echo "$line"; exit 1 ;;
        esac
        echo "[ok] the printed trtexec line, TensorRT $version $precision → engines/$engine"
    done
done
register=$(grep -o 'ringfold build-engine .* --register .*' "$work/register.txt")
eval "expect 2 \"\$ringfold\" ${register#ringfold }"               # no TensorRT here: one line, exit 2
expect 2 "$ringfold" build-engine "$full" --precision fp16 --fp32-layers --trt-version 11.4 --print-trtexec
expect 0 "$ringfold" evaluate "$full" --images "$work/export/images" --report "$work/evaluate"
"$work/device/bin/python" - "$work/evaluate/evaluate.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
runs, missing = doc["precisions"], doc["not_evaluated"]
assert {"fp32", "fp16"} <= set(runs), list(runs)  # every variant is evaluated or its reason is reported
assert set(runs) | {k.split("/")[1] for k in missing} == {"fp32", "fp16", "int8", "int8-dynamic"}, (runs, missing)
assert all(0 <= r["top1"] <= 1 and sum(map(sum, r["confusion"])) == r["images"] for r in runs.values())
assert "random" in doc["note"], "the tiny bundle's random weights must be said"
print("evaluate:", ", ".join(f"{p} top-1 {r['top1']:.0%}" for p, r in runs.items()), f"on {doc['images']['evaluated']} images")
for run, why in missing.items():
    print(f"evaluate: NOT EVALUATED {run}: {why}")
PY
cp -r "$work/export/images" "$work/images-unknown" && mkdir "$work/images-unknown/zebra"
cp "$(find "$work/export/images" -name '*.png' | head -n 1)" "$work/images-unknown/zebra/"
expect 2 "$ringfold" evaluate "$full" --images "$work/images-unknown" --report "$work/evaluate-unknown"
[ ! -e "$work/evaluate-unknown" ] || { echo "device job: a refused evaluate left a report behind"; exit 1; }
echo "device job: passed"
