"""Teleoperated demonstrations on the live graph (record mode), without ROS.

In record mode a human drives the arm and the graph records demonstrations in the episode-bag
format ``train-sft`` reads. :class:`TeleopSession` is the logic of the teleop node, which takes
the policy node's place (it acts once per camera frame and publishes ``policy_action``) and the
steps-to-go node's (it publishes the episode events), with the operator in charge of both:

* **Commands.** Any teleop source (teleop_twist_keyboard / teleop_twist_joy with ``stamped:=true``,
  a SpaceMouse driver, ``efm-ros teleop-keyboard``) publishes ``TwistStamped`` velocities and, for a
  gripper, a ``Float64`` in [-1, 1]. They become a normalised action through the robot's
  :class:`~efm_ros.robots.commands.ActionAxes` (the policy's limits: each part's norm bounded, the
  gripper clipped) and are checked like a policy's (NaN/inf rejected and counted). A command older
  than ``command_timeout_s`` is not repeated (the watchdog): the arm holds still, the gripper keeps
  its state.
* **Episodes.** The operator *starts* an episode (the node resets the robot first, then waits for
  the instruction and a frame), then *marks* it **success** (it ends at the next frame, which is its
  goal frame: steps-to-go labels T - t hold) or **discard** (the logger keeps it apart; it is never
  trained on). Every frame of a running episode gets exactly one action, stamped with that frame's
  stamp, as the policy node does; ``max_steps`` ends a forgotten episode as a discard.

Nothing here can crash on what arrives from the network: bad commands are counted and ignored,
operator commands in the wrong state get a clear refusal.
"""
from __future__ import annotations

import enum
import math
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from efm_ros.control.recorder import DISCARD_REASON
from efm_ros.robots.commands import GRIPPER_AXIS, ActionAxes

OPERATOR_COMMANDS = ("start", "success", "discard")
"""what the operator can say (``record/command`` topic data, or the record/<name> services)"""


class TeleopPhase(enum.Enum):
    IDLE = "idle"            # no episode: waiting for the operator's start
    STARTING = "starting"    # reset requested / waiting for the instruction and the first frame
    RUNNING = "running"      # acting on every frame
    ENDING = "ending"        # marked success: the next frame is the goal frame, then the episode ends


@dataclass(frozen=True)
class EpisodeEnd:
    """An episode the session ended: what the teleop node publishes as its terminal event."""

    episode_id: str
    success: bool
    reason: str
    """termination_reason: "operator: success", "discard" (:data:`DISCARD_REASON`)"""
    steps: int
    instruction: str


@dataclass
class TeleopSession:
    """See the module docstring. ``now`` arguments are monotonic seconds (for the tests)."""

    axes: ActionAxes
    robot: str
    command_timeout_s: float = 0.5
    max_steps: int = 1000
    counts: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.phase = TeleopPhase.IDLE
        self.episode_id = ""
        self.instruction = ""
        self.steps = 0
        self.episodes = 0
        self._motion = np.zeros(self.axes.dims)
        self._motion_t = -math.inf
        self._gripper: float | None = None

    # -- teleop input ---------------------------------------------------------------------------
    def on_twist(self, linear, angular, now: float | None = None) -> bool:
        """A velocity command (m/s, rad/s); False (counted) if rejected."""
        action, ignored = self.axes.from_command(linear, angular, self._gripper)
        if not np.all(np.isfinite(action)):
            self.counts["rejected_nan"] += 1
            return False
        if ignored:
            self.counts["ignored_components"] += 1
        bounded, changed = self.axes.bound(action)
        self.counts["clipped_range" if changed else "accepted"] += 1
        self._motion, self._motion_t = bounded, time.monotonic() if now is None else now
        return True

    def on_gripper(self, value: float) -> bool:
        """A gripper command, -1 open .. +1 closed; False (counted) if rejected or there is no gripper."""
        if not self.axes.has_gripper:
            self.counts["ignored_gripper"] += 1
            return False
        if not math.isfinite(value):
            self.counts["rejected_nan"] += 1
            return False
        self._gripper = float(min(max(value, -1.0), 1.0))
        return True

    def action(self, now: float | None = None) -> tuple[np.ndarray, bool]:
        """The action to apply now and whether the arm holds still (no fresh command)."""
        now = time.monotonic() if now is None else now
        held = now - self._motion_t > self.command_timeout_s
        a = np.zeros(self.axes.dims) if held else self._motion.copy()
        if self.axes.has_gripper:
            a[self.axes.axes.index(GRIPPER_AXIS)] = 0.0 if self._gripper is None else self._gripper
        return a.astype(np.float32), held

    # -- operator ------------------------------------------------------------------------------
    def start(self, episode_id: str) -> str | None:
        """The operator starts an episode; returns a refusal, or None (then reset the robot and call
        :meth:`begin` with the instruction once a fresh frame is there)."""
        if self.phase is not TeleopPhase.IDLE:
            return f"an episode is {self.phase.value} ({self.episode_id}): mark it success or discard first"
        self.phase, self.episode_id, self.steps = TeleopPhase.STARTING, episode_id, 0
        self._motion_t = -math.inf      # a command from before the start is not replayed
        return None

    def begin(self, instruction: str) -> str | None:
        """The robot is reset and has an instruction: the episode runs from the next frame."""
        if self.phase is not TeleopPhase.STARTING:
            return f"no episode is starting (phase {self.phase.value})"
        if not instruction:
            return "no instruction: publish one on 'instruction' (the robot's, or the operator's)"
        self.phase, self.instruction = TeleopPhase.RUNNING, instruction
        return None

    def abort_start(self) -> None:
        """The reset failed: back to IDLE, nothing was recorded."""
        if self.phase is TeleopPhase.STARTING:
            self.phase, self.episode_id = TeleopPhase.IDLE, ""

    def mark(self, command: str) -> tuple[str | None, EpisodeEnd | None]:
        """The operator marks the running episode "success" or "discard". Returns (refusal, end):
        a discard ends it at once; a success ends it at the next frame (:meth:`on_frame`)."""
        if command not in ("success", "discard"):
            return f"unknown mark {command!r}; expected success or discard", None
        if self.phase is TeleopPhase.STARTING and command == "discard":
            self.abort_start()
            return None, None
        if self.phase is not TeleopPhase.RUNNING:
            return f"no episode is running (phase {self.phase.value})", None
        if command == "success":
            if self.steps == 0:
                return "success before the first action: nothing was demonstrated", None
            self.phase = TeleopPhase.ENDING
            return None, None
        return None, self._end(False, DISCARD_REASON)

    # -- control tick --------------------------------------------------------------------------
    def on_frame(self, now: float | None = None) -> tuple[np.ndarray | None, int, EpisodeEnd | None]:
        """A new camera frame. Returns (action to publish for it or None, its step index, the episode
        end if this frame ends one). Outside an episode nothing is acted on."""
        if self.phase is TeleopPhase.ENDING:
            return None, self.steps, self._end(True, "operator: success")
        if self.phase is not TeleopPhase.RUNNING:
            return None, self.steps, None
        if self.steps >= self.max_steps:
            self.counts["max_steps"] += 1
            return None, self.steps, self._end(False, DISCARD_REASON)
        action, held = self.action(now)
        if held:
            self.counts["held_still"] += 1
        step = self.steps
        self.steps += 1
        return action, step, None

    def _end(self, success: bool, reason: str) -> EpisodeEnd:
        end = EpisodeEnd(self.episode_id, success, reason, self.steps, self.instruction)
        self.phase, self.episode_id = TeleopPhase.IDLE, ""
        self.episodes += 1
        self.counts["success" if success else "discarded"] += 1
        return end
