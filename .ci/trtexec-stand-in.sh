#!/bin/sh
# A stand-in for TensorRT's trtexec (CI's device job has no TensorRT): it takes the arguments the line
# `ringfold build-engine --print-trtexec` prints and writes a placeholder engine where --saveEngine says,
# failing as the real one would where the folder does not exist or the ONNX is missing. With
# STAND_IN_TRT=11 it refuses what TensorRT 11's trtexec removed (--fp16 --int8 --best --calib ...).
set -eu
onnx=; engine=
for arg in "$@"; do
    case $arg in
        --onnx=*) onnx=${arg#--onnx=} ;;
        --saveEngine=*) engine=${arg#--saveEngine=} ;;
        --fp16|--int8|--best|--bf16|--fp8|--calib=*|--precisionConstraints=*)
            if [ "${STAND_IN_TRT:-10}" = 11 ]; then echo "trtexec (stand-in 11): unknown option $arg" >&2; exit 1; fi ;;
    esac
done
[ -f "$onnx" ] || { echo "trtexec (stand-in): cannot read --onnx=$onnx" >&2; exit 1; }
[ -n "$engine" ] && [ -d "$(dirname "$engine")" ] || { echo "trtexec (stand-in): cannot write $engine" >&2; exit 1; }
printf 'stand-in engine for %s\n' "$onnx" > "$engine"
echo "&&&& PASSED TensorRT.trtexec (stand-in) # $*"
