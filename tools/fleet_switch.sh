#!/bin/bash
# The coordinated fleet's pause and switch times at N robots (issue 12), one run:
#     tools/fleet_switch.sh [ROBOTS] [LAYOUT]        # default 8 per-type (one process per node type)
# The trainer makes 4 coordinated updates of N·B = 4·64 transitions; RUN/si/fleet.json is printed.
set -u
cd "$(dirname "$0")/.."
robots=${1:-8}; layout=${2:-per-type}
out=runs/fleet_switch_${robots}_${layout}; rm -rf "$out"; mkdir -p "$out"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-77} FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA PYTHONUNBUFFERED=1
.venv/bin/efm-ros improve --episodes-dir "$out/episodes" --policy models/efm_sft --reward-model models/efm_sft \
   --out "$out/si" --coordinate --iterations 4 --updates 4 --batch-size 64 --pause-timeout-s 40 > "$out/improve.log" 2>&1 &
trainer=$!
.venv/bin/efm-ros up --robots "$robots" --processes "$layout" --model models/efm_sft --episodes-dir "$out/episodes" \
   --watch-dir "$out/si/versions" > "$out/graph.log" 2>&1 &
graph=$!
for _ in $(seq 1 120); do sleep 5; kill -0 $trainer 2>/dev/null || break; done
kill -INT $graph $trainer 2>/dev/null; sleep 15; kill -9 $graph $trainer 2>/dev/null
.venv/bin/python -c "
import json
for e in json.load(open('$out/si/fleet.json')):
    print({k: e.get(k) for k in ('iteration', 'robots', 'settle_s', 'update_s', 'export_s', 'switch_s', 'not_swapped')})"
