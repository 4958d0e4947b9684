"""How well the learned reward tracks ground truth on the policy's OWN rollouts (issue 9, defect 5).

    .venv/bin/python tools/reward_probe.py [MODEL_DIR] [EPISODES] [SEED]    # default models/efm_sft 60 0

Rolls the exported policy out on the practice task (Block2Block on the embedded table) with the
product's termination (the learned detector, s and k from the manifest), recording the frozen
reward model's d and, for comparison only, the privileged oracle B d (experiment code:
``learn.oracle``) on every frame. Then, for each way of turning d into rewards (``REWARD_FILTERS``:
the paper's, and trailing medians, a candidate fix of defect 5 that the measurement rejected;
docs/results.md), it prints:

* per-transition return R_t (γ 0.9): Pearson and Spearman against the oracle's R_t;
* per-step reward sign agreement with the oracle (steps where the oracle moved);
* the detector's episode precision (it fired and the goal was reached at some frame) and recall;
* the mean |r_t| over all steps, the final reward r_{T-1} of episodes the detector ended (true
  firings vs false ones), and the share of false firings whose final reward is the episode's largest;
* then, on as many episodes ended by ground truth: the detector's precision and recall for other
  (s, k), and whether any reaches the issue's 0.9 / 0.8 (:func:`detector_frontier`).
"""
from __future__ import annotations

import multiprocessing as mp
import sys
from pathlib import Path

import numpy as np
from scipy.stats import pearsonr, spearmanr
from tqdm import tqdm

from efm_ros.learn.objectives import episode_returns
from efm_ros.learn.oracle import oracle_d_of
from efm_ros.learn.practice import _rollout_task, _worker_init
from efm_ros.model.bins import T_MAX
from efm_ros.model.manifest import verify_manifest
from efm_ros.robots import DEFAULT_ROBOT, practice_robot_kwargs


def trailing_median(d, window: int = 3) -> np.ndarray:
    """d̃_t = median(d_{t-window+1}, ..., d_t) (fewer frames at the start): a d that one frame
    cannot move. The candidate fix of issue 9's defect 5 (a one-frame dip of the learned d fires the
    detector falsely and its drop is credited to the last action); computable live."""
    d = np.asarray(d, dtype=np.float64)
    return np.array([np.median(d[max(0, t - window + 1):t + 1]) for t in range(len(d))])


#: how d becomes the reward's d before ``episode_returns`` ("paper": as is)
REWARD_FILTERS = {"paper": lambda d: np.asarray(d, dtype=np.float64),
                  "median3": lambda d: trailing_median(d, 3),
                  "median5": lambda d: trailing_median(d, 5)}


def main(argv: list[str]) -> int:
    model = Path(argv[0] if argv else "models/efm_sft")
    n = int(argv[1]) if len(argv) > 1 else 60
    seed = int(argv[2]) if len(argv) > 2 else 0
    size = verify_manifest(model)["preprocessing"]["image_size"]
    kwargs = practice_robot_kwargs(DEFAULT_ROBOT, {"image_size": size})
    tasks = [(str(model), str(model), 7_000_000 + seed * 10_000 + i, f"probe_{i:04d}", T_MAX, "approach", False)
             for i in range(n)]
    with mp.get_context("spawn").Pool(2, initializer=_worker_init, initargs=(DEFAULT_ROBOT, kwargs)) as pool:
        eps = list(tqdm(pool.imap(_rollout_task, tasks), total=n, desc="rollouts", unit="ep"))
    eps = [e for e in eps if e.num_steps > 0]
    reached = [any(bool(getattr(v, "data", v)) for _, v in e.extras["eval/success"]) for e in eps]
    fired = [e.outcome == "success" for e in eps]
    tp = sum(f and r for f, r in zip(fired, reached))
    print(f"{len(eps)} episodes; detector fired {sum(fired)}, goal reached {sum(reached)}; "
          f"episode precision {tp / max(sum(fired), 1):.2f}, recall {tp / max(sum(reached), 1):.2f}")
    oracle = [oracle_d_of(e) for e in eps]
    learned = [np.asarray(e.steps_to_go.expected_steps, np.float64) for e in eps]
    _, o_ret = zip(*(episode_returns(d) for d in oracle))
    o_rew = [np.diff(-d) for d in oracle]
    print(f"\n{'reward filter':14s} {'R_t pearson':>11s} {'R_t spearman':>12s} {'r_t sign agree':>14s} {'mean |r_t|':>10s} "
          f"{'final r: true / false firing':>29s} {'false firings whose final r is the largest':>44s}")
    for name, filt in REWARD_FILTERS.items():
        rew, ret = zip(*(episode_returns(filt(d)) for d in learned))
        R, RO = np.concatenate(ret), np.concatenate(o_ret)
        r, ro = np.concatenate(rew), np.concatenate(o_rew)
        moved = np.abs(ro) > 1e-6
        agree = float(np.mean(np.sign(r[moved]) == np.sign(ro[moved])))
        final_true = [x[-1] for x, f, g in zip(rew, fired, reached) if f and g]
        final_false = [x[-1] for x, f, g in zip(rew, fired, reached) if f and not g]
        largest = [x[-1] >= x.max() - 1e-9 for x, f, g in zip(rew, fired, reached) if f and not g]
        print(f"{name:14s} {pearsonr(R, RO)[0]:11.3f} {spearmanr(R, RO)[0]:12.3f} {agree:14.2f} {np.abs(r).mean():10.2f} "
              f"{np.mean(final_true) if final_true else float('nan'):14.2f} / {np.mean(final_false) if final_false else float('nan'):6.2f}"
              f"{np.mean(largest) if largest else float('nan'):30.2f} (of {len(largest)})")
    detector_frontier(model, kwargs, n, seed)
    return 0


def _full_length_rollout(args):
    """One episode of T_max steps: a detector that never fires (threshold below any d) ends nothing."""
    from efm_ros.learn.actors import rollout
    from efm_ros.learn.oracle import OracleStepsToGo
    from efm_ros.learn.practice import _CACHE, _model

    model_dir, seed = args
    never = OracleStepsToGo(_CACHE["robot"], "approach")
    never.success_threshold = -1.0
    return rollout(_CACHE["robot"], _model(model_dir), _model(model_dir), seed=seed, episode_id=f"full_{seed}",
                   max_steps=T_MAX, oracle=never, stop_on_oracle=True)


def detector_frontier(model: Path, kwargs: dict, n: int, seed: int) -> None:
    """Could another (s, k) make the learned detector work on the policy's own rollouts? Episodes
    run T_max steps (nothing ends them), with the learned d and ground truth on every frame; a
    detector (s, k) fires at the first frame where d <= s held for k frames. A firing is right
    when the goal is reached at that frame; episode precision = right firings / firings, recall =
    right firings / episodes that reach the goal at some frame."""
    from efm_ros.learn.objectives import consecutive_success

    tasks = [(str(model), 8_000_000 + seed * 10_000 + i) for i in range(n)]
    with mp.get_context("spawn").Pool(2, initializer=_worker_init, initargs=(DEFAULT_ROBOT, kwargs)) as pool:
        eps = list(tqdm(pool.imap(_full_length_rollout, tasks), total=n, desc="rollouts of T_max steps", unit="ep"))
    ds = [np.asarray(e.steps_to_go.expected_steps, np.float64) for e in eps]
    gts = [np.array([bool(getattr(v, "data", v)) for _, v in e.extras["eval/success"]]) for e in eps]
    reach = sum(bool(g.any()) for g in gts)
    print(f"\ndetector frontier: {len(eps)} episodes of {T_MAX} steps, {reach} reach the goal at some frame")
    rows = []
    for s_ in np.quantile(np.concatenate(ds), [0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12]):
        for k in (1, 2, 3, 4, 6):
            fired = [np.flatnonzero(consecutive_success(d, s_, k)) for d in ds]
            first = [int(f[0]) if len(f) else None for f in fired]
            right = sum(f is not None and bool(g[f]) for f, g in zip(first, gts))
            n_fired = sum(f is not None for f in first)
            rows.append((right / max(n_fired, 1), right / max(reach, 1), float(s_), k, n_fired))
    print(f"{'s':>7s} {'k':>3s} {'fired':>6s} {'precision':>10s} {'recall':>7s}")
    for prec, rec, s_, k, nf in sorted(rows, key=lambda r: (-r[0], -r[1]))[:12]:
        print(f"{s_:7.2f} {k:3d} {nf:6d} {prec:10.2f} {rec:7.2f}")
    ok = [r for r in rows if r[0] >= 0.9 and r[1] >= 0.8]
    print("a (s, k) with precision >= 0.9 and recall >= 0.8: " + (f"{ok[0][2]:.2f}, {ok[0][3]}" if ok else "none"))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
