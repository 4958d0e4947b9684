"""The logger's episode segmentation without ROS: which message goes to which bag, counts, facts."""
from __future__ import annotations

import errno
import time
from pathlib import Path

import numpy as np
import pytest

from efm_ros.control.recorder import (
    EpisodeRecorder,
    Event,
    MessageDefinitions,
    QosChoice,
    ReorderBuffer,
    SequenceGaps,
    TopicInfo,
    choose_qos,
)
from efm_ros.data import EpisodeBagWriter, EpisodeWriteError, list_episodes, read_episode
from efm_ros.data import interfaces as itf

NS = "/robot_1"
IMAGE = TopicInfo(f"{NS}/camera/image", itf.IMAGE_TYPE)
ACTION = TopicInfo(f"{NS}/policy_action", itf.POLICY_ACTION_TYPE)
STG = TopicInfo(f"{NS}/steps_to_go", itf.STEPS_TO_GO_TYPE)
EVENTS = TopicInfo(f"{NS}/episode_event", itf.EPISODE_EVENT_TYPE)
INSTRUCTION = TopicInfo(f"{NS}/instruction", itf.STRING_TYPE, latched=True)


class FakeSink:
    """Records what the recorder writes; can fail on the n-th write like a full disk."""

    def __init__(self, episode_id: str, fail_at: int | None = None):
        self.episode_id, self.fail_at = episode_id, fail_at
        self.messages: list[tuple[str, bytes, int]] = []
        self.custom: dict[str, str] = {}
        self.closed = False
        self.flushes = 0

    def add_raw(self, topic, msgtype, data, log_time_ns, *, msgdef=None, rihs01=None):
        if self.fail_at is not None and len(self.messages) >= self.fail_at:
            raise EpisodeWriteError(errno.ENOSPC, "no space left on device; kept for recover-bag")
        self.messages.append((topic, data, log_time_ns))

    def update_custom_data(self, data):
        self.custom.update(data)

    def flush_if_due(self):
        self.flushes += 1
        return False

    def close(self):
        self.closed = True
        return Path("/episodes") / self.episode_id


class Harness:
    def __init__(self, fail: dict[str, int | None] | None = None, refuse: set[str] = frozenset()):
        self.sinks: dict[str, FakeSink] = {}
        self.errors: list[str] = []
        self.commits: list[tuple[Path, dict]] = []
        self.fail, self.refuse = fail or {}, refuse
        self.recorder = EpisodeRecorder(
            "robot_1", self.open, static_facts={"success_threshold": "3", "success_k": "2"},
            on_error=self.errors.append, on_commit=lambda p, f: self.commits.append((p, f)))
        self.t = 1_000

    def open(self, episode_id):
        if episode_id in self.refuse:
            raise EpisodeWriteError(errno.ENOSPC, "only 0.1 MB free; disk full, not recording")
        sink = self.sinks[episode_id] = FakeSink(episode_id, self.fail.get(episode_id))
        return sink

    def msg(self, topic, payload=b"x", **kw):
        self.t += 1
        self.recorder.on_message(topic, payload, self.t, **kw)
        return self.t

    def event(self, name, episode_id="", **kw):
        self.t += 1
        self.recorder.on_event(EVENTS, name.encode(), self.t, Event(name, episode_id, **kw))
        return self.t


def test_messages_between_start_and_terminal_form_one_bag_with_the_episode_facts():
    h = Harness()
    r = h.recorder
    t_instr = h.msg(INSTRUCTION, b"instr-1")  # latched, published by the robot's reset
    h.msg(IMAGE, b"early frame")
    assert r.state == "idle" and r.snapshot().outside[IMAGE.name] == 1

    h.event("start", "robot_1_e1", instruction="push the red block", policy_version="", reward_model_version="rm1")
    assert r.state == "recording" and r.episode_id == "robot_1_e1" and r.wants_image_size
    h.msg(IMAGE, b"f0", image_size=(96, 96))
    assert not r.wants_image_size
    h.msg(ACTION, b"a0", model_version="pol-1")
    h.msg(STG, b"s0", model_version="rm1")
    h.msg(IMAGE, b"f1", lost=2)
    h.msg(ACTION, b"a1", model_version="pol-2")
    h.msg(IMAGE, b"f2")
    t_end = h.event("success", "robot_1_e1", outcome="success", termination_reason="success: d<=3 for 2 ticks",
                    steps=2, policy_version="pol-2", reward_model_version="rm1")
    sink = h.sinks["robot_1_e1"]
    assert sink.closed and r.state == "idle"
    # the carried latched instruction first (its own receive time), then everything in order, the terminal last
    assert sink.messages[0] == (INSTRUCTION.name, b"instr-1", t_instr)
    assert [m[1] for m in sink.messages[1:]] == [b"start", b"f0", b"a0", b"s0", b"f1", b"a1", b"f2", b"success"]
    assert sink.messages[-1][2] == t_end
    facts = sink.custom
    assert facts == h.commits[0][1] and h.commits[0][0] == Path("/episodes/robot_1_e1")
    expected = {
        "robot": "robot_1", "episode_id": "robot_1_e1", "instruction": "push the red block", "source": "policy",
        "outcome": "success", "termination_reason": "success: d<=3 for 2 ticks", "terminated": "true",
        "terminal_event": "success", "steps": "2", "policy_version": "pol-2", "policy_versions_seen": "pol-1,pol-2",
        "reward_model_version": "rm1", "reward_model_versions_seen": "rm1", "messages_lost": "2",
        "messages_dropped": "0", "success_threshold": "3", "success_k": "2", "image_height": "96",
        "image_width": "96", "bag_format": "efm_ros.episode/1",
    }
    assert {k: facts[k] for k in expected} == expected

    # the reset: not part of any episode, counted
    h.msg(IMAGE, b"reset frame")
    h.event("reset_done", "robot_1_e1")
    h.msg(INSTRUCTION, b"instr-2")
    h.recorder.on_dropped(IMAGE)
    stats = r.snapshot()
    assert stats.outside == {IMAGE.name: 2, EVENTS.name: 1, INSTRUCTION.name: 1}
    assert stats.written[IMAGE.name] == 3 and stats.written[INSTRUCTION.name] == 1 and stats.carried == 1
    assert stats.lost == {IMAGE.name: 2} and stats.dropped == {IMAGE.name: 1}
    assert stats.events == {"start": 1, "success": 1, "reset_done": 1} and stats.episodes_committed == 1
    assert stats.bytes_written == sum(len(m[1]) for m in sink.messages)

    # shutdown mid-episode: a complete bag, visibly not terminated
    h.event("start", "robot_1_e2", instruction="push the blue block", policy_version="pol-2")
    h.msg(IMAGE, b"g0")
    h.msg(ACTION, b"b0", model_version="pol-2")
    path = r.shutdown()
    sink2 = h.sinks["robot_1_e2"]
    assert path == Path("/episodes/robot_1_e2") and sink2.closed
    assert [m[1] for m in sink2.messages] == [b"instr-2", b"start", b"g0", b"b0"]
    assert {k: sink2.custom[k] for k in ("terminated", "termination_reason", "outcome", "steps", "policy_version")} \
        == {"terminated": "false", "termination_reason": "logger_shutdown", "outcome": "unknown", "steps": "1",
            "policy_version": "pol-2"}
    assert r.snapshot().episodes_unterminated == 1 and r.shutdown() is None and h.errors == []


def test_unexpected_event_sequences_are_counted_and_never_lose_a_bag():
    h = Harness()
    r = h.recorder
    h.event("timeout", "ghost", outcome="failure")  # terminal without a START: outside
    h.event("start", "e1")
    h.msg(IMAGE)
    h.event("start", "e2")  # no terminal for e1: closed as not terminated
    assert h.sinks["e1"].closed and h.sinks["e1"].custom["terminated"] == "false"
    assert h.sinks["e1"].custom["termination_reason"].startswith("interrupted: START of e2")
    h.event("success", "other", outcome="success")  # someone else's terminal: recorded, e2 goes on
    assert r.state == "recording" and r.episode_id == "e2" and not h.sinks["e2"].closed
    h.event("operator_stop", "", outcome="failure", steps=4)  # no id: ends the open episode
    assert h.sinks["e2"].closed and h.sinks["e2"].custom["outcome"] == "failure"
    assert h.sinks["e2"].custom["termination_reason"] == "operator_stop"  # event name when no reason given
    h.event("start", "")  # no id: generated from robot and receive time
    assert r.episode_id.startswith("robot_1_") and r.episode_id in h.sinks
    h.event("start", "bad/id with spaces")
    assert r.episode_id == "bad_id_with_spaces"
    stats = r.snapshot()
    assert stats.anomalies == {"terminal_without_start": 1, "start_without_terminal": 2,
                               "terminal_of_other_episode": 1}
    assert stats.outside[EVENTS.name] == 1 and stats.episodes_committed == 1 and stats.episodes_unterminated == 2


def test_a_failing_bag_stops_that_episode_only_and_reports_it():
    h = Harness(fail={"e2": 3}, refuse={"e3"})
    r = h.recorder
    h.event("start", "e1")
    h.msg(IMAGE)
    h.event("success", "e1", outcome="success")
    h.event("start", "e2")
    for _ in range(5):
        h.msg(IMAGE)  # the 3rd write fails (disk full)
    assert r.state == "failed" and len(h.errors) == 1 and "e2: recording stopped" in h.errors[0]
    assert "no space left" in h.errors[0]
    r.flush_if_due()  # no sink: nothing to flush, no error
    h.event("timeout", "e2", outcome="failure")
    assert r.state == "idle" and not h.sinks["e2"].closed and len(h.commits) == 1
    h.event("start", "e3")  # refused at open (free space below the limit)
    h.msg(IMAGE)
    h.event("success", "e3")
    assert "e3: not recorded" in h.errors[1] and "disk full" in h.errors[1]
    h.event("start", "e4")  # space again: recording resumes
    h.msg(IMAGE)
    r.flush_if_due()
    h.event("success", "e4", outcome="success")
    stats = r.snapshot()
    assert [p.name for p, _ in h.commits] == ["e1", "e4"] and h.sinks["e4"].flushes == 1
    assert stats.episodes_failed == 2 and "disk full" in stats.last_error
    assert stats.not_recorded == {IMAGE.name: 4, EVENTS.name: 3}  # e2: 3 frames + timeout; e3: frame + 2 events
    assert stats.written[IMAGE.name] == 1 + 2 + 1


def test_recorder_with_the_real_bag_writer_gives_an_episode_the_trainer_reads(tmp_path):
    """Raw CDR in, a committed rosbag out that read_episode aligns (no ROS involved)."""
    store = itf.typestore()
    t = store.types
    rng = np.random.default_rng(3)

    def header(ns):
        return t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9),
                                        frame_id="camera")

    def cdr(msg, msgtype):
        return bytes(store.serialize_cdr(msg, msgtype))

    def open_bag(episode_id):
        w = EpisodeBagWriter(tmp_path, episode_id, robot="robot_1", max_unflushed_s=0.5, keep_staging_on_error=True)
        w.open()
        return w

    r = EpisodeRecorder("robot_1", open_bag)
    base = 1_900_000_000 * 10**9
    frames = rng.integers(0, 256, (4, 12, 16, 3), dtype=np.uint8)
    ev = t[itf.EPISODE_EVENT_TYPE]
    start = ev(header=header(base), robot="robot_1", episode_id="robot_1_e7", event=0, instruction="push it",
               termination_reason="", outcome=0, steps=0, policy_version="pol-9", reward_model_version="rm-2",
               success_threshold=0.0, success_k=0)
    r.on_message(INSTRUCTION, cdr(t[itf.STRING_TYPE](data="push it"), itf.STRING_TYPE), base - 5)
    r.on_event(EVENTS, cdr(start, itf.EPISODE_EVENT_TYPE), base, Event.from_msg(start))
    for k in range(4):
        stamp = base + (k + 1) * 100_000_000
        img = t[itf.IMAGE_TYPE](header=header(stamp), height=12, width=16, encoding="rgb8", is_bigendian=0, step=48,
                                data=frames[k].reshape(-1))
        r.on_message(IMAGE, cdr(img, itf.IMAGE_TYPE), stamp + 1000, image_size=(12, 16))
        if k < 3:
            act = t[itf.POLICY_ACTION_TYPE](header=header(stamp), episode_id="robot_1_e7", step=k,
                                            action=np.array([0.5, -0.25], np.float32),
                                            tokens=np.array([3, 4], np.int32), log_prob=-1.0, entropy=0.5,
                                            model_version="pol-9")
            r.on_message(ACTION, cdr(act, itf.POLICY_ACTION_TYPE), stamp + 2000, model_version="pol-9")
    end = ev(header=header(base + 10**9), robot="robot_1", episode_id="robot_1_e7", event=2, instruction="push it",
             termination_reason="timeout", outcome=2, steps=3, policy_version="pol-9", reward_model_version="rm-2",
             success_threshold=2.5, success_k=3)
    r.on_event(EVENTS, cdr(end, itf.EPISODE_EVENT_TYPE), base + 10**9, Event.from_msg(end))

    assert list_episodes(tmp_path) == [tmp_path / "robot_1_e7"]
    ep = read_episode(tmp_path / "robot_1_e7")
    assert ep.num_steps == 3 and np.array_equal(ep.frames, frames) and ep.outcome == "failure"
    assert ep.instruction == "push it" and ep.policy_versions == ["pol-9"] * 3
    assert [e.event for e in ep.events] == ["start", "timeout"]
    assert ep.custom_data["reward_model_version"] == "rm-2" and ep.custom_data["terminated"] == "true"
    assert (ep.custom_data["success_threshold"], ep.custom_data["success_k"]) == ("2.5", "3")  # from the event
    assert ep.events[-1].success_k == 3 and ep.events[-1].success_threshold == 2.5
    assert ep.topic_counts[INSTRUCTION.name] == 1 and ep.dropped == {}


def test_time_limited_chunks_reach_the_disk_without_further_messages(tmp_path):
    """max_unflushed_s: a chunk is written out when it is old, not only when it is big."""
    from mcap.records import Message
    from mcap.stream_reader import StreamReader

    def messages_on_disk(writer):
        n = 0
        with open(writer.staging_path / f"{writer.episode_id}.mcap", "rb") as f:
            try:
                for rec in StreamReader(f, skip_magic=False).records:
                    n += isinstance(rec, Message)
            except Exception:  # noqa: BLE001 - an unfinished file ends without a footer
                pass
        return n

    timed = EpisodeBagWriter(tmp_path, "timed", robot="r", max_unflushed_s=0.05)
    sized = EpisodeBagWriter(tmp_path, "sized", robot="r")
    for w in (timed, sized):
        w.open()
        w.add_instruction("small message", 1)
    assert not timed.flush_if_due() and messages_on_disk(timed) == 0  # too young
    time.sleep(0.06)
    assert timed.flush_if_due() and messages_on_disk(timed) == 1
    assert not timed.flush_if_due()  # nothing pending
    time.sleep(0.06)
    timed.add_instruction("opens a new chunk", 2)  # its chunk is young: stays in memory
    assert messages_on_disk(timed) == 1
    time.sleep(0.06)
    timed.add_instruction("closes the chunk it joins", 3)
    assert messages_on_disk(timed) == 3
    assert not sized.flush_if_due() and messages_on_disk(sized) == 0  # size-only: waits for 256 KiB
    for w in (timed, sized):
        w.close()
    with pytest.raises(ValueError, match="max_unflushed_s"):
        EpisodeBagWriter(tmp_path, "x", robot="r", max_unflushed_s=0)


def test_reorder_buffer_releases_in_receive_order_after_the_window():
    buf = ReorderBuffer(window_ns=100)
    for recv, item in [(50, "frame"), (10, "start"), (60, "action"), (200, "late")]:
        buf.push(recv, item)
    assert buf.next_due_ns() == 110
    assert buf.pop_ready(now_ns=105) == []
    assert buf.pop_ready(now_ns=165) == ["start", "frame", "action"]
    assert len(buf) == 1 and buf.drain() == ["late"] and buf.next_due_ns() is None
    buf.push(5, "a")
    buf.push(5, "b")  # equal times keep arrival order
    assert buf.pop_ready(10**9) == ["a", "b"]


def test_sequence_gaps_count_lost_messages_per_publisher():
    g = SequenceGaps()
    assert g.gap("/t", b"pub1", 41) == 0  # first from a publisher: its base
    assert g.gap("/t", b"pub1", 42) == 0
    assert g.gap("/t", b"pub1", 45) == 2
    assert g.gap("/t", b"pub2", 7) == 0  # another publisher on the same topic has its own numbers
    assert g.gap("/t", b"pub1", 44) == 0  # reordered/duplicate: no negative loss
    assert g.gap("/t", b"pub1", 46) == 0
    assert g.gap("/u", b"pub1", 1) == 0
    assert g.gap("/t", None, 99) == 0 and g.gap("/t", b"pub1", None) == 0  # RMW without the info
    # a meaningless sequence number (the campaign's lost counter read 6442450947) is an anomaly, not a loss
    assert g.gap("/t", b"pub1", 0xFFFFFFFF00000000) == 0 and g.anomalies == 1
    assert g.gap("/t", b"pub1", 0xFFFFFFFF00000002) == 1  # counting goes on from the new base
    assert g.gap("/v", b"pub3", -5) == 0


def test_choose_qos_is_compatible_with_every_publisher():
    assert choose_qos([]) is None
    assert choose_qos([(True, False), (True, True)]) == QosChoice(reliable=True, transient_local=False)
    assert choose_qos([(True, False), (False, False)]) == QosChoice(reliable=False, transient_local=False)
    assert choose_qos([(True, True)]) == QosChoice(reliable=True, transient_local=True)
    assert choose_qos([(True, True)], allow_transient_local=False).transient_local is False


def test_message_definitions_of_types_outside_kilted_come_from_installed_share_dirs(tmp_path):
    msg = tmp_path / "share" / "lab_msgs" / "msg"
    msg.mkdir(parents=True)
    (msg / "Gripper.msg").write_text("std_msgs/Header header\nlab_msgs/Finger[2] fingers\nfloat32 width\n")
    (msg / "Finger.msg").write_text("float64 force\nstring name\n")
    defs = MessageDefinitions(prefixes=[tmp_path])
    assert defs.known(itf.IMAGE_TYPE) and defs.known(itf.POLICY_ACTION_TYPE) and not defs.known("lab_msgs/msg/Gripper")
    msgdef, rihs01 = defs.lookup("lab_msgs/msg/Gripper")
    assert "MSG: lab_msgs/Finger" in msgdef and "MSG: std_msgs/Header" in msgdef and rihs01.startswith("RIHS01_")
    with pytest.raises(FileNotFoundError, match="no definition of lab_msgs/msg/Missing"):
        defs.lookup("lab_msgs/msg/Missing")
    with pytest.raises(ValueError, match="not pkg/kind/Name"):
        defs.lookup("Gripper")

    # a bag with that type is written and decodes with the embedded definition alone
    w = EpisodeBagWriter(tmp_path / "eps", "e", robot="r")
    w.open()
    t = defs.store.types
    g = t["lab_msgs/msg/Gripper"](
        header=t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=1, nanosec=2), frame_id="g"),
        fingers=[t["lab_msgs/msg/Finger"](force=1.5, name="a"), t["lab_msgs/msg/Finger"](force=2.5, name="b")],
        width=0.25)
    w.add_raw("/r/gripper", "lab_msgs/msg/Gripper", bytes(defs.store.serialize_cdr(g, "lab_msgs/msg/Gripper")), 5,
              msgdef=msgdef, rihs01=rihs01)
    w.add_image(np.zeros((4, 4, 3), np.uint8), 5)
    ep = read_episode(w.close(), extra_topics=True)
    (log_time, got), = ep.extras["/r/gripper"]
    assert log_time == 5 and [f.name for f in got.fingers] == ["a", "b"] and got.width == pytest.approx(0.25)


def test_event_from_msg_rejects_out_of_range_codes():
    from types import SimpleNamespace

    class Msg:
        event, outcome, episode_id, robot, instruction = 9, 0, "e", "r", ""
        termination_reason, steps, policy_version, reward_model_version = "", 0, "", ""
        header = SimpleNamespace(stamp=SimpleNamespace(sec=1, nanosec=0))

    with pytest.raises(ValueError, match="out of range"):
        Event.from_msg(Msg)
    Msg.event, Msg.outcome = 1, 1
    assert Event.from_msg(Msg) == Event("success", "e", "r", outcome="success") and Event.from_msg(Msg).terminal
    # what the fault campaign published: never obeyed by the recorder (recorded as a plain message)
    Msg.header = SimpleNamespace(stamp=SimpleNamespace(sec=-5, nanosec=0))
    with pytest.raises(ValueError, match="not a valid time"):
        Event.from_msg(Msg)
    Msg.header, Msg.episode_id = SimpleNamespace(stamp=SimpleNamespace(sec=1, nanosec=0)), "y" * 50_000
    with pytest.raises(ValueError, match="episode_id longer"):
        Event.from_msg(Msg)
