"""Validation of incoming arm commands, shared by the robot nodes (no ROS import).

Commands arrive from the network and can be anything: NaN, the wrong length, far out of range.
A robot must never crash on them and never act on garbage: NaN/inf and wrong-length commands
are rejected (the arm holds still), out-of-range commands are clipped. Every rejection and clip
is counted by reason so the node can log it and report it on /diagnostics.
"""
from __future__ import annotations

from collections import Counter
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


def twist_to_action(linear_x: float, linear_y: float, max_speed_mps: float) -> np.ndarray:
    """A planar velocity command (m/s, table frame) -> normalised action (1.0 = max speed)."""
    if max_speed_mps <= 0:
        raise ValueError("max_speed_mps must be > 0")
    return np.array([linear_x, linear_y], dtype=np.float64) / max_speed_mps


def action_to_twist(action, max_speed_mps: float) -> tuple[float, float]:
    """Inverse of :func:`twist_to_action`."""
    a = np.asarray(action, dtype=np.float64)
    return float(a[0] * max_speed_mps), float(a[1] * max_speed_mps)
