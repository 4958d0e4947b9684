"""Is a sharper Stage-1 policy a better one? (docs/results.md, rung a)

    .venv/bin/python tools/temperature_probe.py MODEL_DIR TAU [TAU ...]    # models/efm_sft 0.5 0.7 0.85
    .venv/bin/python tools/temperature_probe.py STAGE1_CACHE TAU [TAU ...] # the state rung's Stage 1, e.g.
        runs/cache/stage1/table-state-edc85a682e45f49c 1 0.7 0.5 0            (τ 0: greedy; ~1 min per τ)

For each τ: the policy's action logits divided by τ (the action head's weight and bias scaled).
An exported model: exported next to MODEL_DIR's unchanged reward graph into
runs/probe/temperature_<τ>, and evaluated on the fixed comparison episodes (100 Block2Block
episodes, sampled actions, ground truth). A state-rung Stage-1 checkpoint (policy.safetensors,
from ``efm-ros experiment ladder --rung state --stage1-cache``): 300 episodes of the rung's
evaluation (seed 55,000, the ladder's before/after episodes of seed 0), oracle termination.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from efm_ros.learn.evaluate import success_on_fixed_episodes
from efm_ros.model.export import export_model, load_model_checkpoints
from efm_ros.model.manifest import verify_manifest
from efm_ros.model.text import InstructionTable


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    src, taus = Path(argv[0]), [float(x) for x in argv[1:]]
    if not (src / "manifest.json").exists():      # an exported model holds policy.safetensors too
        return state_rung(src, taus)
    m = verify_manifest(src)
    for tau in taus:
        out = Path("runs/probe") / f"temperature_{tau}"
        policy, _ = load_model_checkpoints(src)
        with torch.no_grad():
            policy.trunk.action_head.weight /= tau
            policy.trunk.action_head.bias /= tau
        export_model(policy, out, instructions=InstructionTable.load(src / m["instructions"]["file"]),
                     success_threshold=m["success"]["threshold_steps"], success_k=m["success"]["consecutive"],
                     control_rate_hz=m["control_rate_hz"], data_hash=m.get("data_hash", ""), metrics={},
                     model_version=f"{m['model_version']}-tau{tau}", overwrite=True, reward_from=src)
        print(tau, json.dumps(success_on_fixed_episodes(out, 100, workers=2, families=["block2block"])), flush=True)
    return 0


def state_rung(cache: Path, taus: list[float], episodes: int = 300) -> int:
    from efm_ros.learn.pointmass import rollouts, summarise
    from efm_ros.learn.tablestate import table_task
    from efm_ros.model.network import load_checkpoint

    torch.set_num_threads(1)
    task = table_task("approach")
    reward = load_checkpoint(cache / "reward_model.safetensors")
    for tau in taus:
        policy = load_checkpoint(cache / "policy.safetensors")
        if tau > 0:
            with torch.no_grad():
                policy.trunk.action_head.weight /= tau
                policy.trunk.action_head.bias /= tau
        s = summarise(rollouts(policy, reward, episodes, seed=55_000, task=task, greedy=tau == 0))
        print(tau or "greedy", json.dumps(s), flush=True)
    return 0


if __name__ == "__main__":   # the evaluation workers are spawned processes
    raise SystemExit(main(sys.argv[1:]))
