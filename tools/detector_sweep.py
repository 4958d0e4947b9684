"""Could any operating point make the success detector good on the policy's own rollouts?
(docs/results.md, the detector; experiment code: it reads the simulator's ground truth.)

    .venv/bin/python tools/detector_sweep.py EVAL_DIR [EVAL_DIR ...] [--min-precision 0.9]
    # e.g. runs/probe/eval_efm_sft_200 (written by `efm-ros eval --out`, e.g. tools/stage1_probe.sh)

`efm-ros eval` keeps every rollout's d and per-frame ground truth (traces.npz). This replays the
k-tick detector (calibrate.sweep_operating_points, judged at its first firing as a deployed robot
would end the episode) at every s on a grid and k in 1..6, as ``efm-ros calibrate`` does on marked
bags, and prints the calibrated point, the best recall among the points whose episode precision
reaches --min-precision, the best F1 (calibrate's default choice) with its outcome mix, and how
well d separates goal frames and reached episodes at any operating point (ROC AUC).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from efm_ros.learn.calibrate import choose_operating_point, episode_level_detection, roc_curve, sweep_operating_points


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("eval_dirs", nargs="+")
    p.add_argument("--min-precision", type=float, default=0.9)
    args = p.parse_args(argv)
    for path in args.eval_dirs:
        z = np.load(Path(path) / "traces.npz")
        off = z["offsets"]
        d = [z["d"][a:b] for a, b in zip(off[:-1], off[1:])]
        goals = [z["ground_truth"][a:b].astype(bool) for a, b in zip(off[:-1], off[1:])]
        points = sweep_operating_points(d, goals)
        cal = episode_level_detection(d, goals, float(z["s"]), int(z["k"]))
        print(f"{path}: {len(d)} rollouts, {sum(g.any() for g in goals)} reached their goal")
        print(f"  calibrated s {float(z['s']):.2f}, k {int(z['k'])}: precision {cal.precision or 0:.2f}, "
              f"recall {cal.recall or 0:.2f}")
        best, method = choose_operating_point(points, args.min_precision)
        if method == "recall_at_precision":
            print(f"  best recall at precision >= {args.min_precision:g}: {best.recall:.2f} (s {best.s:g}, k {best.k})")
        else:
            p = max(points, key=lambda r: (r.precision or 0.0, r.recall or 0.0))
            print(f"  no point reaches precision {args.min_precision:g}; the most precise: "
                  f"{p.precision or 0:.2f} / {p.recall or 0:.2f} (s {p.s:g}, k {p.k})")
        r, _ = choose_operating_point(points)
        print(f"  best F1: {r.f1:.2f} = precision {r.precision or 0:.2f}, recall {r.recall or 0:.2f} (s {r.s:g}, k {r.k})")
        early = [e.early_by for e in r.episodes if e.outcome == "early"]
        print(f"  there: {r.counts}; early by 1-2 steps: {sum(e <= 2 for e in early)} of {len(early)}")
        # separation, whatever the operating point: frames (goal vs not) and episodes (reached vs min d)
        frame_auc = roc_curve(np.concatenate(d), np.concatenate(goals)).auc()
        reached = np.array([g.any() for g in goals])
        episode_auc = roc_curve(np.array([x.min() for x in d]), reached).auc()
        fail_min = np.array([x.min() for x, g in zip(d, goals) if not g.any()])
        pre_goal = [x[:int(np.argmax(g))].min() for x, g in zip(d, goals) if g.any() and np.argmax(g) > 0]
        at_goal = [x[int(np.argmax(g))] for x, g in zip(d, goals) if g.any()]
        print(f"  AUC: frames {frame_auc:.3f}, episodes (min d) {episode_auc:.3f}; median d at the goal "
              f"{np.median(at_goal):.2f}, before it {np.median(pre_goal):.2f}; min d of episodes that never reach it: "
              f"median {np.median(fail_min):.2f}, 10th percentile {np.percentile(fail_min, 10):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
