"""The episode state machine of the steps-to-go reward/success node (paper §2.1, Algorithm 1).

Per control tick the frozen Stage-1 model gives d(o_t, g). This module turns the stream of d
values into what the robot does next, without ROS:

* reward r_t = d(o_{t-1}, g) − d(o_t, g) (:func:`efm_ros.learn.objectives.progress_reward`;
  0 on the first tick of an episode, which has no predecessor),
* success = d ≤ s held for k consecutive ticks (:func:`efm_ros.learn.objectives.is_success`) —
  ends the episode,
* timeout: the episode ends once ``max_steps`` actions have been taken (frames 0..max_steps seen),
* operator stop: ends the episode at once,
* truncation (the fleet pauses for an update): ends the episode as a timeout at a frame,
* then a reset; a reset that fails ``reset_retries`` times is a FAULT, retried every
  ``fault_retry_s`` until it works — the node reports, it never hangs.

Ground-truth success is not an input here: Stage 2 never uses it to reward or to stop.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

from efm_ros.learn.objectives import is_success, progress_reward
from efm_ros.model.bins import T_MAX


#: termination_reason prefix of an episode ended because an input went silent
INPUT_LOST = "input lost"


class Phase(enum.Enum):
    WAITING = "waiting"      # no episode: waiting for an instruction and a frame
    RUNNING = "running"      # episode in progress
    RESETTING = "resetting"  # episode over, reset requested
    FAULT = "fault"          # reset failed repeatedly; retrying slowly


class Event(enum.IntEnum):
    """Values of efm_ros/msg/EpisodeEvent.event."""

    START = 0
    SUCCESS = 1
    TIMEOUT = 2
    OPERATOR_STOP = 3
    RESET_DONE = 4
    FAULT = 5


class Outcome(enum.IntEnum):
    """Values of efm_ros/msg/EpisodeEvent.outcome (per the model's own detector)."""

    UNKNOWN = 0
    SUCCESS = 1
    FAILURE = 2


@dataclass(frozen=True)
class EpisodeConfig:
    """Termination and reset rules of one robot."""

    success_threshold: float
    """s: the detector fires when d(o, g) <= s ... (from the reward model's manifest)"""
    success_k: int = 1
    """... for k consecutive ticks"""
    max_steps: int = T_MAX
    """T_max: actions per episode before a timeout (the steps-to-go range of the model)"""
    reset_retries: int = 3
    """reset attempts before the robot is declared faulty"""

    def __post_init__(self):
        if self.success_k < 1 or self.max_steps < 1 or self.reset_retries < 1:
            raise ValueError(f"invalid episode config {self}")


@dataclass
class EpisodeEventRecord:
    """One event to publish."""

    event: Event
    episode_id: str
    instruction: str
    steps: int
    outcome: Outcome = Outcome.UNKNOWN
    reason: str = ""


@dataclass
class TickResult:
    """What one control tick produced."""

    step: int
    """index of this frame in the episode (0 = first frame after the reset)"""
    d: float
    reward: float
    success: bool
    """the k-consecutive detector fired on this tick"""
    event: EpisodeEventRecord | None = None
    """terminal event if the episode ended on this tick"""


@dataclass
class EpisodeTracker:
    """State of one robot's episodes. Call start → tick* → (terminal) → reset_* → start ..."""

    config: EpisodeConfig
    phase: Phase = Phase.WAITING
    episode_id: str = ""
    instruction: str = ""
    step: int = -1
    consecutive: int = 0
    last_d: float | None = None
    reset_failures: int = 0
    history: list[float] = field(default_factory=list)
    """d of every tick of the current episode"""

    def start(self, episode_id: str, instruction: str) -> EpisodeEventRecord:
        if self.phase is not Phase.WAITING:
            raise RuntimeError(f"cannot start an episode while {self.phase.value}")
        if not instruction:
            raise ValueError("an episode needs an instruction")
        self.phase, self.episode_id, self.instruction = Phase.RUNNING, episode_id, instruction
        self.step, self.consecutive, self.last_d, self.history = -1, 0, None, []
        return EpisodeEventRecord(Event.START, episode_id, instruction, 0)

    def tick(self, d: float) -> TickResult:
        """Account one frame's d(o_t, g); may end the episode."""
        if self.phase is not Phase.RUNNING:
            raise RuntimeError(f"tick while {self.phase.value}")
        d = float(d)
        if d != d:  # NaN from a broken model must not count as progress or success
            raise ValueError("d(o, g) is NaN")
        self.step += 1
        reward = 0.0 if self.last_d is None else float(progress_reward(self.last_d, d))
        self.last_d = d
        self.history.append(d)
        self.consecutive = self.consecutive + 1 if is_success(d, self.config.success_threshold) else 0
        fired = self.consecutive >= self.config.success_k
        result = TickResult(self.step, d, reward, fired)
        if fired:
            result.event = self._end(Event.SUCCESS, Outcome.SUCCESS,
                                     f"success: d <= {self.config.success_threshold:g} for {self.config.success_k} ticks")
        elif self.step >= self.config.max_steps:
            result.event = self._end(Event.TIMEOUT, Outcome.FAILURE, f"timeout: {self.config.max_steps} steps")
        return result

    def operator_stop(self, reason: str = "operator stop") -> EpisodeEventRecord | None:
        """End the running episode at once (None if no episode is running)."""
        if self.phase is not Phase.RUNNING:
            return None
        return self._end(Event.OPERATOR_STOP, Outcome.UNKNOWN, reason)

    def truncate(self, reason: str) -> EpisodeEventRecord | None:
        """End the running episode as a TIMEOUT after the frame just ticked: its time ran out early
        (the fleet coordinator's PAUSE_NOW). Like T_max, a truncation: every frame up to here
        has its d, and the episode is learned from like any timeout. None if none is running."""
        if self.phase is not Phase.RUNNING or self.step < 0:
            return None
        return self._end(Event.TIMEOUT, Outcome.FAILURE, reason)

    def input_lost(self, reason: str) -> EpisodeEventRecord | None:
        """End the running episode with a FAULT because an input it depends on went silent (the
        camera, the robot): never a silent stall. None if no episode is running. The trainer does
        not learn from such an episode (its end was not observed)."""
        if self.phase is not Phase.RUNNING:
            return None
        return self._end(Event.FAULT, Outcome.UNKNOWN, f"{INPUT_LOST}: {reason}")

    def _end(self, event: Event, outcome: Outcome, reason: str) -> EpisodeEventRecord:
        self.phase = Phase.RESETTING
        return EpisodeEventRecord(event, self.episode_id, self.instruction, max(self.step, 0), outcome, reason)

    def reset_succeeded(self) -> EpisodeEventRecord:
        if self.phase not in (Phase.RESETTING, Phase.FAULT):
            raise RuntimeError(f"reset result while {self.phase.value}")
        self.phase, self.reset_failures = Phase.WAITING, 0
        return EpisodeEventRecord(Event.RESET_DONE, self.episode_id, self.instruction, max(self.step, 0))

    def reset_failed(self, reason: str) -> EpisodeEventRecord | None:
        """Count a failed reset; returns a FAULT event when the retries are used up (once)."""
        if self.phase not in (Phase.RESETTING, Phase.FAULT):
            raise RuntimeError(f"reset result while {self.phase.value}")
        self.reset_failures += 1
        if self.phase is Phase.RESETTING and self.reset_failures >= self.config.reset_retries:
            self.phase = Phase.FAULT
            return EpisodeEventRecord(Event.FAULT, self.episode_id, self.instruction, max(self.step, 0),
                                      Outcome.UNKNOWN, f"reset failed {self.reset_failures} times: {reason}")
        return None
