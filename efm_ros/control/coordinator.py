"""The fleet coordinator's logic (paper §2.5: the actors pause while the learner updates), without ROS.

The trainer owns a :class:`FleetCoordinator`; its ROS face (``nodes.improve_metrics``) carries
the commands on ``/fleet/command`` (``efm_ros/FleetCommand``) and the robots' answers on
``/fleet/status`` (``efm_ros/FleetStatus``, from every robot's steps_to_go node). One update:

1. ``pause()`` when the buffer is full: every robot ends its running episode at its next frame
   (PAUSE_NOW, the default: a TIMEOUT with the reason "timeout: fleet pause", a truncated episode
   that is on-policy for the version being updated and is learned from like any timeout), or lets
   it end by the episode rules (PAUSE, ``end_running=False``: up to T_max of waiting), and starts
   no new one. The arm holds still: the policy acts only inside episodes.
2. ``settled()`` once every responsive robot reports *paused* for this command and the trainer has
   seen the bag of the last episode each robot reported ended, so no episode of the old version
   arrives after the update (nothing is discarded at the switch).
3. The trainer updates and publishes the new version; ``resume(version)``: every robot starts
   again only once its own policy node reports that version (a robot never acts on the old one).
4. ``swapped(version)`` once every responsive robot reports the new version: the switch time.

A robot whose status is older than ``status_timeout_s`` is *unresponsive*: it is reported and
never holds the fleet up; it joins again when it reports.
"""
from __future__ import annotations

from dataclasses import dataclass, field

PRACTISE, PAUSE, PAUSE_NOW = 0, 1, 2
"""FleetCommand.command values (msg/FleetCommand.msg)"""

PAUSE_REASON = "timeout: fleet pause"
"""termination_reason of an episode ended by PAUSE_NOW"""


@dataclass
class RobotStatus:
    seq: int
    paused: bool
    policy_version: str
    last_episode_id: str
    seen_at: float


@dataclass
class FleetCoordinator:
    status_timeout_s: float = 3.0
    """a robot silent for longer than this is unresponsive and does not hold the fleet up"""
    seq: int = 0
    command: int = PRACTISE
    version: str = ""
    robots: dict[str, RobotStatus] = field(default_factory=dict)
    paused_s: float = 0.0
    """total time from each pause() until every robot acts with the new version (``swapped``)"""
    pauses: int = 0
    first_status_at: float | None = None
    """when the first robot answered: the fleet's practice time counts from here"""
    _paused_at: float | None = None

    def on_status(self, robot: str, seq: int, paused: bool, policy_version: str, last_episode_id: str,
                  now: float) -> None:
        self.robots[robot] = RobotStatus(int(seq), bool(paused), policy_version, last_episode_id, now)
        if self.first_status_at is None:
            self.first_status_at = now

    def responsive(self, now: float) -> list[str]:
        return sorted(r for r, s in self.robots.items() if now - s.seen_at <= self.status_timeout_s)

    def unresponsive(self, now: float) -> list[str]:
        return sorted(r for r, s in self.robots.items() if now - s.seen_at > self.status_timeout_s)

    def pause(self, now: float, end_running: bool = True) -> tuple[int, int, str]:
        """-> (seq, PAUSE_NOW or PAUSE, version being updated): the command to publish."""
        self.seq += 1
        self.command = PAUSE_NOW if end_running else PAUSE
        self.pauses += 1
        self._paused_at = now
        return self.seq, self.command, self.version

    def resume(self, version: str) -> tuple[int, int, str]:
        """-> (seq, PRACTISE, version): practise again, on ``version``."""
        self.seq += 1
        self.command, self.version = PRACTISE, version
        return self.seq, PRACTISE, version

    def settled(self, now: float, seen_episodes) -> tuple[bool, list[str]]:
        """(every responsive robot has paused for the current command and its last ended episode
        is in ``seen_episodes``, the robots still waited for)."""
        waiting = []
        for r in self.responsive(now):
            s = self.robots[r]
            if s.seq < self.seq or not s.paused or (s.last_episode_id and s.last_episode_id not in seen_episodes):
                waiting.append(r)
        return not waiting, waiting

    def swapped(self, version: str, now: float) -> tuple[bool, list[str]]:
        """(every responsive robot's policy acts with ``version``, the robots that do not yet)."""
        waiting = [r for r in self.responsive(now) if self.robots[r].policy_version != version]
        return not waiting, waiting

    def paused_share(self, now: float) -> float:
        """Share of the fleet's time (since the first robot answered) spent paused for updates."""
        since = self.first_status_at if self.first_status_at is not None else now
        return self.paused_s / max(now - since, 1e-9)

    def practising(self, now: float) -> None:
        """The pause is over (every robot swapped, or the wait gave up): count its time."""
        if self._paused_at is not None:
            self.paused_s += now - self._paused_at
            self._paused_at = None


@dataclass
class RobotGate:
    """A robot's side (its steps_to_go node): may a new episode START now?"""

    seq: int = 0
    command: int = PRACTISE
    version: str = ""

    def on_command(self, seq: int, command: int, version: str) -> bool:
        """Take a command; False for one already taken or an unknown one. Any other seq is taken
        (a restarted trainer counts from 1 again; the command topic keeps only the latest)."""
        if command not in (PRACTISE, PAUSE, PAUSE_NOW):
            raise ValueError(f"unknown fleet command {command}")
        if int(seq) == self.seq:
            return False
        self.seq, self.command, self.version = int(seq), int(command), version
        return True

    def end_running(self) -> bool:
        """The latest command asks to end a running episode at its next frame."""
        return self.command == PAUSE_NOW

    def may_start(self, policy_version: str) -> bool:
        """Practising, and (once the trainer names a version) the policy acts with that version."""
        return self.command == PRACTISE and (not self.version or policy_version == self.version)
