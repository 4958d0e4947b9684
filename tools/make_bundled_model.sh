#!/usr/bin/env bash
# Rebuild the bundled Stage-1 model models/efm_sft from nothing (CPU, ~6 min on 2 cores):
#   1. record N=800 scripted demonstrations (seed 0, both block families, step limit 100, the default
#      demonstrator: noise_std 0.05, speed 0.8-1.0; the same bags as e00000..e00799 of data/stage1/demos_v2_s0_6400),
#   2. Stage-1 SFT (keypoint head, previous-frame dropout 0.5, BC + steps-to-go, 3000 steps, seed 0;
#      calibrates s and k at the end),
#   3. export policy + reward graphs (and both split at the shared backbone) with their manifest into models/efm_sft.
# This is SFT(n = 800), seed 0, of docs/results.md: the starting point of Stage 2 and of `make demo`
# (the same run as runs/fig3/n800/seed0/bc_n of `efm-ros experiment figure3`; data_hash dee0697e...).
#   bash tools/make_bundled_model.sh            # or: N=800 STEPS=3000 SEED=0 bash tools/make_bundled_model.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-800}
STEPS=${STEPS:-3000}
SEED=${SEED:-0}
THREADS=${THREADS:-2}
EFM=${EFM:-.venv/bin/efm-ros}
DEMOS=data/stage1/demos_v2_s0_n${N}
OUT=${OUT:-models/efm_sft}
RUN=runs/stage1/$(basename "$OUT")

[ -d "$DEMOS" ] || $EFM collect-demos --episodes "$N" --out "$DEMOS" --seed 0 --workers 2 --no-progress
$EFM train-sft --demos "$DEMOS" --out "$RUN" --steps "$STEPS" --seed "$SEED" --threads "$THREADS" \
    --cache-dir data/stage1/feature_cache --no-progress
$EFM export "$RUN" --out "$OUT" --version "$(basename "$OUT")" --force
du -sh "$OUT"
