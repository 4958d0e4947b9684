"""How do the state rung's policies fail? (docs/results.md, state rung; privileged state, experiment only)

    .venv/bin/python tools/state_failures.py STAGE1_DIR POLICY [POLICY ...]
    # e.g. runs/ladder/state_chosen_keep/seed0/stage1 \
    #      runs/ladder/state_chosen_keep/seed0/stage1/policy.safetensors runs/ladder/state_chosen_keep/seed0/policy_after.safetensors

Each policy runs the rung's 300 evaluation episodes (seed 55,000, sampled actions, oracle
termination; STAGE1_DIR's reward model only fills the rollouts' d). From the true state of every
frame: the target's distance to the goal (at the start, its minimum, at the end), the pusher's
closest approach to the target, and how far the target moved. Failures are then counted as near
misses (the target ended < 5 cm from the goal, or came within 3 cm of it) or lost blocks (ended
further from the goal than it started), and success is split by the starting distance (terciles).
"""
from __future__ import annotations

import sys

import numpy as np
import torch


def episode_geometry(states: np.ndarray, table_size: float) -> dict:
    """One episode's privileged states (``tablestate.state_vector`` rows) -> distances in cm."""
    s = states * table_size
    ee, target, goal = s[:, 0:2], s[:, 2:4], s[:, 4:6]
    to_goal = np.linalg.norm(target - goal, axis=1)
    return {"steps": len(states) - 1, "start": to_goal[0], "end": to_goal[-1], "closest": to_goal.min(),
            "approach": np.linalg.norm(ee - target, axis=1).min(), "moved": np.linalg.norm(target[-1] - target[0])}


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    from efm_ros.learn.pointmass import rollouts
    from efm_ros.learn.tablestate import table_task
    from efm_ros.model.network import load_checkpoint
    from efm_ros.sim.tabletop import TabletopRobot

    torch.set_num_threads(1)
    size = TabletopRobot(seed=0).state()["table_size"]
    task = table_task("approach")
    reward = load_checkpoint(f"{argv[0]}/reward_model.safetensors")
    for path in argv[1:]:
        eps = rollouts(load_checkpoint(path), reward, 300, seed=55_000, task=task)
        geo = [episode_geometry(e["states"], size) for e in eps]
        ok = np.array([e["success"] for e in eps])
        fails = [g for g, s in zip(geo, ok) if not s]

        def med(key, rows):
            v = np.array([r[key] for r in rows])
            return f"{np.median(v):.1f} [{np.percentile(v, 25):.1f}, {np.percentile(v, 75):.1f}]"

        print(f"{path}: success {ok.mean():.3f} ({ok.sum()}/{len(ok)}); "
              f"successful episodes' length {med('steps', [g for g, s in zip(geo, ok) if s])}")
        print("  failures, cm, median [IQR]: target to goal at the start", med("start", fails), "closest", med("closest", fails),
              "end", med("end", fails), "| pusher's closest approach", med("approach", fails), "| target moved", med("moved", fails))
        print(f"  failures: {len(fails)}; near misses (end < 5 cm or once < 3 cm) "
              f"{sum(g['end'] < 5 or g['closest'] < 3 for g in fails)}; target never moved (< 0.5 cm) "
              f"{sum(g['moved'] < 0.5 for g in fails)}; ended further from the goal than it started "
              f"{sum(g['end'] > g['start'] for g in fails)}")
        start = np.array([g["start"] for g in geo])
        edges = [0.0, *np.percentile(start, [100 / 3, 200 / 3]), np.inf]
        print("  success by starting distance: " + ", ".join(
            f"[{lo:.0f}, {hi:.0f}) cm {ok[(start >= lo) & (start < hi)].mean():.2f}" for lo, hi in zip(edges, edges[1:])),
            flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
