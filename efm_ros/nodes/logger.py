"""The episode logger: every topic of one robot namespace, one rosbag2 (MCAP) per episode.

Run one per robot namespace (``-r __ns:=/robot_0``). Which message goes into which bag, and the
facts a bag carries, are decided by :class:`efm_ros.control.recorder.EpisodeRecorder` (no ROS);
this node discovers topics, receives, and feeds it from a writer thread.

Subscribes
  <every topic under the namespace>   raw (serialised) subscriptions, found by polling the graph
                  every ``discovery_period_s``; a topic is subscribed once it has a publisher, with
                  a QoS compatible with all of them (reliable only if every publisher is,
                  transient-local only if every publisher is, i.e. latched topics such as
                  ``instruction``); re-subscribed when a new publisher needs another QoS. Hidden
                  topics (a ``_`` name token) and ``exclude_topics`` are skipped.
  episode_event   efm_ros/EpisodeEvent: START opens a bag, a terminal event (SUCCESS, TIMEOUT,
                  OPERATOR_STOP, FAULT) is recorded and commits it with the episode facts
Publishes
  /diagnostics    diagnostic_msgs/DiagnosticArray every ``diagnostics_period_s``: state, current
                  episode, messages/s and MB/s written, bytes written, per-topic counts (written,
                  outside episodes, lost, dropped), queue fill, faults. ERROR while recording is
                  impossible (full disk, I/O error), WARN when messages were lost or dropped.
Services
  none
Parameters (all read-only)
  episodes_dir (episodes)      directory of the bags; robot ('' = the namespace) name in the bags
  discovery_period_s (1.0)     graph polling period, s
  queue_depth (50)             KEEP_LAST depth of every subscription
  exclude_topics ([])          names / fnmatch patterns relative to the namespace not to record
  include_hidden_topics (false)
  chunk_bytes (262144), max_unflushed_s (0.5)  MCAP chunk size and age limits (crash loss)
  reorder_window_s (0.1)       messages are written in receive-time order after this delay
  compression ('' | zstd), fsync (true)
  min_free_mb (100.0)          no new bag with less free disk space
  max_queue_mb (512.0)         received-but-unwritten bytes before messages are dropped (counted)
  success_threshold (-1.0), success_k (0)  s and k of the success detector, written to custom_data
                               when set (>= 0, > 0)
  diagnostics_period_s (1.0)

Bags go to ``episodes_dir/<episode_id>/`` (see efm_ros/data/README.md): written in
``.staging/`` and renamed into place only once complete, so the trainer never sees a partial
bag. Log time of every message = its receive time (DDS reception timestamp); header stamps
stay in the payloads.

Guarantees
  * SIGINT/SIGTERM: the open bag is closed as a complete bag with ``terminated: "false"``,
    ``termination_reason: "logger_shutdown"``, ``outcome: "unknown"`` (the trainer skips it).
  * SIGKILL: the logger recovers its robot's crashed bags when it starts again (respawn), as
    ``efm-ros recover-bag <episodes_dir>/.staging/<id>`` does by hand: all but the last
    ≤ ``reorder_window_s + max_unflushed_s + 0.1`` s (0.7 s with the defaults): an MCAP chunk
    is written out when it reaches ``chunk_bytes`` or its oldest message is
    ``max_unflushed_s`` old, whatever the data rate.
  * Full disk / I/O error: recording of that episode stops with a logged error and an ERROR on
    /diagnostics; completed episodes are untouched; what was written stays in ``.staging/`` for
    recover-bag; the node keeps running and the next START tries again (if ``min_free_mb``
    are free).
  * Lost messages are counted from the publishers' sequence numbers (per publisher GID) and
    the middleware's message-lost events; messages dropped because the write queue exceeded
    ``max_queue_mb`` are counted too; both per episode in custom_data.
"""
from __future__ import annotations

import errno
import fnmatch
import importlib
import shutil
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import Image

from efm_ros.control.recorder import (
    SOURCE,
    EpisodeRecorder,
    Event,
    MessageDefinitions,
    QosChoice,
    ReorderBuffer,
    SequenceGaps,
    TopicInfo,
    choose_qos,
)
from efm_ros.data import interfaces as itf
from efm_ros.data.bag import DEFAULT_CHUNK_BYTES, EpisodeBagWriter, EpisodeWriteError
from efm_ros.msg import EpisodeEvent, PolicyAction, StepsToGo
from efm_ros.nodes.common import declare, diagnostic_array, spin_node

_ALWAYS_SKIPPED = ("/rosout", "/parameter_events", "/diagnostics")
_VERSIONED = {itf.POLICY_ACTION_TOPIC: PolicyAction, itf.STEPS_TO_GO_TOPIC: StepsToGo}


@dataclass
class _Item:
    """One received message on its way to the writer thread (``data`` None: dropped, queue full)."""

    topic: TopicInfo
    data: bytes | None
    recv_ns: int
    lost: int


@dataclass
class _Sub:
    subscription: object
    topic: TopicInfo
    qos: QosChoice


class LoggerNode(Node):
    EXECUTOR = "single"
    """spins on the wait-set executor: its raw subscriptions take the MessageInfo, which rclpy's
    EventsExecutor does not deliver (efm_ros.nodes.common.executor_lanes)"""

    def __init__(self, **kwargs):
        super().__init__("logger", **kwargs)
        ns = self.get_namespace()
        self.episodes_dir = Path(declare(self, "episodes_dir", "episodes", "directory of episode bags", read_only=True))
        self.robot = declare(self, "robot", "", "robot name in the bags (default: the namespace)", read_only=True) \
            or ns.strip("/") or "robot"
        source = declare(self, "source", SOURCE, "custom_data 'source' of the bags: 'policy' (practice) or 'teleop' "
                         "(demonstrations recorded in record mode)", read_only=True)
        discard_dir = declare(self, "discard_dir", "discarded", "subdirectory of episodes_dir for the episodes an "
                              "operator discarded (never trained on); '' = keep them with the others", read_only=True)
        self.discovery_period = declare(self, "discovery_period_s", 1.0, "graph polling period for new topics, s",
                                        lo=0.05, hi=60.0, read_only=True)
        self.depth = declare(self, "queue_depth", 50, "history depth of each subscription (KEEP_LAST)",
                             lo=1, hi=10000, read_only=True)
        # declared by type, not by an empty default: rclpy would type [] as a BYTE_ARRAY and then
        # refuse the string list of a params file
        self.exclude = list(self.declare_parameter("exclude_topics", Parameter.Type.STRING_ARRAY, ParameterDescriptor(
            description="topics not recorded: names or fnmatch patterns relative to the namespace "
                        "(e.g. camera/image_raw)", type=ParameterType.PARAMETER_STRING_ARRAY, read_only=True)).value
                            or [])
        self.include_hidden = declare(self, "include_hidden_topics", False, "also record hidden topics (_name)",
                                      read_only=True)
        self.chunk_bytes = declare(self, "chunk_bytes", DEFAULT_CHUNK_BYTES, "MCAP chunk size, bytes",
                                   lo=1024, hi=64 * 2**20, read_only=True)
        self.max_unflushed = declare(self, "max_unflushed_s", 0.5, "a chunk is written out once its oldest message "
                                     "is this old (bounds SIGKILL loss in time), s", lo=0.05, hi=60.0, read_only=True)
        self.reorder_window = declare(self, "reorder_window_s", 0.1, "messages are written in receive-time order "
                                      "after this delay (callbacks run out of arrival order), s",
                                      lo=0.0, hi=2.0, read_only=True)
        compression = declare(self, "compression", "", "MCAP chunk compression: '' or 'zstd'", read_only=True)
        self.fsync = declare(self, "fsync", True, "fsync each bag before it becomes visible", read_only=True)
        self.min_free_mb = declare(self, "min_free_mb", 100.0, "do not start a bag with less free disk space, MB",
                                   lo=0.0, hi=1e7, read_only=True)
        self.max_queue_mb = declare(self, "max_queue_mb", 512.0, "memory for received, not yet written messages, "
                                    "MB; beyond it messages are dropped (counted)", lo=1.0, hi=1e6, read_only=True)
        s = declare(self, "success_threshold", -1.0, "s of the success detector, recorded in custom_data "
                    "(negative: not recorded)", lo=-1.0, hi=1e6, read_only=True)
        k = declare(self, "success_k", 0, "k of the success detector, recorded in custom_data (0: not recorded)",
                    lo=0, hi=100000, read_only=True)
        diag_period = declare(self, "diagnostics_period_s", 1.0, "/diagnostics period, s", lo=0.1, hi=60.0,
                              read_only=True)
        if compression not in ("", "zstd"):
            raise ValueError(f"compression must be '' or 'zstd', got {compression!r}")
        self.compression = compression or None
        self.exclude = [p.strip("/") for p in self.exclude if p.strip("/")]
        self.prefix = ns.rstrip("/") + "/"
        self.event_topic = self.prefix + itf.EPISODE_EVENT_TOPIC
        facts = {}
        if s >= 0:
            facts["success_threshold"] = f"{s:g}"
        if k > 0:
            facts["success_k"] = str(k)

        self.recorder = EpisodeRecorder(self.robot, self._open_bag, static_facts=facts,
                                        on_error=self._on_recorder_error, on_commit=self._on_commit,
                                        source=source, discard_dir=discard_dir or None)
        self.definitions = MessageDefinitions()
        self.gaps = SequenceGaps()
        self.subs: dict[str, _Sub] = {}
        self.skipped: dict[str, str] = {}  # topic -> why it is not recorded
        self.lost_events: Counter = Counter()  # topic -> middleware message-lost events
        self.fault = ""  # last error while no bag could be written; cleared when a bag opens
        self._cond = threading.Condition()
        self._queue: deque[_Item] = deque()
        self._pending_bytes = 0
        self._pending_high_water = 0
        self._stopping = False
        self._closed = False
        self._last_diag = (time.monotonic(), self.recorder.snapshot(), 0)  # (time, stats, lost + dropped)

        self.recovered_at_start = self._recover_crashed_bags()
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._subscribe(self.event_topic, itf.EPISODE_EVENT_TYPE, QosChoice(reliable=True, transient_local=False))
        self._writer = threading.Thread(target=self._writer_loop, name=f"logger-writer{ns}", daemon=True)
        self._writer.start()
        self._discover()
        self.create_timer(self.discovery_period, self._discover)
        self.create_timer(diag_period, self._publish_diagnostics)
        self.get_logger().info(f"recording {self.prefix}* of robot {self.robot!r} into {self.episodes_dir}")

    # -- discovery ----------------------------------------------------------------------------
    def _wanted(self, name: str) -> bool:
        if not name.startswith(self.prefix) or name in _ALWAYS_SKIPPED:
            return False
        rel = name[len(self.prefix):]
        if not self.include_hidden and any(token.startswith("_") for token in rel.split("/")):
            return False
        return not any(fnmatch.fnmatchcase(rel, pattern) for pattern in self.exclude)

    def _discover(self) -> None:
        if self._stopping:
            return
        for name, types in self.get_topic_names_and_types():
            if not self._wanted(name) or name in self.skipped:
                continue
            if len(types) != 1:
                self._skip(name, f"several types on one topic: {types}")
                continue
            me = self.get_fully_qualified_name()
            publishers = [
                (p.qos_profile.reliability == QoSReliabilityPolicy.RELIABLE,
                 p.qos_profile.durability == QoSDurabilityPolicy.TRANSIENT_LOCAL)
                for p in self.get_publishers_info_by_topic(name)
                if f"{p.node_namespace.rstrip('/')}/{p.node_name}" != me
            ]
            # events are never latched: a replayed old START would open a bag in the middle of nowhere
            choice = choose_qos(publishers, allow_transient_local=name != self.event_topic)
            current = self.subs.get(name)
            if choice is None or (current is not None and current.qos == choice
                                  and current.topic.msgtype == types[0]):
                continue
            self._subscribe(name, types[0], choice)

    def _skip(self, name: str, why: str) -> None:
        self.skipped[name] = why
        self.get_logger().warning(f"not recording {name}: {why}")

    def _subscribe(self, name: str, msgtype: str, qos: QosChoice) -> None:
        try:
            pkg, kind, cls_name = msgtype.split("/")
            msg_class = getattr(importlib.import_module(f"{pkg}.{kind}"), cls_name)
            msgdef = rihs01 = None
            if not self.definitions.known(msgtype):
                msgdef, rihs01 = self.definitions.lookup(msgtype)
        except (ImportError, AttributeError, ValueError, OSError, KeyError) as exc:
            self._skip(name, f"type {msgtype} unusable here: {exc}")
            return
        topic = TopicInfo(name, msgtype, latched=qos.transient_local, msgdef=msgdef, rihs01=rihs01)
        profile = QoSProfile(
            history=QoSHistoryPolicy.KEEP_LAST, depth=self.depth,
            reliability=QoSReliabilityPolicy.RELIABLE if qos.reliable else QoSReliabilityPolicy.BEST_EFFORT,
            durability=QoSDurabilityPolicy.TRANSIENT_LOCAL if qos.transient_local else QoSDurabilityPolicy.VOLATILE,
        )
        old = self.subs.pop(name, None)
        if old is not None:
            self.destroy_subscription(old.subscription)
        events = SubscriptionEventCallbacks(message_lost=lambda info, n=name: self._on_lost_event(n, info))
        sub = self.create_subscription(msg_class, name, self._callback(topic), profile, raw=True,
                                       event_callbacks=events)
        self.subs[name] = _Sub(sub, topic, qos)
        verb = "re-subscribed" if old is not None else "recording"
        self.get_logger().info(f"{verb} {name} [{msgtype}] "
                               f"({'reliable' if qos.reliable else 'best effort'}"
                               f"{', transient local' if qos.transient_local else ''})")

    # -- receiving (executor thread) ------------------------------------------------------------
    def _callback(self, topic: TopicInfo):
        def on_message(data: bytes, info) -> None:
            recv_ns = info.get("received_timestamp") or time.time_ns()
            gid = info.get("publisher_gid")
            lost = self.gaps.gap(topic.name, gid["data"] if gid else None, info.get("publication_sequence_number"))
            self._enqueue(_Item(topic, data, recv_ns, lost))
        return on_message

    def _on_lost_event(self, name: str, info) -> None:
        self.lost_events[name] += int(info.total_count_change)

    def _enqueue(self, item: _Item) -> None:
        size = len(item.data)
        with self._cond:
            if self._stopping:
                return
            if self._pending_bytes + size > self.max_queue_mb * 1e6 and item.topic.name != self.event_topic:
                item.data, size = None, 0  # keep its place (and its lost count), drop the payload
            self._pending_bytes += size
            self._pending_high_water = max(self._pending_high_water, self._pending_bytes)
            self._queue.append(item)
            self._cond.notify()

    # -- writing (writer thread) ----------------------------------------------------------------
    def _writer_loop(self) -> None:
        buffer = ReorderBuffer(int(self.reorder_window * 1e9))
        tick = min(0.1, self.max_unflushed / 4)
        while True:
            with self._cond:
                if not self._queue and not self._stopping:
                    due = buffer.next_due_ns()
                    wait = tick if due is None else min(tick, max(0.0, (due - time.time_ns()) / 1e9))
                    self._cond.wait(wait)
                items = list(self._queue)
                self._queue.clear()
                stopping = self._stopping
            for item in items:
                buffer.push(item.recv_ns, item)
            ready = buffer.drain() if stopping else buffer.pop_ready(time.time_ns())
            for item in ready:
                self._process(item)
            try:
                self.recorder.flush_if_due()
                if stopping:
                    self.recorder.shutdown()
                    return
            except Exception as exc:  # noqa: BLE001 - the writer thread must survive anything
                self.get_logger().error(f"recorder error: {exc!r}")
                if stopping:
                    return

    def _process(self, item: _Item) -> None:
        try:
            if item.data is None:
                self.recorder.on_dropped(item.topic)
                return
            if item.topic.name == self.event_topic:
                try:
                    event = Event.from_msg(deserialize_message(item.data, EpisodeEvent))
                except Exception as exc:  # noqa: BLE001 - a malformed event is recorded, not obeyed
                    self.get_logger().warning(f"undecodable episode event ({exc}); recorded as a plain message")
                else:
                    self.recorder.on_event(item.topic, item.data, item.recv_ns, event, lost=item.lost)
                    return
            version = size = None
            rel = item.topic.name[len(self.prefix):]
            msg_class = _VERSIONED.get(rel)
            if msg_class is not None and item.topic.msgtype == f"efm_ros/msg/{msg_class.__name__}":
                version = deserialize_message(item.data, msg_class).model_version
            elif rel == itf.IMAGE_TOPIC and item.topic.msgtype == itf.IMAGE_TYPE and self.recorder.wants_image_size:
                image = deserialize_message(item.data, Image)  # once per episode
                size = (image.height, image.width)
            self.recorder.on_message(item.topic, item.data, item.recv_ns, lost=item.lost, model_version=version,
                                     image_size=size)
        except Exception as exc:  # noqa: BLE001 - one bad message must not stop the recording
            self.get_logger().error(f"cannot record a message of {item.topic.name}: {exc!r}")
        finally:
            with self._cond:
                self._pending_bytes -= len(item.data) if item.data is not None else 0

    def _open_bag(self, episode_id: str) -> EpisodeBagWriter:
        free = shutil.disk_usage(_existing_parent(self.episodes_dir)).free
        if free < self.min_free_mb * 1e6:
            raise EpisodeWriteError(errno.ENOSPC, f"only {free / 1e6:.1f} MB free in {str(self.episodes_dir)!r} "
                                    f"(min_free_mb {self.min_free_mb:g}); disk full, not recording")
        writer = EpisodeBagWriter(
            self.episodes_dir, episode_id, robot=self.robot, chunk_bytes=self.chunk_bytes,
            compression=self.compression, fsync=self.fsync, max_unflushed_s=self.max_unflushed,
            keep_staging_on_error=True,
        )
        writer.open()
        self.fault = ""
        self.get_logger().info(f"episode {episode_id}: recording")
        return writer

    def _recover_crashed_bags(self) -> int:
        """A logger that was killed (and respawned) left its open bag in .staging: recover it now,
        as ``efm-ros recover-bag`` would, so no promised data waits for a person. Only this robot's."""
        from efm_ros.data.recover import recover_crashed

        recovered = 0
        for episode_id, what in recover_crashed(self.episodes_dir, robot=self.robot):
            ok = what.startswith("recovered")
            recovered += ok
            (self.get_logger().warning if ok else self.get_logger().error)(f"crashed bag {episode_id}: {what}")
        return recovered

    def _on_recorder_error(self, message: str) -> None:
        self.fault = message
        self.get_logger().error(message)

    def _on_commit(self, path: Path, facts: dict[str, str]) -> None:
        end = (f"{facts['outcome']} ({facts['termination_reason']})" if facts["terminated"] == "true"
               else f"NOT terminated ({facts['termination_reason']})")
        self.get_logger().info(f"episode {facts['episode_id']}: {end}, {facts['steps']} steps -> {path}")

    # -- diagnostics ------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        now, stats = time.monotonic(), self.recorder.snapshot()
        then, before, losses_before = self._last_diag
        written = sum(stats.written.values())
        lost = sum(stats.lost.values()) + sum(self.lost_events.values())
        dropped = sum(stats.dropped.values())
        self._last_diag = (now, stats, lost + dropped)
        new_losses = lost + dropped - losses_before
        dt = max(now - then, 1e-6)
        with self._cond:
            pending, high = self._pending_bytes, self._pending_high_water
        values = {
            "state": self.recorder.state,
            "episode_id": self.recorder.episode_id,
            "episodes_committed": stats.episodes_committed,
            "episodes_unterminated": stats.episodes_unterminated,
            "episodes_failed": stats.episodes_failed,
            "episodes_recovered_at_start": self.recovered_at_start,
            "last_episode": stats.last_episode,
            "messages_written": written,
            "messages_per_s": f"{(written - sum(before.written.values())) / dt:.1f}",
            "write_mb_per_s": f"{(stats.bytes_written - before.bytes_written) / dt / 1e6:.2f}",
            "bytes_written": stats.bytes_written,
            "outside_episodes": sum(stats.outside.values()),
            "not_recorded": sum(stats.not_recorded.values()),
            "lost": lost,
            "dropped_queue_full": dropped,
            "carried_latched": stats.carried,
            "queue_mb": f"{pending / 1e6:.2f}",
            "queue_high_water_mb": f"{high / 1e6:.2f}",
            "topics": len(self.subs),
            "fault": self.fault,
        }
        values.update({f"anomaly_{k}": v for k, v in sorted(stats.anomalies.items())})
        if self.gaps.anomalies:
            values["anomaly_sequence_number"] = self.gaps.anomalies  # jumps too large to be losses
        values.update({f"not_recording {t}": why for t, why in sorted(self.skipped.items())})
        for name in sorted(set(self.subs) | set(stats.written) | set(stats.outside)):
            values[f"topic {name[len(self.prefix):]}"] = (
                f"written={stats.written[name]} outside={stats.outside[name]} "
                f"lost={stats.lost[name] + self.lost_events[name]} dropped={stats.dropped[name]}")
        if self.fault:
            level, message = DiagnosticStatus.ERROR, self.fault
        elif new_losses > 0 or self.skipped:
            level = DiagnosticStatus.WARN
            message = f"{lost} messages lost, {dropped} dropped" if new_losses > 0 else \
                f"{len(self.skipped)} topics not recordable"
        else:
            level, message = DiagnosticStatus.OK, f"{self.recorder.state} {self.recorder.episode_id}".strip()
        self.diag_pub.publish(diagnostic_array(self, "episode logger", level, message, values))

    # -- shutdown -----------------------------------------------------------------------------------
    def close(self, timeout_s: float = 60.0) -> None:
        """Write everything received, close the open bag as not terminated; idempotent."""
        if getattr(self, "_closed", True):  # closed already, or the constructor did not get this far
            return
        self._closed = True
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._writer.join(timeout_s)
        if self._writer.is_alive():
            self.get_logger().error(f"the bag writer did not finish within {timeout_s:g} s; the open bag stays "
                                    f"in {self.episodes_dir / '.staging'} for recover-bag")
            return
        st = self.recorder.snapshot()
        self.get_logger().info(
            f"stopped: {st.episodes_committed} episodes committed, {st.episodes_unterminated} not terminated, "
            f"{st.episodes_failed} failed; messages: {sum(st.written.values())} written, "
            f"{sum(st.outside.values())} outside episodes, {sum(st.not_recorded.values())} not recorded, "
            f"{sum(st.lost.values()) + sum(self.lost_events.values())} lost, {sum(st.dropped.values())} dropped")

    def destroy_node(self):
        self.close()
        return super().destroy_node()


def _existing_parent(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def main(argv: list[str] | None = None) -> int:
    return spin_node(LoggerNode, argv)


if __name__ == "__main__":
    raise SystemExit(main())
