"""The logger node's logic without ROS: which message goes into which episode bag, and what it says.

:class:`EpisodeRecorder` is fed, in receive order, every message the logger takes from its robot
namespace (``on_message``) and every ``EpisodeEvent`` (``on_event``)::

    ... reset ... | START(e1) frames actions ... SUCCESS(e1) | reset: RESET_DONE, instruction ... | START(e2) ...
      outside       <---------------- bag e1 ----------------->   outside (counted, not recorded)   <--- bag e2

* START opens a bag named by the event's ``episode_id`` (a START while a bag is open first closes
  that one as *not terminated*: the episode manager restarted or lost its terminal event).
* Every message received while a bag is open is written to it, log time = receive time; header
  stamps stay in the payloads (the reader aligns frames and actions by them).
* The terminal event (SUCCESS, TIMEOUT, OPERATOR_STOP, FAULT) is written, then the bag is closed
  and committed with the episode facts in ``custom_data`` (:meth:`EpisodeRecorder.episode_facts`).
* Messages between a terminal event and the next START (the reset) belong to no episode: they are
  counted (``outside``) and dropped, except that the last message of each *latched* topic
  (transient-local publishers, e.g. ``instruction``, published by the robot during the reset) is
  carried into the next bag, written first with its own receive time.
* :meth:`EpisodeRecorder.shutdown` closes an open bag as a complete bag marked
  ``terminated: "false"``, ``termination_reason: "logger_shutdown"``, ``outcome: "unknown"``; the
  trainer skips such episodes (see ``custom_data['terminated']``).
* A failing bag (full disk, I/O error) is reported through ``on_error`` and abandoned; the sink
  keeps what it wrote for ``efm-ros recover-bag``; the rest of that episode is counted
  (``not_recorded``) and the next START tries again.

Helpers for the node, also ROS-free: :class:`ReorderBuffer` (executors run the callbacks of
different subscriptions in their own order, not in arrival order: items are released sorted by
receive time after a short window), :class:`SequenceGaps` (lost messages from the publishers'
sequence numbers), :func:`choose_qos` (a subscription compatible with every publisher) and
:class:`MessageDefinitions` (``.msg`` text + RIHS01 hash of types outside ROS 2 Kilted + ours).
"""
from __future__ import annotations

import heapq
import itertools
import os
import re
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from efm_ros import __version__ as EFM_ROS_VERSION
from efm_ros.data import interfaces as itf
from efm_ros.data.episode import BAG_FORMAT

TERMINAL_EVENTS = ("success", "timeout", "operator_stop", "fault")
"""EpisodeEvent events that end an episode (its bag is committed after recording the event)"""
SHUTDOWN_REASON = "logger_shutdown"
"""termination_reason of a bag closed because the logger stopped mid-episode"""
SOURCE = "policy"
"""custom_data['source'] of live practice episodes (the logger's ``source``; teleoperated demonstrations
recorded live say "teleop", scripted ones "demonstrator")"""
DISCARD_REASON = "discard"
"""termination_reason of an episode the operator discarded (record mode): never trained on"""

_EPISODE_ID_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


# ------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class TopicInfo:
    """A recorded topic, as the node discovered it."""

    name: str
    """absolute topic name, e.g. ``/robot_0/camera/image``"""
    msgtype: str
    """``pkg/msg/Type``"""
    latched: bool = False
    """all publishers are transient-local: the last message outside an episode is carried into the next"""
    msgdef: str | None = None
    """``.msg`` text with dependencies, only for types the bag writer does not know"""
    rihs01: str | None = None


@dataclass(frozen=True)
class Event:
    """The fields of one ``efm_ros/msg/EpisodeEvent`` the recorder uses."""

    event: str
    """one of :data:`efm_ros.data.interfaces.EVENTS`"""
    episode_id: str = ""
    robot: str = ""
    instruction: str = ""
    termination_reason: str = ""
    outcome: str = "unknown"
    """one of :data:`efm_ros.data.interfaces.OUTCOMES`"""
    steps: int = 0
    policy_version: str = ""
    reward_model_version: str = ""
    success_threshold: float = 0.0
    """s of the detector that judged the episode (0 with success_k 0: unknown)"""
    success_k: int = 0

    @classmethod
    def from_msg(cls, msg: Any) -> Event:
        """From a decoded EpisodeEvent (rclpy or rosbags); an invalid one (:func:`itf.event_problem`:
        out-of-range codes, a bad stamp, over-long strings) raises ValueError."""
        problem = itf.event_problem(msg)
        if problem:
            raise ValueError(f"invalid episode event: {problem}")
        return cls(
            event=itf.EVENTS[msg.event], episode_id=msg.episode_id, robot=msg.robot, instruction=msg.instruction,
            termination_reason=msg.termination_reason, outcome=itf.OUTCOMES[msg.outcome], steps=int(msg.steps),
            policy_version=msg.policy_version, reward_model_version=msg.reward_model_version,
            success_threshold=float(getattr(msg, "success_threshold", 0.0)),  # absent in bags before the field
            success_k=int(getattr(msg, "success_k", 0)),
        )

    @property
    def terminal(self) -> bool:
        return self.event in TERMINAL_EVENTS


class EpisodeSink(Protocol):
    """What the recorder writes one episode to (:class:`efm_ros.data.bag.EpisodeBagWriter`)."""

    def add_raw(self, topic: str, msgtype: str, data: bytes, log_time_ns: int, *,
                msgdef: str | None = None, rihs01: str | None = None) -> None: ...

    def update_custom_data(self, data: Mapping[str, str]) -> None: ...

    def flush_if_due(self) -> bool: ...

    def close(self, into: str | None = None) -> Path: ...


# ----------------------------------------------------------------------------------- recorder
@dataclass
class RecorderStats:
    """Counters of an :class:`EpisodeRecorder` (a snapshot is a deep copy)."""

    written: Counter = field(default_factory=Counter)
    """topic -> messages written into bags"""
    outside: Counter = field(default_factory=Counter)
    """topic -> messages received between episodes (not recorded)"""
    not_recorded: Counter = field(default_factory=Counter)
    """topic -> messages of an episode whose bag could not be written"""
    lost: Counter = field(default_factory=Counter)
    """topic -> messages the publishers sent but the logger never received (sequence gaps)"""
    dropped: Counter = field(default_factory=Counter)
    """topic -> messages received but dropped before writing (write queue full)"""
    events: Counter = field(default_factory=Counter)
    """event name -> EpisodeEvents received"""
    anomalies: Counter = field(default_factory=Counter)
    """unexpected event sequences (terminal_without_start, start_without_terminal, ...)"""
    bytes_written: int = 0
    """payload bytes written into bags"""
    carried: int = 0
    """latched messages carried into a bag at its START"""
    episodes_committed: int = 0
    """bags committed at a terminal event"""
    episodes_unterminated: int = 0
    """bags committed without a terminal event (logger shutdown, START without terminal)"""
    episodes_failed: int = 0
    """episodes whose bag could not be opened or written"""
    last_error: str = ""
    last_episode: str = ""
    """id of the last bag committed"""

    def copy(self) -> RecorderStats:
        return RecorderStats(**{k: (Counter(v) if isinstance(v, Counter) else v) for k, v in vars(self).items()})


@dataclass
class _Episode:
    episode_id: str
    start: Event
    sink: EpisodeSink | None
    """None when the bag could not be opened or failed: the episode is counted, not recorded"""
    lost: int = 0
    dropped: int = 0
    actions: int = 0
    image_size: tuple[int, int] | None = None
    policy_versions: set[str] = field(default_factory=set)
    reward_model_versions: set[str] = field(default_factory=set)


class EpisodeRecorder:
    """Segments a stream of received messages into episode bags (see the module docstring).

    Not thread-safe for feeding: call ``on_*``, :meth:`flush_if_due` and :meth:`shutdown` from one
    thread. :meth:`snapshot`, :attr:`state` and :attr:`episode_id` may be read from any thread.
    """

    def __init__(
        self,
        robot: str,
        open_bag: Callable[[str], EpisodeSink],
        *,
        static_facts: Mapping[str, str] | None = None,
        on_error: Callable[[str], None] | None = None,
        on_commit: Callable[[Path, dict[str, str]], None] | None = None,
        source: str = SOURCE,
        discard_dir: str | None = None,
    ) -> None:
        """
        Args:
            robot: robot name (custom_data['robot']; a prefix of generated episode ids).
            open_bag: ``episode_id -> sink`` (opened); raises OSError / ValueError when it cannot.
            static_facts: extra custom_data of every bag (e.g. success threshold ``s``, ``k``).
            on_error: called with a one-line message whenever a bag cannot be opened or written.
            on_commit: called with the committed bag's path and its custom data.
            source: custom_data['source'] of every bag ("policy"; "teleop" in record mode).
            discard_dir: bags of discarded episodes (termination_reason "discard") are committed
                into this subdirectory of the episodes directory, apart from the others (None: not).
        """
        self.source, self.discard_dir = source, discard_dir
        self.robot = robot
        self._open_bag = open_bag
        self.static_facts = {str(k): str(v) for k, v in (static_facts or {}).items()}
        self._on_error = on_error or (lambda message: None)
        self._on_commit = on_commit or (lambda path, facts: None)
        self._episode: _Episode | None = None
        self._carry: dict[str, tuple[TopicInfo, bytes, int]] = {}
        self._stats = RecorderStats()
        self._lock = threading.Lock()  # guards _stats and _episode against snapshot() readers

    # -- state ---------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """"idle" (between episodes), "recording", or "failed" (an episode whose bag failed)."""
        ep = self._episode
        return "idle" if ep is None else ("recording" if ep.sink is not None else "failed")

    @property
    def episode_id(self) -> str:
        """id of the current episode ("" between episodes)."""
        ep = self._episode
        return "" if ep is None else ep.episode_id

    @property
    def wants_image_size(self) -> bool:
        """Whether the next ``camera/image`` message should come with its ``image_size``."""
        ep = self._episode
        return ep is not None and ep.image_size is None

    def snapshot(self) -> RecorderStats:
        with self._lock:
            return self._stats.copy()

    # -- input ---------------------------------------------------------------------------------
    def on_message(self, topic: TopicInfo, data: bytes, recv_ns: int, *, lost: int = 0,
                   model_version: str | None = None, image_size: tuple[int, int] | None = None) -> None:
        """A message received at ``recv_ns``; ``lost``: sequence gap seen just before it.

        ``model_version``: the version carried by a ``policy_action`` or ``steps_to_go`` message;
        ``image_size``: (height, width) of a ``camera/image`` frame (see :attr:`wants_image_size`).
        Both are collected into the episode facts.
        """
        ep = self._episode
        with self._lock:
            if lost:
                self._stats.lost[topic.name] += lost
                if ep is not None:
                    ep.lost += lost
        if ep is None:
            with self._lock:
                self._stats.outside[topic.name] += 1
            if topic.latched:
                self._carry[topic.name] = (topic, data, recv_ns)
            return
        if model_version is not None:
            rel = topic.name.rsplit("/", 1)[-1]
            if rel == itf.POLICY_ACTION_TOPIC:
                ep.policy_versions.add(model_version)
            elif rel == itf.STEPS_TO_GO_TOPIC:
                ep.reward_model_versions.add(model_version)
        if topic.name.endswith("/" + itf.POLICY_ACTION_TOPIC):
            ep.actions += 1
        if image_size is not None and ep.image_size is None and topic.name.endswith("/" + itf.IMAGE_TOPIC):
            ep.image_size = (int(image_size[0]), int(image_size[1]))
        self._write(topic, data, recv_ns)

    def on_dropped(self, topic: TopicInfo) -> None:
        """A message of ``topic`` was received but dropped before it reached the recorder."""
        with self._lock:
            self._stats.dropped[topic.name] += 1
            if self._episode is not None:
                self._episode.dropped += 1

    def on_event(self, topic: TopicInfo, data: bytes, recv_ns: int, event: Event, *, lost: int = 0) -> None:
        """An EpisodeEvent (raw ``data`` as received, decoded ``event``)."""
        with self._lock:
            self._stats.events[event.event] += 1
        ep = self._episode
        if event.event == "start":
            if ep is not None:
                self._anomaly("start_without_terminal")
                self._finish(None, f"interrupted: START of {event.episode_id or '?'} before a terminal event")
            self._start(topic, event, recv_ns)
            self.on_message(topic, data, recv_ns, lost=lost)
            return
        if not event.terminal:  # RESET_DONE (and any later additions): part of an episode only if one is open
            self.on_message(topic, data, recv_ns, lost=lost)
            return
        if ep is None:
            self._anomaly("terminal_without_start")
            self.on_message(topic, data, recv_ns, lost=lost)
            return
        self.on_message(topic, data, recv_ns, lost=lost)
        if event.episode_id and event.episode_id != ep.episode_id:
            self._anomaly("terminal_of_other_episode")  # recorded above; the episode goes on
            return
        self._finish(event, None)

    def flush_if_due(self) -> None:
        """Let the open bag write out data older than its time limit (call periodically)."""
        ep = self._episode
        if ep is not None and ep.sink is not None:
            try:
                ep.sink.flush_if_due()
            except OSError as exc:
                self._fail(ep, exc)

    def shutdown(self, reason: str = SHUTDOWN_REASON) -> Path | None:
        """Close the open bag (if any) as complete but not terminated; returns its path."""
        ep = self._episode
        if ep is None:
            return None
        return self._finish(None, reason)

    # -- facts ---------------------------------------------------------------------------------
    def episode_facts(self, ep: _Episode, end: Event | None, reason: str | None) -> dict[str, str]:
        """custom_data of a bag: ``end`` is its terminal event, or None with ``reason`` (not terminated)."""
        start = ep.start
        seen_policy = sorted(v for v in ep.policy_versions if v)
        seen_reward = sorted(v for v in ep.reward_model_versions if v)

        def pick(*candidates: str) -> str:
            return next((c for c in candidates if c), "")

        facts = dict(self.static_facts)
        facts.update({
            "bag_format": BAG_FORMAT,
            "efm_ros_version": EFM_ROS_VERSION,
            "source": self.source,
            "robot": self.robot,
            "episode_id": ep.episode_id,
            "instruction": pick(start.instruction, end.instruction if end else ""),
            "policy_version": pick(end.policy_version if end else "", start.policy_version,
                                   seen_policy[-1] if len(seen_policy) == 1 else ""),
            "policy_versions_seen": ",".join(seen_policy),
            "reward_model_version": pick(end.reward_model_version if end else "", start.reward_model_version,
                                         seen_reward[-1] if len(seen_reward) == 1 else ""),
            "reward_model_versions_seen": ",".join(seen_reward),
            "messages_lost": str(ep.lost),
            "messages_dropped": str(ep.dropped),
        })
        if ep.image_size is not None:
            facts["image_height"], facts["image_width"] = (str(v) for v in ep.image_size)
        if end is not None:
            facts.update({
                "terminated": "true",
                "terminal_event": end.event,
                "outcome": end.outcome,
                "termination_reason": end.termination_reason or end.event,
                "steps": str(end.steps),
            })
            if end.success_k > 0:  # the detector as it judged this episode (overrides the node parameters)
                facts["success_threshold"], facts["success_k"] = f"{end.success_threshold:g}", str(end.success_k)
        else:
            facts.update({
                "terminated": "false",
                "terminal_event": "",
                "outcome": "unknown",
                "termination_reason": reason or SHUTDOWN_REASON,
                "steps": str(ep.actions),
            })
        return facts

    # -- internals -----------------------------------------------------------------------------
    def _anomaly(self, what: str) -> None:
        with self._lock:
            self._stats.anomalies[what] += 1

    def _episode_id(self, event: Event, recv_ns: int) -> str:
        raw = event.episode_id or f"{self.robot}_{recv_ns}"
        return _EPISODE_ID_SAFE.sub("_", raw).lstrip(".-") or f"episode_{recv_ns}"

    def _start(self, topic: TopicInfo, event: Event, recv_ns: int) -> None:
        episode_id = self._episode_id(event, recv_ns)
        try:
            sink = self._open_bag(episode_id)
        except (OSError, ValueError) as exc:
            sink = None
            message = f"episode {episode_id}: not recorded: {exc}"
            with self._lock:
                self._stats.episodes_failed += 1
                self._stats.last_error = message
            self._on_error(message)
        ep = _Episode(episode_id, event, sink)
        with self._lock:
            self._episode = ep
        carry, self._carry = self._carry, {}
        for info, data, t in sorted(carry.values(), key=lambda c: c[2]):
            if ep.sink is None:
                break
            if self._write(info, data, t):
                with self._lock:
                    self._stats.carried += 1
                    self._stats.outside[info.name] -= 1  # counted outside when it came; it is recorded now

    def _write(self, topic: TopicInfo, data: bytes, recv_ns: int) -> bool:
        ep = self._episode
        if ep.sink is None:
            with self._lock:
                self._stats.not_recorded[topic.name] += 1
            return False
        try:
            ep.sink.add_raw(topic.name, topic.msgtype, data, recv_ns, msgdef=topic.msgdef, rihs01=topic.rihs01)
        except OSError as exc:
            self._fail(ep, exc)
            with self._lock:
                self._stats.not_recorded[topic.name] += 1
            return False
        with self._lock:
            self._stats.written[topic.name] += 1
            self._stats.bytes_written += len(data)
        return True

    def _fail(self, ep: _Episode, exc: OSError) -> None:
        message = f"episode {ep.episode_id}: recording stopped: {exc}"
        ep.sink = None  # the sink closed itself (and kept its staging data for recover-bag)
        with self._lock:
            self._stats.episodes_failed += 1
            self._stats.last_error = message
        self._on_error(message)

    def _finish(self, end: Event | None, reason: str | None) -> Path | None:
        ep = self._episode
        with self._lock:
            self._episode = None
        if ep.sink is None:
            return None
        facts = self.episode_facts(ep, end, reason)
        discarded = self.discard_dir and facts.get("termination_reason") == DISCARD_REASON
        try:
            ep.sink.update_custom_data(facts)
            path = ep.sink.close(into=self.discard_dir) if discarded else ep.sink.close()
        except OSError as exc:  # FileExistsError included: an episode of that id appeared meanwhile
            self._fail(ep, exc)
            return None
        with self._lock:
            if end is not None:
                self._stats.episodes_committed += 1
            else:
                self._stats.episodes_unterminated += 1
            self._stats.last_episode = ep.episode_id
        self._on_commit(path, facts)
        return path


# ------------------------------------------------------------------------------ node helpers
class ReorderBuffer:
    """Releases items in receive-time order once they are ``window_ns`` old.

    An executor takes ready messages subscription by subscription, so a frame received just
    after a START can reach its callback first. Holding items for a short window and sorting
    them by their DDS receive time restores arrival order across topics.
    """

    def __init__(self, window_ns: int) -> None:
        self.window_ns = int(window_ns)
        self._heap: list[tuple[int, int, Any]] = []
        self._seq = itertools.count()

    def push(self, recv_ns: int, item: Any) -> None:
        heapq.heappush(self._heap, (int(recv_ns), next(self._seq), item))

    def pop_ready(self, now_ns: int) -> list[Any]:
        """Items received at or before ``now_ns - window_ns``, oldest first."""
        out = []
        limit = now_ns - self.window_ns
        while self._heap and self._heap[0][0] <= limit:
            out.append(heapq.heappop(self._heap)[2])
        return out

    def drain(self) -> list[Any]:
        """Everything, oldest first (at shutdown)."""
        out = [heapq.heappop(self._heap)[2] for _ in range(len(self._heap))]
        return out

    def next_due_ns(self) -> int | None:
        """When the oldest item becomes ready (None if empty)."""
        return self._heap[0][0] + self.window_ns if self._heap else None

    def __len__(self) -> int:
        return len(self._heap)


class SequenceGaps:
    """Counts messages lost between consecutive receptions from one publisher.

    ROS 2 message info carries the publisher's GID and its publication sequence number (1, 2,
    ...; every publish increments it, whoever subscribes). A jump from n to n + k means k - 1
    messages were published but never taken: lost in transport (best-effort) or overwritten in
    the subscription's KEEP_LAST queue while the logger fell behind. The first message from a
    publisher sets its base (what it sent before the logger subscribed is not a loss).
    """

    #: a jump larger than this is not a loss but a sequence number that means nothing (a DDS
    #: "unknown" sequence number, e.g. 0xFFFFFFFF00000000, or a publisher that restarted with the
    #: same GID): counted in ``anomalies``, and the publisher's base starts again from it
    MAX_PLAUSIBLE_GAP = 1 << 20

    def __init__(self) -> None:
        self._last: dict[tuple[str, bytes], int] = {}
        self.anomalies = 0

    def gap(self, topic: str, publisher: bytes | None, seq: int | None) -> int:
        """Messages lost on ``topic`` from ``publisher`` just before the one numbered ``seq``."""
        if publisher is None or not seq or seq < 0:
            return 0
        key = (topic, bytes(publisher))
        last = self._last.get(key)
        if last is not None and seq - last - 1 > self.MAX_PLAUSIBLE_GAP:
            self.anomalies += 1
            self._last[key] = seq
            return 0
        self._last[key] = max(seq, last or 0)
        if last is None or seq <= last:
            return 0  # first message of this publisher, or a duplicate / reordered one
        return seq - last - 1


@dataclass(frozen=True)
class QosChoice:
    reliable: bool
    transient_local: bool


def choose_qos(publishers: Iterable[tuple[bool, bool]], *, allow_transient_local: bool = True) -> QosChoice | None:
    """A subscription QoS compatible with all ``publishers`` ``(reliable, transient_local)``.

    Reliable when every publisher is reliable (a reliable subscription is incompatible with a
    best-effort publisher; a best-effort one would work with both but loses messages when the
    logger falls behind). Transient-local when every publisher is (a latched topic: the logger
    gets its current value on joining). None when there is no publisher yet.
    """
    pubs = list(publishers)
    if not pubs:
        return None
    return QosChoice(
        reliable=all(r for r, _ in pubs),
        transient_local=allow_transient_local and all(t for _, t in pubs),
    )


class MessageDefinitions:
    """``.msg`` definition (with dependencies) and RIHS01 hash of types the bag writer lacks.

    The bag writer knows ROS 2 Kilted and our interfaces; anything else is looked up as
    ``<prefix>/share/<pkg>/<msg|srv|action>/<Name>.msg`` (or ``.idl``) in ``sys.prefix`` and
    every ``AMENT_PREFIX_PATH`` entry, where rosidl installs them.
    """

    def __init__(self, prefixes: Iterable[str | os.PathLike] | None = None) -> None:
        from rosbags.typesys import Stores, get_types_from_msg, get_typestore

        if prefixes is None:
            prefixes = [sys.prefix, *[p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]]
        self.prefixes = [Path(p) for p in prefixes]
        self.store = get_typestore(Stores.ROS2_KILTED)
        for msgtype, text in itf.custom_type_texts().items():
            self.store.register(get_types_from_msg(text, msgtype))
        self._known = set(self.store.fielddefs)

    def known(self, msgtype: str) -> bool:
        """Whether the bag writer's typestore has the type (no definition needs to be passed)."""
        return msgtype in self._known

    def lookup(self, msgtype: str) -> tuple[str, str]:
        """``(msgdef, rihs01)`` of ``msgtype``; FileNotFoundError / ValueError when unresolvable."""
        self._register(msgtype, depth=0)
        msgdef, _ = self.store.generate_msgdef(msgtype, ros_version=2)
        return msgdef, self.store.hash_rihs01(msgtype)

    def _register(self, msgtype: str, depth: int) -> None:
        from rosbags.typesys import get_types_from_idl, get_types_from_msg

        if msgtype in self.store.fielddefs:
            return
        if depth > 32:
            raise ValueError(f"type {msgtype}: dependency chain too deep")
        parts = msgtype.split("/")
        if len(parts) != 3:
            raise ValueError(f"type {msgtype!r} is not pkg/kind/Name")
        pkg, kind, name = parts
        for prefix in self.prefixes:
            base = prefix / "share" / pkg / kind / name
            if base.with_suffix(".msg").is_file():
                types = get_types_from_msg(base.with_suffix(".msg").read_text(encoding="utf-8"), msgtype)
                break
            if base.with_suffix(".idl").is_file():
                types = get_types_from_idl(base.with_suffix(".idl").read_text(encoding="utf-8"))
                break
        else:
            raise FileNotFoundError(f"no definition of {msgtype} in {[str(p / 'share') for p in self.prefixes]}")
        for dep in _dependencies(types):
            if dep not in types:
                self._register(dep, depth + 1)
        self.store.register(types)


def _dependencies(types: Mapping[str, Any]) -> set[str]:
    """Message types referenced by the fields of ``types`` (rosbags field definitions)."""
    from rosbags.interfaces import Nodetype

    deps: set[str] = set()

    def visit(desc) -> None:
        kind, detail = desc
        if kind == Nodetype.NAME:
            deps.add(detail)
        elif kind in (Nodetype.ARRAY, Nodetype.SEQUENCE):
            visit(detail[0])

    for _, fields in types.values():
        for _, desc in fields:
            visit(desc)
    return deps
