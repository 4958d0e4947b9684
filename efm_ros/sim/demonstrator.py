"""Scripted demonstrations on the embedded table, and the episode runner the collector uses.

:class:`ScriptedDemonstrator` reads the simulator's ground-truth state and pushes the target
object towards its goal: it walks round the object to the point behind it (seen from the goal),
lines up, and pushes through the object's centre. It is competent but deliberately imperfect, so
that more demonstrations help little and practice helps a lot (paper §4): Gaussian action noise,
a per-episode speed, random detours to random waypoints (sometimes before it starts, sometimes
mid-push) and a per-episode alignment tolerance. With the defaults (noise_std 0.05, speed 0.8-1.0) it
succeeds in ~99 % of episodes within 100 steps (98.7 % of seeds 0..299; 98.9 % of the 3237
attempts of ``collect-demos --episodes 3200 --seed 0``), in 17-51 steps (10th-90th percentile,
mean ~33), about 1.3x as long as its noise- and detour-free self (mean 25), so practice can still
shorten it. Failures are mostly a target wedged against another block, or too many detours.
(Until the Stage-1 re-run the defaults were noise_std 0.2, speed 0.5-1.0: 97 %, mean ~44 steps,
but labels so noisy that even a policy on the true state learnt little from them.)

The novel bar (variant ``novel_bar``) is never demonstrated: the demonstrator refuses its tasks
with ValueError, as the paper's BananaTable has no demonstrations at all.

:func:`run_episode` runs any :class:`Policy` on a :class:`~efm_ros.sim.tabletop.TabletopRobot`
and returns an :class:`EpisodeRollout`; :func:`run_demo_episode` is the demonstration case: the
episode ends at the first step where ground-truth success holds, so a successful demo ends at its
goal and its steps-to-go labels are T - t. Failed rollouts (for calibrating a success threshold,
or as negative examples) come from :class:`RandomPolicy` or a very noisy demonstrator.
Everything is deterministic per episode seed (the policy's generator is seeded from it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from efm_ros.robots.rollout import EpisodeRollout, ar1_action, run_expert_episode
from efm_ros.sim.instructions import Task
from efm_ros.sim.tabletop import TabletopRobot, check_action

DEFAULT_MAX_STEPS = 100
"""episode step limit; steps-to-go labels then span 0..100 (the paper's LanguageTable range)"""


class Policy(Protocol):
    """A state-based policy for :func:`run_episode`."""

    def reset(self, seed: int, task: Task) -> None:
        """Start an episode (seed its own generator from ``seed``)."""

    def act(self, state: dict[str, Any]) -> np.ndarray:
        """Action for the state from :meth:`TabletopRobot.state`."""


@dataclass(frozen=True)
class DemonstratorConfig:
    """How sloppy the scripted demonstrator is (actions are in normalised units, |a| <= 1)."""

    noise_std: float = 0.05
    """Gaussian noise added to each action component every step (0.2 until the Stage-1 re-run: it
    made the action labels so noisy that even a policy on the TRUE state reached only ~33 % from
    400 demos, against ~42 % at 0.05; docs/results.md, Stage 1)"""
    speed_range: tuple[float, float] = (0.8, 1.0)
    """per-episode speed: norm of the noise-free action while travelling and pushing"""
    start_detour_prob: float = 0.25
    """probability of first wandering to a random waypoint before going to the object"""
    detour_prob: float = 0.02
    """per-step probability of breaking off for a short detour to a random waypoint"""
    detour_steps: tuple[int, int] = (3, 8)
    """length range (inclusive) of a detour, control steps"""
    align_tol_range: tuple[float, float] = (0.6, 1.6)
    """per-episode tolerance (cm) on the sideways offset from the push line before pushing"""

    def __post_init__(self) -> None:
        if self.noise_std < 0 or not 0 < self.speed_range[0] <= self.speed_range[1] <= 1:
            raise ValueError(f"bad noise_std/speed_range in {self}")
        if not (0 <= self.start_detour_prob <= 1 and 0 <= self.detour_prob <= 1):
            raise ValueError(f"detour probabilities must be in [0, 1]: {self}")
        if not 1 <= self.detour_steps[0] <= self.detour_steps[1]:
            raise ValueError(f"bad detour_steps {self.detour_steps}")
        if not 0 < self.align_tol_range[0] <= self.align_tol_range[1]:
            raise ValueError(f"bad align_tol_range {self.align_tol_range}")


class ScriptedDemonstrator:
    """Pushes the target object to its goal using the simulator's ground-truth state."""

    def __init__(self, config: DemonstratorConfig | None = None, **overrides: Any) -> None:
        self.config = replace(config or DemonstratorConfig(), **overrides)
        self._rng = np.random.default_rng(0)
        self._task: Task | None = None

    def reset(self, seed: int, task: Task) -> None:
        """Start an episode. Raises ValueError for the novel bar (never demonstrated)."""
        if task.family == "bar2location":
            raise ValueError("the novel bar is never demonstrated (like the paper's BananaTable); "
                             "it is learnt by practice only")
        cfg = self.config
        self._rng = np.random.default_rng([int(seed), 0xDE40])  # a stream apart from the robot's
        self._task = task
        self._speed = float(self._rng.uniform(*cfg.speed_range))
        self._align_tol = float(self._rng.uniform(*cfg.align_tol_range))
        self._side = 1.0 if self._rng.random() < 0.5 else -1.0  # way round an object when head-on
        self._detour_left = 0
        self._detour_at = np.zeros(2)
        if self._rng.random() < cfg.start_detour_prob:
            self._start_detour()

    def act(self, state: dict[str, Any]) -> np.ndarray:
        """Next action (float64, norm <= 1) for a :meth:`TabletopRobot.state` dict."""
        if self._task is None:
            raise RuntimeError("call reset(seed, task) before act()")
        if self._detour_left == 0 and self._rng.random() < self.config.detour_prob:
            self._start_detour()
        if self._detour_left > 0:
            self._detour_left -= 1
            a = self._toward(state, self._detour_at * state["table_size"])
        else:
            a = self._push(state)
        a = a + self._rng.normal(0.0, self.config.noise_std, 2)
        return check_action(a)

    # ---------------------------------------------------------------------------------- internals
    def _start_detour(self) -> None:
        lo, hi = self.config.detour_steps
        self._detour_left = int(self._rng.integers(lo, hi + 1))
        self._detour_at = self._rng.uniform(0.15, 0.85, 2)  # waypoint, as fractions of the table

    def _toward(self, state: dict[str, Any], point: np.ndarray) -> np.ndarray:
        """Proportional move to ``point``: this episode's speed until within one step of it."""
        delta = (point - state["ee"]) / state["max_step"]  # in actions: 1 = one full step
        n = math.hypot(*delta)
        return delta * (self._speed / n) if n > self._speed else delta

    def _push(self, state: dict[str, Any]) -> np.ndarray:
        target = state["objects"][self._task.target]
        b, radius = target["position"], target["radius"]
        e, goal = state["ee"], state["goal"]
        contact = radius + state["ee_radius"]  # EE-object centre distance at first touch (worst case)
        d = goal - b
        u = d / max(math.hypot(*d), 1e-9)  # push direction
        lo, hi = state["ee_radius"] + 0.5, state["table_size"] - state["ee_radius"] - 0.5
        ideal = b - u * (contact + 1.0)
        behind = np.clip(ideal, lo, hi)
        if np.any(behind != ideal):
            u = (b - behind) / math.hypot(*(behind - b))  # a wall is in the way: push from where it can
        rel = e - b
        along = float(rel @ u)
        perp_v = rel - along * u
        perp = math.hypot(*perp_v)
        if along < -0.5 * radius and perp < self._align_tol:
            # behind and lined up: push through the centre towards the goal
            return self._toward(state, b + u * (contact + 6.0))
        if along < -0.5 * radius:
            # behind but off the line: go to the push point
            return self._toward(state, b - u * (contact + 1.0))
        # beside or in front: go round on the nearer side, first sideways if close
        side = perp_v / perp if perp > 1e-3 else self._side * np.array([-u[1], u[0]])
        if perp < contact + 1.0 and along < contact + 1.0:
            return self._toward(state, b + side * (contact + 2.0) + u * max(along, 0.0))
        return self._toward(state, b + side * (contact + 1.5) - u * contact)


class RandomPolicy:
    """Smooth random actions (an AR(1) walk), for failed rollouts and benchmarks."""

    def __init__(self, smoothing: float = 0.8, scale: float = 1.0) -> None:
        if not 0 <= smoothing < 1 or scale <= 0:
            raise ValueError("smoothing must be in [0, 1) and scale > 0")
        self.smoothing, self.scale = smoothing, scale
        self._rng = np.random.default_rng(0)
        self._a = np.zeros(2)

    def reset(self, seed: int, task: Task) -> None:
        self._rng = np.random.default_rng([int(seed), 0x4A4D])
        self._a = np.zeros(2)

    def act(self, state: dict[str, Any]) -> np.ndarray:
        self._a = ar1_action(self._rng, self._a, self.smoothing, self.scale)
        return check_action(self._a)


class TabletopExpert:
    """A state-based :class:`Policy` bound to one table: the :class:`efm_ros.robots.Expert` that
    ``collect-demos`` (and :func:`efm_ros.robots.rollout.run_expert_episode`) drive."""

    def __init__(self, robot: TabletopRobot, policy: Policy | None = None) -> None:
        self.robot = robot
        self.policy = policy if policy is not None else ScriptedDemonstrator()

    def reset(self, seed: int) -> None:
        self.policy.reset(int(seed), self.robot.task)

    def act(self) -> np.ndarray:
        return check_action(self.policy.act(self.robot.state()), self.robot.action_dim)


def run_episode(robot: TabletopRobot, policy: Policy, seed: int, max_steps: int = DEFAULT_MAX_STEPS,
                instruction: str | None = None, stop_on_success: bool = True) -> EpisodeRollout:
    """Reset ``robot`` with ``seed`` (and ``instruction`` if given), run ``policy`` for at most
    ``max_steps`` steps; with ``stop_on_success`` the episode ends at the first successful step."""
    return run_expert_episode(robot, TabletopExpert(robot, policy), seed, max_steps, instruction, stop_on_success)


def run_demo_episode(robot: TabletopRobot, demonstrator: ScriptedDemonstrator | None = None,
                     seed: int = 0, max_steps: int = DEFAULT_MAX_STEPS,
                     instruction: str | None = None) -> EpisodeRollout:
    """One scripted demonstration; keep it only if ``.success`` (then it ends at its goal).

    Raises ValueError on the novel-bar table, which is never demonstrated.
    """
    if robot.config.variant == "novel_bar":
        raise ValueError("no demonstrations on the novel_bar table (the novel object is learnt by practice)")
    return run_episode(robot, demonstrator or ScriptedDemonstrator(), seed, max_steps, instruction,
                       stop_on_success=True)
