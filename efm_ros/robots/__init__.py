"""The robot interface the graph and the tools drive, and the factory that loads a backend.

A backend is any class with the :class:`Robot` methods. Select one by dotted path
(``"efm_ros.sim.tabletop:TabletopRobot"``) in config; keyword arguments come from config too.
Gymnasium environments plug in through :class:`efm_ros.robots.gymnasium.GymnasiumRobot`.
"""
from __future__ import annotations

import importlib
from typing import Any, Protocol, runtime_checkable

import numpy as np

#: the robot backend every command and the sim node use unless given another (dotted path)
DEFAULT_ROBOT = "efm_ros.sim.tabletop:TabletopRobot"


@runtime_checkable
class Robot(Protocol):
    """What efm_ros needs from a robot (real arm, embedded simulator, Gymnasium env)."""

    action_dim: int
    """length of the action vector; each component is in [-1, 1] (normalised units)"""
    control_rate_hz: float

    def reset(self, seed: int | None = None, instruction: str | None = None) -> str:
        """Start an episode; returns its instruction (drawn by the robot if None)."""

    def step(self, action: np.ndarray) -> None:
        """Apply one control step's action (clipped to [-1, 1] by the backend)."""

    def observe(self) -> np.ndarray:
        """Current camera frame: RGB uint8, shape (H, W, 3)."""

    def success(self) -> bool:
        """Ground-truth success of the current instruction. EVALUATION ONLY: never a reward."""


def load_object(path: str) -> Any:
    """Import ``"package.module:Name"`` (or ``"package.module.Name"``)."""
    module, sep, name = path.partition(":")
    if not sep:
        module, _, name = path.rpartition(".")
    if not module or not name:
        raise ValueError(f"not a dotted path 'package.module:Name': {path!r}")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load {path!r}: {exc}") from exc


def make_robot(path: str = DEFAULT_ROBOT, **kwargs: Any) -> Robot:
    """Instantiate a robot backend by dotted path and check it implements :class:`Robot`."""
    robot = load_object(path)(**kwargs)
    missing = [m for m in ("reset", "step", "observe", "success", "action_dim") if not hasattr(robot, m)]
    if missing:
        raise TypeError(f"{path} is not a Robot: missing {missing}")
    return robot
