#!/usr/bin/env bash
# Rebuild the bundled Stage-1 model models/efm_sft from nothing (CPU, ~25 min on 2 idle cores, ~10 of them
# the eight views' feature caches, made once):
#   1. record N=800 scripted demonstrations (seed 0, both block families, step limit 100, the default
#      demonstrator: noise_std 0.05, speed 0.8-1.0; the same bags as e00000..e00799 of data/stage1/demos_v2_s0_6400),
#   2. Stage-1 SFT (keypoint head, previous-frame dropout 0.5, BC + steps-to-go, seed 0, on the demonstrations
#      and their 7 mirrored and turned copies (--symmetries all), 6000 steps; calibrates s and k at the end),
#   3. export policy + reward graphs (and both split at the shared backbone) with their manifest into models/efm_sft.
# This is the symmetric SFT(n = 800), seed 0, of docs/results.md ("Mirrored and turned demonstrations"): the
# starting point of `make demo` and the ladder's default. The protocol's SFT(n) (the paper's recipe, no copies,
# 3000 steps; the bundled model until 2026-12-07 and the start of the ladder rows recorded before then) is
#   SYMMETRIES= STEPS=3000 OUT=runs/models/protocol_sft bash tools/make_bundled_model.sh
#   bash tools/make_bundled_model.sh            # or: N=800 STEPS=6000 SEED=0 SYMMETRIES=all bash tools/make_bundled_model.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-800}
STEPS=${STEPS:-6000}
SYMMETRIES=${SYMMETRIES-all}
SEED=${SEED:-0}
THREADS=${THREADS:-2}
EFM=${EFM:-.venv/bin/efm-ros}
DEMOS=data/stage1/demos_v2_s0_n${N}
OUT=${OUT:-models/efm_sft}
RUN=runs/stage1/$(basename "$OUT")

[ -d "$DEMOS" ] || $EFM collect-demos --episodes "$N" --out "$DEMOS" --seed 0 --workers 2 --no-progress
$EFM train-sft --demos "$DEMOS" --out "$RUN" --steps "$STEPS" --seed "$SEED" --threads "$THREADS" \
    --cache-dir data/stage1/feature_cache --no-progress ${SYMMETRIES:+--symmetries $SYMMETRIES}
$EFM export "$RUN" --out "$OUT" --version "$(basename "$OUT")" --force
du -sh "$OUT"
