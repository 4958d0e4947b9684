#!/usr/bin/env bash
# Rebuild the bundled Stage-1 model models/efm_sft from nothing (CPU, ~10 min on 2 cores):
#   1. record N=100 scripted demonstrations (seed 0, both block families, step limit 100, the default
#      demonstrator: noise_std 0.05, speed 0.8-1.0; the same bags as e00000..e00099 of data/stage1/demos_v2_s0_3200),
#   2. Stage-1 SFT (keypoint head, BC + steps-to-go, 1500 steps, seed 0; calibrates s and k at the end),
#   3. export policy + reward graphs with their manifest into models/efm_sft.
# This is SFT(n) of docs/results.md (Stage 1): the starting point of Stage 2.
#   bash scripts/make_bundled_model.sh            # or: N=100 STEPS=1500 SEED=0 bash scripts/make_bundled_model.sh
# The demo's starting point models/efm_sft_800 (SFT(8n), 14 % Block2Block; docs/results.md):
#   N=800 STEPS=3000 SEED=1 OUT=models/efm_sft_800 bash scripts/make_bundled_model.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-100}
STEPS=${STEPS:-1500}
SEED=${SEED:-0}
THREADS=${THREADS:-1}
EFM=${EFM:-.venv/bin/efm-ros}
DEMOS=data/stage1/demos_v2_s0_n${N}
OUT=${OUT:-models/efm_sft}
RUN=runs/stage1/$(basename "$OUT")

[ -d "$DEMOS" ] || $EFM collect-demos --episodes "$N" --out "$DEMOS" --seed 0 --workers 2 --no-progress
$EFM train-sft --demos "$DEMOS" --out "$RUN" --steps "$STEPS" --seed "$SEED" --threads "$THREADS" \
    --cache-dir data/stage1/feature_cache --no-progress
$EFM export "$RUN" --out "$OUT" --version "$(basename "$OUT")" --force
du -sh "$OUT"
