"""Episode bags: independent decoding (mcap + mcap_ros2), rosbags round trip, metadata.yaml v9,
type hashes, staging visibility and the reader's alignment rules."""
from __future__ import annotations

import numpy as np
import pytest
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from ruamel.yaml import YAML

from efm_ros.data import (
    EpisodeBagError,
    EpisodeBagWriter,
    list_episodes,
    read_episode,
    write_episode,
)
from efm_ros.data import interfaces as itf
from efm_ros.data.episode import CUSTOM_DATA_KEYS, EventRecord

NS = 10**9


def _stamp(header) -> int:
    return header.stamp.sec * NS + header.stamp.nanosec


def _decode_independently(bag_dir):
    """{topic: [(log_time, schema name, decoded msg)]} read with the mcap library only."""
    out: dict[str, list] = {}
    with open(bag_dir / f"{bag_dir.name}.mcap", "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for schema, channel, message, msg in reader.iter_decoded_messages():
            out.setdefault(channel.topic, []).append((message.log_time, schema.name, msg))
    return out


@pytest.mark.parametrize("compression", [None, "zstd"])
@pytest.mark.parametrize("kind", ["demo", "policy"])
def test_independent_reader_decodes_every_field(tmp_path, demo_episode, policy_episode, kind, compression):
    ep = demo_episode if kind == "demo" else policy_episode
    path = write_episode(tmp_path, ep, compression=compression, chunk_bytes=4096)
    msgs = _decode_independently(path)
    ns = f"/{ep.robot}/"
    expected_topics = {ns + "camera/image", ns + "policy_action", ns + "instruction", ns + "episode_event"}
    if ep.steps_to_go is not None:
        expected_topics.add(ns + "steps_to_go")
    assert set(msgs) == expected_topics

    images = msgs[ns + "camera/image"]
    assert len(images) == ep.num_steps + 1
    h, w = ep.image_size
    for t, (log_time, schema, m) in enumerate(images):
        assert schema == "sensor_msgs/msg/Image"
        assert _stamp(m.header) == ep.frame_stamps_ns[t] == log_time
        assert (m.header.frame_id, m.encoding, m.is_bigendian) == ("camera", "rgb8", 0)
        assert (m.height, m.width, m.step) == (h, w, 3 * w)
        assert np.array_equal(np.frombuffer(m.data, np.uint8).reshape(h, w, 3), ep.frames[t])

    actions = msgs[ns + "policy_action"]
    assert len(actions) == ep.num_steps
    for t, (_, schema, m) in enumerate(actions):
        assert schema == "efm_ros/msg/PolicyAction"
        assert _stamp(m.header) == ep.frame_stamps_ns[t]  # the stamp of the source image
        assert (m.episode_id, m.step, m.model_version) == (ep.episode_id, t, ep.policy_versions[t])
        assert np.array_equal(np.array(m.action, np.float32), ep.actions[t])
        assert list(m.tokens) == ep.tokens[t].tolist()
        assert np.float32(m.log_prob) == ep.log_probs[t] and np.float32(m.entropy) == ep.entropies[t]
    if kind == "demo":
        assert {m.model_version for *_, m in actions} == {"demonstrator"}
        assert all(m.log_prob == 0 and m.entropy == 0 for *_, m in actions)

    [(log_time, _, instr)] = msgs[ns + "instruction"]
    assert instr.data == ep.instruction and log_time == ep.frame_stamps_ns[0]

    events = msgs[ns + "episode_event"]
    assert len(events) == len(ep.events)
    for (_, _, m), e in zip(events, ep.events):
        assert _stamp(m.header) == e.stamp_ns
        assert (m.robot, m.episode_id) == (ep.robot, ep.episode_id)
        assert itf.EVENTS[m.event] == e.event and itf.OUTCOMES[m.outcome] == e.outcome
        assert (m.termination_reason, m.steps, m.instruction) == (e.termination_reason, e.steps, e.instruction)
        assert (m.policy_version, m.reward_model_version) == (e.policy_version, e.reward_model_version)
    if kind == "demo":
        assert [(m.event, m.outcome) for *_, m in events] == [(0, 0), (1, 1)]  # START, SUCCESS/OUTCOME_SUCCESS

    if ep.steps_to_go is not None:
        stg = ep.steps_to_go
        for t, (_, _, m) in enumerate(msgs[ns + "steps_to_go"]):
            assert _stamp(m.header) == ep.frame_stamps_ns[t] and m.step == t and m.episode_id == ep.episode_id
            assert np.float32(m.expected_steps) == stg.expected_steps[t] and np.float32(m.reward) == stg.rewards[t]
            assert np.array_equal(np.array(m.distribution, np.float32), stg.distributions[t])
            assert m.success == stg.success[t] and m.model_version == stg.model_versions[t]


@pytest.mark.parametrize("kind", ["demo", "policy"])
def test_rosbags_round_trip_equals_written_episode(tmp_path, demo_episode, policy_episode, kind):
    ep = demo_episode if kind == "demo" else policy_episode
    back = read_episode(write_episode(tmp_path, ep))
    assert ep.diff(back, ignore=("topic_counts",)) == []
    assert back.dropped == {}
    assert sum(back.topic_counts.values()) == 2 * ep.num_steps + 2 + len(ep.events) + (
        0 if ep.steps_to_go is None else ep.num_steps + 1)
    assert np.array_equal(back.steps_to_go_labels(), np.arange(ep.num_steps, -1, -1))


def test_metadata_yaml_is_v9_with_counts_custom_data_and_type_hashes(tmp_path, policy_episode):
    path = write_episode(tmp_path, policy_episode)
    info = YAML(typ="safe").load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    for key in ("version", "storage_identifier", "duration", "starting_time", "message_count", "relative_file_paths",
                "compression_format", "compression_mode", "files", "custom_data", "ros_distro",
                "topics_with_message_count"):
        assert key in info, key
    assert info["version"] == 9 and info["storage_identifier"] == "mcap"
    assert info["relative_file_paths"] == [f"{path.name}.mcap"]
    topics = info["topics_with_message_count"]
    assert sum(t["message_count"] for t in topics) == info["message_count"] == info["files"][0]["message_count"]
    assert info["starting_time"]["nanoseconds_since_epoch"] == policy_episode.frame_stamps_ns[0]
    assert info["custom_data"] == policy_episode.custom_data
    assert set(CUSTOM_DATA_KEYS) <= set(info["custom_data"])

    # RIHS01 type hashes: computed from our .msg texts with a fresh typestore, stored per topic
    store = get_typestore(Stores.ROS2_KILTED)
    for name in itf.CUSTOM_MESSAGES:
        text = (itf.find_msg_dir() / f"{name}.msg").read_text()
        store.register(get_types_from_msg(text, f"efm_ros/msg/{name}"))
    by_type = {t["topic_metadata"]["type"]: t["topic_metadata"] for t in topics}
    assert set(by_type) == {itf.IMAGE_TYPE, itf.STRING_TYPE, itf.POLICY_ACTION_TYPE, itf.EPISODE_EVENT_TYPE,
                            itf.STEPS_TO_GO_TYPE}
    for msgtype, md in by_type.items():
        assert md["serialization_format"] == "cdr"
        assert isinstance(md["offered_qos_profiles"], list)
        assert md["type_description_hash"].startswith("RIHS01_")
        assert md["type_description_hash"] == store.hash_rihs01(msgtype), msgtype


def test_msg_dir_lookup_explains_where_it_looked(monkeypatch, tmp_path):
    monkeypatch.setattr(itf, "msg_search_dirs", lambda: [tmp_path / "nowhere"])
    with pytest.raises(FileNotFoundError, match="nowhere"):
        itf.find_msg_dir()


def test_staging_is_never_listed_and_close_is_atomic(tmp_path, demo_episode):
    done = write_episode(tmp_path, demo_episode)
    w = EpisodeBagWriter(tmp_path, "robot_0_e00001", robot="robot_0")
    staging = w.open()
    assert staging == tmp_path / ".staging" / "robot_0_e00001"
    for t in range(3):
        w.add_image(demo_episode.frames[t], 1000 + t)
    assert list_episodes(tmp_path) == [done]
    w.finish()  # complete but not committed: still invisible
    assert (staging / "metadata.yaml").is_file() and list_episodes(tmp_path) == [done]
    final = w.commit()
    assert final == tmp_path / "robot_0_e00001" and not staging.exists()
    assert list_episodes(tmp_path) == [done, final]
    # a directory without metadata.yaml (e.g. copied by hand) is not an episode either
    (tmp_path / "zz_partial").mkdir()
    assert list_episodes(tmp_path) == [done, final]


def test_reader_aligns_live_bag_by_stamp_and_exposes_extra_topics(tmp_path):
    """A bag as the live logger records it: the policy skipped frame 2, extra topics, raw CDR."""
    store = itf.typestore()
    frames = np.arange(6 * 4 * 5 * 3, dtype=np.uint8).reshape(6, 4, 5, 3)
    stamps = [5 * NS + 100_000_000 * t for t in range(6)]
    w = EpisodeBagWriter(tmp_path, "robot_1_e00000", robot="robot_1")
    w.open()
    for t, s in enumerate(stamps):
        w.add_image(frames[t], s, log_time_ns=s + 1_000)
    for step, t in enumerate([0, 1, 3, 4]):  # frame 2 skipped by a slow policy; frame 5 is the final one
        w.add_action(stamps[t], step, [0.1 * step, -0.1], [step, 3], log_prob=-1.0, entropy=0.5, model_version="v7")
        w.add_steps_to_go(stamps[t], step, 10.0 - step, [0.5, 0.5], reward=1.0, model_version="rm")
        twist = store.types["geometry_msgs/msg/TwistStamped"](
            header=store.types["std_msgs/msg/Header"](
                stamp=store.types["builtin_interfaces/msg/Time"](sec=stamps[t] // NS, nanosec=stamps[t] % NS),
                frame_id=""),
            twist=store.types["geometry_msgs/msg/Twist"](
                linear=store.types["geometry_msgs/msg/Vector3"](x=0.1, y=0.0, z=0.0),
                angular=store.types["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0)))
        w.add_raw("/robot_1/cmd_vel", itf.TWIST_STAMPED_TYPE, store.serialize_cdr(twist, itf.TWIST_STAMPED_TYPE),
                  stamps[t] + 2_000)
    w.add_steps_to_go(stamps[5], 4, 0.0, [1.0, 0.0], success=True, model_version="rm")
    ok = store.types["std_msgs/msg/Bool"](data=True)
    w.add_raw("eval/success", itf.BOOL_TYPE, store.serialize_cdr(ok, itf.BOOL_TYPE), stamps[5] + 3_000)
    w.update_custom_data({"robot": "robot_1", "episode_id": "robot_1_e00000", "outcome": "success", "steps": "4"})
    path = w.close()

    ep = read_episode(path, extra_topics=True)
    assert ep.num_steps == 4 and list(ep.frame_stamps_ns) == [stamps[i] for i in (0, 1, 3, 4, 5)]
    assert np.array_equal(ep.frames, frames[[0, 1, 3, 4, 5]])
    assert ep.dropped == {"frames_unused": 1}
    assert ep.tokens.tolist() == [[0, 3], [1, 3], [2, 3], [3, 3]] and ep.policy_versions == ["v7"] * 4
    assert ep.steps_to_go is not None and ep.steps_to_go.present.all()
    assert ep.steps_to_go.expected_steps.tolist() == [10, 9, 8, 7, 0] and ep.steps_to_go.success.tolist()[-1]
    assert ep.topic_counts["/robot_1/cmd_vel"] == 4 and ep.topic_counts["/robot_1/eval/success"] == 1
    assert [m.data for _, m in ep.extras["/robot_1/eval/success"]] == [True]
    assert ep.extras["/robot_1/cmd_vel"][0][1].twist.linear.x == pytest.approx(0.1)
    assert read_episode(path).extras == {}  # extras are decoded only on request
    # an episode read back (extras included) writes out again unchanged, e.g. for filtering tools
    again = read_episode(write_episode(tmp_path / "copy", ep), extra_topics=True)
    assert ep.diff(again, ignore=("dropped", "topic_counts")) == [] and again.dropped == {}
    assert again.extras["/robot_1/cmd_vel"][3][1].twist.linear.x == pytest.approx(0.1)

    # an action whose source frame was not recorded: an error by default, a counted drop on request
    w = EpisodeBagWriter(tmp_path, "robot_1_e00001", robot="robot_1")
    w.open()
    for t in (0, 1, 2, 3):
        w.add_image(frames[t], stamps[t])
    for step, s in enumerate([stamps[0], stamps[1] + 7, stamps[2]]):
        w.add_action(s, step, [0.0, 0.0], [10, 10])
    path = w.close()
    with pytest.raises(EpisodeBagError, match="no camera frame with the same stamp"):
        read_episode(path)
    ep = read_episode(path, unmatched_actions="drop")
    assert ep.dropped == {"actions_without_frame": 1, "frames_unused": 1}
    assert ep.num_steps == 2 and list(ep.frame_stamps_ns) == [stamps[0], stamps[2], stamps[3]]


def test_last_action_without_a_next_frame_is_dropped(tmp_path):
    frames = np.zeros((3, 2, 2, 3), np.uint8)
    w = EpisodeBagWriter(tmp_path, "e", robot="r")
    w.open()
    for t in range(3):
        w.add_image(frames[t], NS * (t + 1))
        w.add_action(NS * (t + 1), t, [0.0, 0.0], [10, 10])
    w.set_custom_data("steps", "3")
    ep = read_episode(w.close())
    assert ep.num_steps == 2 and len(ep.frames) == 3
    assert ep.dropped == {"actions_without_next_frame": 1}
    assert ep.custom_data["steps"] == "2" and ep.custom_data["steps_recorded"] == "3"
    assert ep.robot == "r"  # from the topic namespace when custom_data has no robot


def test_writer_rejects_bad_input_clearly(tmp_path):
    with pytest.raises(ValueError, match="invalid episode id"):
        EpisodeBagWriter(tmp_path, "../escape", robot="r")
    w = EpisodeBagWriter(tmp_path, "e1", robot="r")
    w.open()
    with pytest.raises(ValueError, match="image must be uint8"):
        w.add_image(np.zeros((2, 2), np.uint8), 1)
    with pytest.raises(ValueError, match="unknown message type"):
        w.add_raw("x", "my_pkg/msg/Unknown", b"\x00\x01\x00\x00", 1)
    with pytest.raises(TypeError, match="str -> str"):
        w.set_custom_data("steps", 3)
    w.add_image(np.zeros((2, 2, 3), np.uint8), 1)  # still usable after rejected input
    assert w.close().is_dir()


def test_read_bag_command_prints_topics_counts_custom_data_and_outcome(tmp_path, policy_episode, capsys):
    from efm_ros.data.inspect import main

    path = write_episode(tmp_path, policy_episode)
    assert main([str(path)]) == 0
    out = capsys.readouterr().out
    for text in ("/robot_3/camera/image", "/robot_3/steps_to_go", "efm_ros/msg/PolicyAction", "policy_version: pol-v4",
                 "outcome:      failure  (timeout)", "9 actions, 10 frames 16x20", "clean (nothing dropped)"):
        assert text in out, text
    assert main([str(tmp_path)]) == 0
    assert "1 complete episode(s)" in capsys.readouterr().out
    (path / "metadata.yaml").unlink()
    assert main([str(path)]) == 1
    assert "metadata.yaml: missing" in capsys.readouterr().err


def test_malformed_messages_in_a_bag_are_skipped_and_counted_not_fatal(tmp_path):
    """Anyone on the graph can publish on camera/image or episode_event, and the logger records it:
    one bad message must cost only itself, never the episode (issue 13)."""
    frames = np.random.default_rng(3).integers(0, 256, (5, 4, 6, 3), dtype=np.uint8)
    stamps = [NS * (10 + t) for t in range(5)]
    w = EpisodeBagWriter(tmp_path, "robot_1_e00002", robot="robot_1")
    w.open()
    t = w._typestore.types

    def image(stamp_sec, nanosec=0, h=4, wd=6, encoding="rgb8", step=None, data=None):
        return t[itf.IMAGE_TYPE](
            header=t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=stamp_sec, nanosec=nanosec),
                                            frame_id="x"),
            height=h, width=wd, encoding=encoding, is_bigendian=0, step=wd * 3 if step is None else step,
            data=np.zeros(h * wd * 3, np.uint8) if data is None else data)

    for i in range(5):
        w.add_image(frames[i], stamps[i])
        if i < 4:
            w.add_action(stamps[i], i, [0.1, 0.0], [i, 3])
    bad = [image(11, 0, encoding="mono16"),                      # its stamp is a real frame's
           image(-1),                                            # crashed the nodes before (negative stamp)
           image(12, data=np.zeros(7, np.uint8)),                # data shorter than height * step
           image(11, h=5, data=np.zeros(5 * 6 * 3, np.uint8)),   # another size than the episode's
           image(13)]                                            # a second frame with a real frame's stamp
    for k, m in enumerate(bad):
        w.add_message(itf.IMAGE_TOPIC, itf.IMAGE_TYPE, m, stamps[4] + 1_000 + k)
    w.add_event(EventRecord(stamps[0], "start", instruction="push"))
    forged = t[itf.EPISODE_EVENT_TYPE](
        header=t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=14, nanosec=0), frame_id=""),
        robot="robot_1", episode_id="robot_1_e00002", event=6, outcome=3, termination_reason="", steps=0,
        instruction="", policy_version="", reward_model_version="", success_threshold=0.0, success_k=0)
    w.add_message(itf.EPISODE_EVENT_TOPIC, itf.EPISODE_EVENT_TYPE, forged, stamps[4] + 9_000)
    ep = read_episode(w.close())
    assert ep.num_steps == 4 and np.array_equal(ep.frames, frames) and list(ep.frame_stamps_ns) == stamps
    assert ep.dropped == {"frames_bad_encoding": 1, "frames_bad_stamp": 1, "frames_bad_size": 1,
                          "frames_other_size": 1, "frames_duplicate_stamp": 1, "events_invalid": 1}
    assert [e.event for e in ep.events] == ["start"]
