"""Validation of incoming arm commands, shared by the robot nodes (no ROS import).

Commands arrive from the network and can be anything: NaN, the wrong length, far out of range.
A robot must never crash on them and never act on garbage: NaN/inf and wrong-length commands
are rejected (the arm holds still), out-of-range commands are clipped. Every rejection and clip
is counted by reason so the node can log it and report it on /diagnostics.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class CommandCheck:
    """Outcome of validating one command."""

    action: np.ndarray | None
    """the action to apply (float32, in [-1, 1] per component, norm <= 1), or None if rejected"""
    reason: str | None = None
    """why it was rejected or modified (None when it was fine as sent)"""

    @property
    def rejected(self) -> bool:
        return self.action is None


@dataclass
class CommandValidator:
    """Turns raw command vectors into safe normalised actions, counting what it had to fix."""

    action_dim: int = 2
    max_norm: float = 1.0
    """actions are bounded in magnitude: the vector is scaled down to this norm if longer"""
    axes: ActionAxes | None = None
    """with axes, the linear and the angular parts are bounded separately and a gripper is clipped
    (:meth:`ActionAxes.bound`); without, the whole vector is bounded by ``max_norm``"""
    tolerance: float = 1e-6
    """clipping below this much is not reported (float rounding of in-range commands)"""
    counts: Counter = field(default_factory=Counter)
    """per-reason counters: rejected_nan, rejected_length, clipped_range, accepted"""

    def check(self, values) -> CommandCheck:
        try:
            a = np.asarray(values, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            self.counts["rejected_type"] += 1
            return CommandCheck(None, "not a numeric vector")
        if a.shape[0] != self.action_dim:
            self.counts["rejected_length"] += 1
            return CommandCheck(None, f"expected {self.action_dim} components, got {a.shape[0]}")
        if not np.all(np.isfinite(a)):
            self.counts["rejected_nan"] += 1
            return CommandCheck(None, f"non-finite component in {a.tolist()}")
        if self.axes is not None:
            bounded, changed = self.axes.bound(a)
            if changed and float(np.max(np.abs(bounded - a))) > self.tolerance:
                self.counts["clipped_range"] += 1
                return CommandCheck(bounded.astype(np.float32), f"{a.tolist()} out of range: bounded per axis group")
            self.counts["accepted"] += 1
            return CommandCheck(bounded.astype(np.float32))
        norm = float(np.linalg.norm(a))
        if norm > self.max_norm + self.tolerance:
            self.counts["clipped_range"] += 1
            return CommandCheck((a * (self.max_norm / norm)).astype(np.float32),
                                f"norm {norm:.3f} > {self.max_norm}: scaled down")
        self.counts["accepted"] += 1
        return CommandCheck(a.astype(np.float32))

    @property
    def rejected(self) -> int:
        return sum(v for k, v in self.counts.items() if k.startswith("rejected"))

    @property
    def clipped(self) -> int:
        return self.counts["clipped_range"]


# --------------------------------------------------------------------------------------------
# Action axes: what each component of a normalised action commands on the robot

TWIST_AXES = ("linear.x", "linear.y", "linear.z", "angular.x", "angular.y", "angular.z")
"""components of cmd_vel (geometry_msgs/TwistStamped) an action component can drive"""
GRIPPER_AXIS = "gripper"
"""an action component sent on gripper_cmd (std_msgs/Float64): -1 fully open .. +1 fully closed"""
AXES = (*TWIST_AXES, GRIPPER_AXIS)


def default_axes(dims: int) -> tuple[str, ...]:
    """The axes of a ``dims``-component action when none are configured: 2 planar (the embedded
    table), 3 Cartesian, 4 Cartesian + gripper, 6 Cartesian + rotation, 7 + gripper."""
    table = {2: ("linear.x", "linear.y"), 3: TWIST_AXES[:3], 4: (*TWIST_AXES[:3], GRIPPER_AXIS),
             6: TWIST_AXES, 7: (*TWIST_AXES, GRIPPER_AXIS)}
    if dims not in table:
        raise ValueError(f"no default action axes for {dims} action dimensions: set action_axes "
                         f"(a comma-separated list of {', '.join(AXES)})")
    return table[dims]


@dataclass(frozen=True)
class ActionAxes:
    """Maps normalised actions to robot commands and back: each action component drives one axis.

    Linear axes are scaled by ``max_speed_mps`` and angular ones by ``max_angular_rps``; the linear
    part and the angular part are each bounded in norm by their maximum (direction kept), the
    gripper is clipped to [-1, 1]. ``ActionAxes.parse("linear.x,linear.y", ...)``.
    """

    axes: tuple[str, ...]
    max_speed_mps: float = 0.2
    max_angular_rps: float = 1.0

    def __post_init__(self) -> None:
        unknown = [a for a in self.axes if a not in AXES]
        if unknown or not self.axes or len(set(self.axes)) != len(self.axes):
            raise ValueError(f"action axes {list(self.axes)}: each must be one of {', '.join(AXES)}, "
                             "at least one, none twice")
        if not (self.max_speed_mps > 0 and self.max_angular_rps > 0):
            raise ValueError("max_speed_mps and max_angular_rps must be > 0")

    @classmethod
    def parse(cls, text: str | Sequence[str], dims: int, **limits: float) -> ActionAxes:
        """From a comma-separated string or a list ('' or []: :func:`default_axes`), checked
        against the action's ``dims``."""
        names = [a.strip() for a in (text.split(",") if isinstance(text, str) else text) if a.strip()]
        axes = cls(tuple(names) if names else default_axes(dims), **limits)
        if len(axes.axes) != dims:
            raise ValueError(f"{len(axes.axes)} action axes {list(axes.axes)} for {dims} action dimensions")
        return axes

    @property
    def dims(self) -> int:
        return len(self.axes)

    @property
    def has_gripper(self) -> bool:
        return GRIPPER_AXIS in self.axes

    def groups(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(indices of the linear components, indices of the angular components)"""
        return (tuple(i for i, a in enumerate(self.axes) if a.startswith("linear.")),
                tuple(i for i, a in enumerate(self.axes) if a.startswith("angular.")))

    def bound(self, action) -> tuple[np.ndarray, bool]:
        """The action with its linear and angular parts each of norm <= 1 and the gripper in
        [-1, 1]; and whether anything had to change."""
        a = np.asarray(action, dtype=np.float64).reshape(-1).copy()
        changed = False
        for group in self.groups():
            idx = list(group)
            norm = float(np.linalg.norm(a[idx])) if idx else 0.0
            if norm > 1.0:
                a[idx] /= norm
                changed = True
        if self.has_gripper:
            g = self.axes.index(GRIPPER_AXIS)
            if abs(a[g]) > 1.0:
                a[g] = float(np.clip(a[g], -1.0, 1.0))
                changed = True
        return a, changed

    def to_command(self, action) -> tuple[np.ndarray, np.ndarray, float | None]:
        """action -> (linear m/s (3,), angular rad/s (3,), gripper in [-1, 1] or None), bounded."""
        a, _ = self.bound(action)
        linear, angular, gripper = np.zeros(3), np.zeros(3), None
        for value, axis in zip(a, self.axes):
            if axis == GRIPPER_AXIS:
                gripper = float(value)
            else:
                kind, comp = axis.split(".")
                target, scale = (linear, self.max_speed_mps) if kind == "linear" else (angular, self.max_angular_rps)
                target["xyz".index(comp)] = value * scale
        return linear, angular, gripper

    def from_command(self, linear, angular, gripper: float | None = None) -> tuple[np.ndarray, bool]:
        """(linear m/s, angular rad/s, gripper) -> (normalised action, whether the twist had motion
        on an axis this action does not drive). A missing gripper reads as 0."""
        linear, angular = np.asarray(linear, np.float64), np.asarray(angular, np.float64)
        out = np.zeros(self.dims)
        used = set()
        for i, axis in enumerate(self.axes):
            if axis == GRIPPER_AXIS:
                out[i] = 0.0 if gripper is None else float(gripper)
                continue
            kind, comp = axis.split(".")
            src, scale = (linear, self.max_speed_mps) if kind == "linear" else (angular, self.max_angular_rps)
            out[i] = src["xyz".index(comp)] / scale
            used.add(axis)
        ignored = any(abs(v) > 1e-9 for axis, v in zip(TWIST_AXES, [*linear, *angular]) if axis not in used)
        return out, ignored
