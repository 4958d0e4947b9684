"""Self-improvement on the embedded robot without ROS: actors in worker processes + one learner.

This is Algorithm 1 with the fleet simulated in-process (for experiments that need many episodes
on 2 CPU cores): workers roll out the CURRENT policy version on their own embedded robot
(:func:`efm_ros.learn.actors.rollout`, same episode rules and models as the live graph); the
learner (:class:`efm_ros.learn.improve.Improver`, the same one ``efm-ros improve`` runs) takes the
episodes, and once its buffer holds N·B on-policy transitions it updates, exports the next version
and the actors switch to it (actors pause during the update, as in the paper's infrastructure).
It stops when the episode budget is spent.

    result = practise_sim(policy_dir, reward_dir, out_dir, episode_budget=400, workers=2, seed=0)
"""
from __future__ import annotations

import multiprocessing as mp
import time
from dataclasses import dataclass, field
from pathlib import Path

from efm_ros.learn.improve import ImproveConfig, Improver
from efm_ros.model.bins import T_MAX
from efm_ros.robots import DEFAULT_ROBOT, practice_robot_kwargs

_CACHE: dict = {}


def _worker_init(robot: str, robot_kwargs: dict) -> None:
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from efm_ros.robots import make_robot

    _CACHE.clear()
    _CACHE["robot"] = make_robot(robot, **robot_kwargs)


def _model(path: str):
    from efm_ros.model.runtime import load_model

    if path not in _CACHE:
        for key in [k for k in _CACHE if k != "robot"]:
            del _CACHE[key]  # keep only the current versions loaded
        _CACHE[path] = load_model(path, intra_op_threads=1)
    return _CACHE[path]


def _rollout_task(args):
    from efm_ros.learn.actors import rollout

    policy_dir, reward_dir, seed, episode_id, max_steps, oracle_kind, stop_on_oracle = args
    policy, reward = _model(policy_dir), _model(reward_dir)
    oracle = None
    if oracle_kind:
        from efm_ros.learn.oracle import OracleStepsToGo

        oracle = OracleStepsToGo(_CACHE["robot"], oracle_kind)
    return rollout(_CACHE["robot"], policy, reward, seed=seed, episode_id=episode_id, max_steps=max_steps,
                   rng=None, oracle=oracle, stop_on_oracle=stop_on_oracle)


@dataclass
class PracticeResult:
    """What a practice run produced."""

    out_dir: Path
    episodes: int
    iterations: int
    final_version_dir: Path
    best_version_dir: Path | None
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def practise_sim(policy_dir: str | Path, reward_dir: str | Path, out_dir: str | Path, *, episode_budget: int,
                 config: ImproveConfig | None = None, workers: int = 2, seed: int = 0, max_steps: int = T_MAX,
                 robot: str = DEFAULT_ROBOT, robot_kwargs: dict | None = None, progress: bool = True,
                 oracle: str = "", oracle_reward: bool = False, oracle_termination: bool = False) -> PracticeResult:
    """Practise until ``episode_budget`` episodes have been collected; returns the versions made.

    robot / robot_kwargs: the robot backend (:func:`efm_ros.robots.make_robot`) and its constructor
    arguments, completed by its practice task (:func:`efm_ros.robots.practice_robot_kwargs`) and
    the model's frame size; for the embedded table e.g. {} (Block2Block, the paper's practice task)
    or {"variant": "novel_bar"} (the novel object).
    oracle ("goal" / "approach", experiment code only: the Stage-2 ladder): privileged simulator d
    recorded per frame; ``oracle_reward`` makes it the learner's reward, ``oracle_termination``
    ends the episodes on it (ground truth) instead of the learned detector.
    """
    import json

    from tqdm import tqdm

    t0 = time.monotonic()
    out_dir = Path(out_dir)
    if (oracle_reward or oracle_termination) and not oracle:
        raise ValueError("oracle_reward / oracle_termination need an oracle kind")
    reward_source = None
    if oracle_reward:
        from efm_ros.learn.oracle import oracle_d_of as reward_source
    imp = Improver(policy_dir, reward_dir, out_dir, config or ImproveConfig(seed=seed), reward_source=reward_source,
                   termination_by_oracle=oracle_termination)
    current = Path(policy_dir)
    from efm_ros.model.manifest import verify_manifest

    image_size = verify_manifest(policy_dir)["preprocessing"]["image_size"]
    robot_kwargs = practice_robot_kwargs(robot, {"image_size": image_size, **(robot_kwargs or {})})
    ctx = mp.get_context("spawn")
    done = 0
    bar = tqdm(total=episode_budget, desc="practice", unit="ep", disable=not progress)
    with ctx.Pool(workers, initializer=_worker_init, initargs=(robot, robot_kwargs)) as pool:
        while done < episode_budget:
            # one wave of episodes with the current version; the learner needs >= N·B transitions
            wave = min(max(workers, 4), episode_budget - done)
            tasks = [(str(current), str(reward_dir), seed * 1_000_003 + done + i, f"si_s{seed}_e{done + i:06d}", max_steps,
                      oracle, oracle_termination) for i in range(wave)]
            for ep in pool.imap(_rollout_task, tasks):
                imp.add_episode(ep)
                done += 1
                bar.update(1)
            if imp.ready():
                row = imp.publish(imp.update())
                current = out_dir / "versions" / f"v{imp.iteration:04d}"
                bar.set_postfix({"it": imp.iteration, "gt": f"{row.get('gt_success_rate', float('nan')):.2f}",
                                 "det": f"{row.get('detector_success_rate', float('nan')):.2f}"})
    bar.close()
    best = None
    if (out_dir / "best.json").exists():
        best = out_dir / json.loads((out_dir / "best.json").read_text())["directory"]
    return PracticeResult(out_dir, done, imp.iteration, current, best, imp.history, time.monotonic() - t0)
