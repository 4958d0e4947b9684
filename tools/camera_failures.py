"""How does a camera policy fail? (docs/results.md, rung a from the symmetric Stage 1; privileged state,
experiment code only — the policy never sees it)

    .venv/bin/python tools/camera_failures.py MODEL_DIR [MODEL_DIR ...] [--episodes 200]
    # e.g. models/efm_sft runs/ladder/a_sym_all_6k/seed0/si/versions/v0008

Each model runs the comparison episodes exactly as `efm-ros eval` / `success_on_fixed_episodes` runs
them (COMPARISON_SEED, Block2Block, sampled actions, ground-truth stop), one process; the simulator's
state is read after every step. Every failed episode is put in the first class it fits:

  wrong block   the target moved < 1 cm and another block moved > 3 cm
  untouched     the target moved < 1 cm (nothing else much either)
  pushed away   the target ended further from its goal than it started
  near miss     the target came within 3 cm of the success radius
  short         the target went towards its goal and stopped short

Of the pushed-away ones: how many overshot (came within 3 cm of the success radius first), the angle
between the way the target went and the way to its goal at the start, and how often the reference
block (Block2Block's goal) was itself pushed more than 3 cm. Across classes: how many ended with the
target against a wall (its edge within 1 cm of the table's). Success and the classes are also split
by the target's starting distance to its goal. The episodes are `eval`'s own loop
(``learn.evaluate._Evaluator.run``); the tool only reads the robot's state around its reset and steps.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np


def geometry(states: list[dict]) -> dict:
    """One episode's simulator states (``TabletopRobot.state()``, reset first) -> distances in cm."""
    target = states[0]["task"].target
    pos = {n: np.array([s["objects"][n]["position"] for s in states]) for n in states[0]["objects"]}
    moved = {n: float(np.linalg.norm(p[-1] - p[0])) for n, p in pos.items()}
    dist = np.array([s["goal_distance"] for s in states])
    size, r = states[-1]["table_size"], states[-1]["objects"][target]["radius"]
    end = pos[target][-1]
    edge = float(min(end.min(), (size - end).min())) - r          # the target's edge to the nearest wall
    way, want = pos[target][-1] - pos[target][0], states[0]["goal"] - pos[target][0]
    cos = float(way @ want / (np.linalg.norm(way) * np.linalg.norm(want) + 1e-9))
    return {"start": float(dist[0]), "end": float(dist[-1]), "closest": float(dist.min()),
            "heading": float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))),
            "radius": float(states[-1]["success_radius"]), "target_moved": moved[target],
            "reference_moved": moved.get(states[0]["task"].reference, 0.0),
            "other_moved": max((m for n, m in moved.items() if n != target), default=0.0), "wall": edge < 1.0}


def failure_class(g: dict) -> str:
    if g["target_moved"] < 1.0:
        return "wrong block" if g["other_moved"] > 3.0 else "untouched"
    if g["end"] > g["start"]:
        return "pushed away"
    if g["closest"] < g["radius"] + 3.0:
        return "near miss"
    return "short"


CLASSES = ("wrong block", "untouched", "pushed away", "near miss", "short")


def run(model: str, episodes: int) -> list[tuple[bool, dict]]:
    from tqdm import tqdm

    from efm_ros.learn.evaluate import COMPARISON_SEED, EvalConfig, _Evaluator

    ev = _Evaluator(EvalConfig(model_dir=model, seed=COMPARISON_SEED, families=("block2block",)))
    robot, states = ev.robot, []
    reset, step = robot.reset, robot.step

    def reset_and_keep(*a, **k):
        out = reset(*a, **k)
        states[:] = [robot.state()]
        return out

    def step_and_keep(action):
        out = step(action)
        states.append(robot.state())
        return out

    robot.reset, robot.step = reset_and_keep, step_and_keep
    rows = []
    for i in tqdm(range(episodes), desc=model, leave=False):
        r = ev.run(i)
        rows.append((bool(r["success"]), geometry(states)))
    return rows


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--episodes", type=int, default=200)
    args = ap.parse_args(argv)
    for model in args.models:
        rows = run(model, args.episodes)
        ok = np.array([s for s, _ in rows])
        fails = [g for s, g in rows if not s]
        classes = [failure_class(g) for g in fails]
        print(f"{model}: success {ok.mean():.3f} ({ok.sum()}/{len(ok)}); failures {len(fails)}: " + ", ".join(
            f"{c} {classes.count(c)}" for c in CLASSES) + f"; target against a wall at the end {sum(g['wall'] for g in fails)}")
        away = [g for g in fails if failure_class(g) == "pushed away"]
        if away:
            heading = np.array([g["heading"] for g in away])
            print(f"  pushed away: {sum(g['closest'] < g['radius'] + 3.0 for g in away)} of {len(away)} came within 3 cm of "
                  "the success radius first (overshot); the target's way against the way to its goal at the start: "
                  + ", ".join(f"[{lo}, {lo + 45})° {int(((heading >= lo) & (heading < lo + 45)).sum())}"
                              for lo in (0, 45, 90, 135))
                  + f"; the reference block moved > 3 cm in {sum(g['reference_moved'] > 3.0 for g in away)}", flush=True)
        start = np.array([g["start"] for _, g in rows])
        edges = [0.0, *np.percentile(start, [100 / 3, 200 / 3]), np.inf]
        for lo, hi in zip(edges, edges[1:]):
            sel = [(s, g) for s, g in rows if lo <= g["start"] < hi]
            cl = [failure_class(g) for s, g in sel if not s]
            print(f"  start [{lo:.0f}, {hi:.0f}) cm: success {np.mean([s for s, _ in sel]):.2f} of {len(sel)}; "
                  + ", ".join(f"{c} {cl.count(c)}" for c in CLASSES), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
