"""The authors' pointmass toy (PAPER.md §4.7, the official notebook), vectorised over many copies.

Rung 0 of the Stage-2 ladder (``efm-ros experiment ladder --rung pointmass``): the cheapest test
that our Stage-1 and Stage-2 code does what the paper's does, on a task where the answer is known
(SFT ≈ 92 % → SI ≈ 100 %, episodes ≈ 69 → 13 steps).

Environment (the notebook's, unchanged):
* state: position and velocity in 2-D plus the goal position, observed as [pos, vel, goal] (6 floats);
* the start is uniform over [−1, 1]², the goal uniform with a 5 % border; no walls;
* one step = 10 physics substeps of ``vel += action; pos += vel`` (no damping, no clipping);
* success: within 0.15 of the goal; at most 140 steps.

Demonstrator: the notebook's PD controller a = Kp (target − pos) − Kd vel, Kp 2e-4, Kd 1.25e-2,
deliberately sub-optimal: it visits ``waypoints`` random waypoints (switching once within 0.15 of
the current one) before the goal; episodes shorter than 10 steps are discarded.

Everything here is privileged simulator state; it lives in experiment code only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KP, KD = 2e-4, 1.25e-2
SUBSTEPS = 10
SUCCESS_RADIUS = 0.15
MAX_STEPS = 140
GOAL_BORDER = 0.05
STATE_DIM = 6


def sample_goals(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 2) goals (and waypoints), uniform over the box less a 5 % border."""
    lo, hi = -1.0 + 2.0 * GOAL_BORDER, 1.0 - 2.0 * GOAL_BORDER
    return rng.uniform(lo, hi, size=(n, 2))


def pd_action(pos: np.ndarray, vel: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The notebook's PD controller (per row)."""
    return KP * (target - pos) - KD * vel


@dataclass
class PointMass:
    """``n`` independent pointmasses stepped together (float64 state, float32 observations)."""

    n: int
    seed: int = 0

    def __post_init__(self):
        self.rng = np.random.default_rng(self.seed)
        self.pos = np.zeros((self.n, 2))
        self.vel = np.zeros((self.n, 2))
        self.goal = np.zeros((self.n, 2))

    def reset(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Reset the given rows (default all): uniform start at rest, a new goal."""
        rows = np.arange(self.n) if rows is None else np.asarray(rows)
        k = len(rows)
        self.goal[rows] = sample_goals(self.rng, k)
        self.pos[rows] = self.rng.uniform(-1.0, 1.0, size=(k, 2))
        self.vel[rows] = 0.0
        return self.observe()

    def observe(self) -> np.ndarray:
        """(n, 6) float32 [pos, vel, goal]."""
        return np.concatenate([self.pos, self.vel, self.goal], axis=1).astype(np.float32)

    def step(self, action: np.ndarray, rows: np.ndarray | None = None) -> None:
        """Apply (k, 2) actions to the given rows (default all) for 10 substeps."""
        rows = np.arange(self.n) if rows is None else np.asarray(rows)
        a = np.asarray(action, np.float64).reshape(len(rows), 2)
        for _ in range(SUBSTEPS):
            self.vel[rows] += a
            self.pos[rows] += self.vel[rows]

    def success(self, target: np.ndarray | None = None) -> np.ndarray:
        """(n,) bool: within 0.15 of the goal (or of ``target``)."""
        t = self.goal if target is None else target
        return np.linalg.norm(self.pos - t, axis=1) < SUCCESS_RADIUS


@dataclass
class StateEpisode:
    """One demonstration or rollout: T actions, T + 1 observations."""

    states: np.ndarray
    """float32 (T + 1, 6)"""
    actions: np.ndarray
    """float32 (T, 2)"""
    success: bool


def demonstrations(num: int, seed: int, waypoints: int = 5, min_steps: int = 10, batch: int = 256,
                   max_steps: int = 2000) -> list[StateEpisode]:
    """``num`` successful PD demonstrations through ``waypoints`` random waypoints (the notebook's
    data: the goal is reached at the last frame; shorter than ``min_steps`` are discarded)."""
    out: list[StateEpisode] = []
    env = PointMass(batch, seed)
    while len(out) < num:
        env.reset()
        wp = [sample_goals(env.rng, batch) for _ in range(waypoints)] + [env.goal.copy()]
        idx = np.zeros(batch, np.int64)
        target = np.stack([wp[i][r] for r, i in enumerate(idx)]) if waypoints else env.goal.copy()
        states, actions = [env.observe()], []
        done = env.success()
        end = np.where(done, 0, -1)
        for t in range(max_steps):
            reached = np.linalg.norm(env.pos - target, axis=1) < SUCCESS_RADIUS
            idx = np.where(reached & (idx < waypoints), idx + 1, idx)
            target = np.stack([wp[i][r] for r, i in enumerate(idx)])
            a = pd_action(env.pos, env.vel, target)
            actions.append(a.astype(np.float32))
            env.step(a)
            states.append(env.observe())
            done_now = env.success() & (end < 0)
            end[done_now] = t + 1
            if (end >= 0).all():
                break
        S, A = np.stack(states, 1), np.stack(actions, 1)
        for r in range(batch):
            T = int(end[r])
            if T >= min_steps and len(out) < num:
                out.append(StateEpisode(S[r, :T + 1], A[r, :T], True))
    return out
