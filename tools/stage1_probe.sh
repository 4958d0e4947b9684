#!/usr/bin/env bash
# One Stage-1 probe on the camera table (docs/results.md, "What the camera features hold"): the first 800
# demonstrations of collect-demos --seed 0, train-sft, export, and 200 Block2Block evaluation episodes on the
# comparison seeds (success and the detector's precision / recall on the policy's own rollouts).
#   bash tools/stage1_probe.sh TAG MODEL_CONFIG_JSON [IMAGE_SIZE=96] [STEPS=3000] [more train-sft options]
#   bash tools/stage1_probe.sh goalframe1 '{}' 96 3000 --goal-frame-weight 1       # SEED=1 ... for another seed
# Writes runs/probe/TAG (the run), runs/probe/TAG_model (exported), runs/probe/eval_TAG_200 (the report).
set -euo pipefail
cd "$(dirname "$0")/.."
EFM=${EFM:-.venv/bin/efm-ros}
TAG=$1; CFG=$2; IMG=${3:-96}; STEPS=${4:-3000}; shift 4 || shift $#; EXTRA=("$@")
DEMOS=data/stage1/demos_v2_s0_n800; [ "$IMG" = 96 ] || DEMOS=data/stage1/demos_img${IMG}_s0_n800
[ -d "$DEMOS" ] || $EFM collect-demos --episodes 800 --out "$DEMOS" --seed 0 --workers 2 --image-size "$IMG" --no-progress
$EFM train-sft --demos "$DEMOS" --out "runs/probe/$TAG" --steps "$STEPS" --seed "${SEED:-0}" --threads 2 \
    --cache-dir data/stage1/feature_cache --no-progress --model-config "$CFG" "${EXTRA[@]}"
$EFM export "runs/probe/$TAG" --out "runs/probe/${TAG}_model" --version "$TAG" --force
$EFM eval --model "runs/probe/${TAG}_model" --episodes 200 --seed 77000 --families block2block --workers 2 \
    --out "runs/probe/eval_${TAG}_200" --quiet
