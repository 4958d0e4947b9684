"""PRIVILEGED simulator oracles for the Stage-2 ladder (experiment code only; simulation only).

The ladder separates the learner from the reward model: a rung swaps the learned steps-to-go d
(reward) and/or the learned detector (termination) for ground truth read from the simulator's
state. Nothing in the product (``efm-ros improve``, ``up``, the nodes) can select these: they are
not in ImproveConfig, not on any command line of the product, and a test pins that.

``OracleStepsToGo(robot)`` has the reward model's interface (``steps_to_go``, ``success_threshold``,
``success_k``, ``version``), so the episode tracker can end episodes on it (threshold 0: the
oracle's d is 0 exactly when the simulator counts success) and the rollout records its d per frame.

Oracle A (``kind="goal"``): the target's distance to the goal beyond the success radius, in steps
of ``cm_per_step`` (the demonstrator's mean progress, 0.44 cm/step on the embedded table).
Oracle B (``kind="approach"``): A plus the pusher's distance to the contact point behind the
target (the approach the demonstrator also spends steps on), in the same unit.
"""
from __future__ import annotations

import json

import numpy as np

ORACLE_D_KEY = "oracle_d"
"""Episode.custom_data key: JSON list of the oracle's d per frame (in-process episodes only)"""


class OracleStepsToGo:
    def __init__(self, robot, kind: str = "goal", cm_per_step: float = 0.44, bins: int = 50):
        if kind not in ("goal", "approach"):
            raise ValueError(f"unknown oracle {kind!r}: 'goal' (A) or 'approach' (B)")
        self.robot, self.kind, self.cm_per_step, self.bins = robot, kind, float(cm_per_step), bins
        self.success_threshold, self.success_k = 0.0, 1
        self.version = f"oracle-{kind}"

    def d(self) -> float:
        st = self.robot.state()
        steps = max(st["goal_distance"] - st["success_radius"], 0.0) / self.cm_per_step
        if self.kind == "approach" and steps > 0:
            target = st["objects"][st["task"].target]
            away = target["position"] - st["goal"]
            contact = target["position"] + away / (np.linalg.norm(away) + 1e-9) * (target["radius"] + st["ee_radius"])
            steps += float(np.linalg.norm(st["ee"] - contact)) / st["max_step"]
        return float(steps)

    def steps_to_go(self, frame, prev, text):
        d = self.d()
        dist = np.zeros(self.bins, np.float32)
        dist[min(int(d // 2), self.bins - 1)] = 1.0
        return d, dist


def oracle_d_of(episode) -> np.ndarray:
    """The oracle's d per frame, recorded by ``actors.rollout(..., oracle=...)``: the reward source
    the ladder's oracle-reward rungs hand to the Improver."""
    if ORACLE_D_KEY not in episode.custom_data:
        raise KeyError(f"episode {episode.episode_id} has no oracle d (rolled out without an oracle)")
    return np.asarray(json.loads(episode.custom_data[ORACLE_D_KEY]), np.float64)
