"""Episodes of an expert on any robot backend (the demonstrations ``collect-demos`` records).

:func:`run_expert_episode` resets the robot, lets the expert act until ground-truth success (the
demonstration then ends at its goal, so its steps-to-go labels are T - t) or ``max_steps``, and
returns an :class:`EpisodeRollout`. Every action is validated (:func:`check_robot_action`) before it
reaches the robot and recorded as applied.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from efm_ros.robots import Expert, check_robot_action, robot_family


@dataclass
class EpisodeRollout:
    """One episode: frames before and after every action, and the actions as applied."""

    frames: np.ndarray
    """(T+1, H, W, 3) uint8 RGB: frames[0] after reset, frames[t+1] after actions[t]"""
    actions: np.ndarray
    """(T, A) float32 actions as applied"""
    instruction: str
    """the episode's instruction"""
    success: bool
    """ground-truth success at the last frame"""
    seed: int
    """episode seed (robot layout and expert noise)"""
    family: str = ""
    """the instruction's task family ("" if the robot does not name one)"""

    @property
    def steps(self) -> int:
        """number of actions T"""
        return int(len(self.actions))

    def steps_to_go(self) -> np.ndarray:
        """Label of each frame, T - t (int64, T+1 values); meaningful when the episode ends at its goal."""
        return np.arange(self.steps, -1, -1, dtype=np.int64)


def run_expert_episode(robot: Any, expert: Expert, seed: int, max_steps: int, instruction: str | None = None,
                       stop_on_success: bool = True) -> EpisodeRollout:
    """Reset ``robot`` with ``seed`` (and ``instruction`` if given) and run ``expert`` for at most
    ``max_steps`` steps; with ``stop_on_success`` the episode ends at the first successful step."""
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    instruction = robot.reset(seed=int(seed), instruction=instruction)
    expert.reset(int(seed))
    frames = [np.array(robot.observe())]
    actions = []
    success = False
    dim = int(robot.action_dim)
    for _ in range(max_steps):
        a = check_robot_action(expert.act(), dim)
        robot.step(a)
        actions.append(a)
        frames.append(np.array(robot.observe()))
        success = bool(robot.success())
        if success and stop_on_success:
            break
    return EpisodeRollout(frames=np.stack(frames), actions=np.stack(actions).astype(np.float32),
                          instruction=str(instruction), success=success, seed=int(seed), family=robot_family(robot))


def ar1_action(rng: np.random.Generator, previous: np.ndarray, smoothing: float, scale: float) -> np.ndarray:
    """One step of a smooth random walk of actions: a_t = ρ a_{t-1} + sqrt(1 - ρ²) · scale · N(0, I)."""
    return smoothing * previous + np.sqrt(1 - smoothing * smoothing) * scale * rng.normal(size=previous.shape)


def bound_norm(a: np.ndarray) -> np.ndarray:
    """Scale a vector longer than 1 to unit length (direction kept)."""
    norm = float(np.linalg.norm(a))
    return a / norm if norm > 1.0 else a


class RandomExpert:
    """Smooth random actions on any robot (failed rollouts for success calibration, benchmarks)."""

    def __init__(self, robot: Any, smoothing: float = 0.8, scale: float = 1.0) -> None:
        if not 0 <= smoothing < 1 or scale <= 0:
            raise ValueError("smoothing must be in [0, 1) and scale > 0")
        self.robot, self.smoothing, self.scale = robot, smoothing, scale
        self._rng = np.random.default_rng(0)
        self._a = np.zeros(int(robot.action_dim))

    def reset(self, seed: int) -> None:
        self._rng = np.random.default_rng([int(seed), 0x4A4D])
        self._a = np.zeros(int(self.robot.action_dim))

    def act(self) -> np.ndarray:
        self._a = ar1_action(self._rng, self._a, self.smoothing, self.scale)
        return bound_norm(self._a)


class NoisyExpert:
    """An expert with large Gaussian action noise: near misses, the hardest negatives for calibrating
    the success detector. A robot may supply its own (``robot.noisy_expert()``)."""

    def __init__(self, expert: Expert, noise_std: float = 0.7) -> None:
        self.expert, self.noise_std = expert, float(noise_std)
        self._rng = np.random.default_rng(0)

    def reset(self, seed: int) -> None:
        self.expert.reset(seed)
        self._rng = np.random.default_rng([int(seed), 0x9015])

    def act(self) -> np.ndarray:
        a = np.asarray(self.expert.act(), np.float64)
        return np.clip(a + self._rng.normal(0.0, self.noise_std, a.shape), -1.0, 1.0)


def noisy_expert(robot: Any) -> Expert | None:
    """``robot.noisy_expert()`` if it has one, else its expert with noise; None if it has no expert."""
    from efm_ros.robots import make_expert

    method = getattr(robot, "noisy_expert", None)
    if callable(method):
        return method()
    try:
        return NoisyExpert(make_expert(robot))
    except ValueError:
        return None
