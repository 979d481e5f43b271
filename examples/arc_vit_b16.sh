#!/usr/bin/env bash
# ARC on CLIP ViT-B/16, end to end: train -> export -> TensorRT lint -> parity -> classify.
#
# ARC (Dong et al., NeurIPS 2023, "Efficient Adaptation of Large Vision Transformer via Adapter
# Re-Composing") in the paper's setting: bottleneck rank r = 50, adapters before attention and
# before the MLP (--sites both) of all 12 blocks (--layers all), on the image ViT (--towers visual).
# That is 96,432 trainable parameters, which step 0 prints (and tests/test_cli.py checks).
# The paper adapts a plain ViT. With CLIP you can also adapt the text tower
# (--towers visual,text, ringfold's default), which changes the class embeddings too.
# Epochs, lr, batch size and the optimizer are ringfold's defaults, not tuned to the paper.
#
# Usage (data in CoOp's DATASETS.md layout, see examples/README.md):
#   DATA_ROOT=/data bash examples/arc_vit_b16.sh
# Override any variable below from the environment, e.g. a smoke test with no downloads:
#   MODEL=ringfold-tiny-vit WEIGHTS=--random-init EPOCHS=1 SHOTS=2 DATA=split_zhou_X.json IMAGE_ROOT=imgs \
#     CALIB=imgs/train OUT=/tmp/arc bash examples/arc_vit_b16.sh
set -euo pipefail

MODEL=${MODEL:-ViT-B-16}
WEIGHTS=${WEIGHTS:---pretrained openai}          # or --pretrained path/to/open_clip.safetensors
DATA=${DATA:-${DATA_ROOT:?set DATA_ROOT (or DATA and IMAGE_ROOT)}/oxford_pets/split_zhou_OxfordPets.json}
IMAGE_ROOT=${IMAGE_ROOT:-$DATA_ROOT/oxford_pets/images}
TEMPLATE=${TEMPLATE:-"a photo of a {}, a type of pet."}   # CoOp's template for OxfordPets
CLASSES=${CLASSES:-all}                          # base: the base-to-novel protocol (then step 2 reports H)
SHOTS=${SHOTS:-16}
SEED=${SEED:-1}
EPOCHS=${EPOCHS:-10}
CALIB=${CALIB:-$IMAGE_ROOT}                      # images for int8 calibration (a folder)
OUT=${OUT:-runs/arc-vit-b16}
RUN=$OUT/run
BUNDLE=$OUT/bundle

ARC=(--method arc --rank 50 --layers all --sites both --towers visual)

# 0. Parameter count of this configuration (no data, no weights needed).
ringfold params --model "$MODEL" "${ARC[@]}"

# 1. Train on frozen CLIP (CUDA + autocast when present). Writes RUN/ with adapters.safetensors,
#    run.json, log.jsonl (epoch 0 = zero-shot accuracy) and curves.png. Never the frozen weights.
# shellcheck disable=SC2086  # WEIGHTS is two words on purpose
ringfold train --model "$MODEL" $WEIGHTS "${ARC[@]}" \
    --data "$DATA" --image-root "$IMAGE_ROOT" --templates "$TEMPLATE" \
    --classes "$CLASSES" --shots "$SHOTS" --seed "$SEED" --epochs "$EPOCHS" \
    --out "$RUN"

# 2. Test accuracy of the adapted PyTorch model. For a --classes base run: base, novel and H.
ringfold evaluate "$RUN" --data "$DATA" --image-root "$IMAGE_ROOT" --out "$OUT/evaluate.json"

# 3. Fold the adapters into the frozen weights and write the ONNX bundle. ARC folds exactly:
#    the graph is the base ViT-B/16 plus one Linear head. fp16 for GPUs and Jetson; int8 is a
#    QDQ model calibrated on real images through the runtime's preprocessing.
ringfold export "$RUN" --out "$BUNDLE" --precision fp16 int8 --calib "$CALIB" --calib-limit 256 --overwrite

# 4. TensorRT ONNX-parser lint (no GPU needed). Use --target trt-8.6 for JetPack 6.0.
ringfold check "$BUNDLE" --target trt-10

# 5. Parity gate: every variant against the live PyTorch model (exit 1 if outside tolerance).
ringfold parity "$BUNDLE" --precision all --run "$RUN" --report "$OUT/parity"

# 6. Classify with the torch-free runtime (numpy + Pillow + ONNX Runtime): a few images of the data.
mapfile -t IMAGES < <(find "$IMAGE_ROOT" -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' \) | sort | head -n 4)
ringfold classify "$BUNDLE" "${IMAGES[@]}" --precision fp16 --top-k 5

# Next: deploy on Jetson (TensorRT engine, bench, classify loop): examples/jetson/README.md
