"""Bring your own bags (issue 11): a lab's rosbag2 recordings with its own topic names and types,
read through a topic map into demonstrations that train-sft trains on; mismatched bags get a clear
error naming the bag and the problem."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from efm_ros.data import list_episodes, read_episode
from efm_ros.data.foreign import ForeignBagError, TopicMap, import_recordings, recording_episodes

T0 = 1_800_000_000 * 10**9


def write_recording(path, *, seconds=2.0, camera_hz=30, cmd_hz=20, velocity=(0.1, -0.05, 0.0), markers=None,
                    encoding="bgr8", gripper=None, compressed=False):
    """A lab-style recording: a 64x48 camera, TwistStamped commands at their own rate, optional
    episode markers and gripper commands."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from efm_ros.data.interfaces import typestore

    store = typestore()
    T = store.types
    stamp = lambda ns: T["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9)  # noqa: E731
    header = lambda ns: T["std_msgs/msg/Header"](stamp=stamp(ns), frame_id="cam")  # noqa: E731
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        img_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
        img = w.add_connection("/camera/color/image_raw", img_type, typestore=store)
        cmd = w.add_connection("/servo/delta_twist_cmds", "geometry_msgs/msg/TwistStamped", typestore=store)
        for k in range(int(seconds * camera_hz)):
            ns = T0 + k * 10**9 // camera_hz
            frame = np.full((48, 64, 3), (k * 3) % 256, np.uint8)
            frame[:, 8:16, 0] = 255                                 # a red stripe at the left of the centre square
            if compressed:
                import cv2

                png = cv2.imencode(".png", frame[:, :, ::-1])[1]   # drivers compress BGR
                msg = T[img_type](header=header(ns), format="bgr8; png compressed bgr8", data=png.reshape(-1))
            else:
                data = frame[:, :, ::-1] if encoding == "bgr8" else frame
                msg = T[img_type](header=header(ns), height=48, width=64, encoding=encoding, is_bigendian=0,
                                  step=192, data=np.ascontiguousarray(data).reshape(-1))
            w.write(img, ns, store.serialize_cdr(msg, img_type))
        for k in range(int(seconds * cmd_hz)):
            ns = T0 + k * 10**9 // cmd_hz
            v = T["geometry_msgs/msg/Vector3"](x=velocity[0], y=velocity[1], z=velocity[2])
            z = T["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0)
            msg = T["geometry_msgs/msg/TwistStamped"](header=header(ns), twist=T["geometry_msgs/msg/Twist"](linear=v,
                                                                                                               angular=z))
            w.write(cmd, ns, store.serialize_cdr(msg, "geometry_msgs/msg/TwistStamped"))
        if markers:
            mk = w.add_connection("/episode_marker", "std_msgs/msg/String", typestore=store)
            for ns, text in markers:
                w.write(mk, T0 + ns, store.serialize_cdr(T["std_msgs/msg/String"](data=text), "std_msgs/msg/String"))
        if gripper is not None:
            gr = w.add_connection("/gripper/command", "std_msgs/msg/Float64", typestore=store)
            w.write(gr, T0, store.serialize_cdr(T["std_msgs/msg/Float64"](data=gripper), "std_msgs/msg/Float64"))
    return path


MAP = {"image": "/camera/color/image_raw", "action": "/servo/delta_twist_cmds", "instruction": "stack the cubes",
       "action_axes": "linear.x,linear.y", "max_speed_mps": 0.2, "control_rate_hz": 10, "image_size": 32}


def test_a_recording_becomes_one_demonstration_resampled_at_the_control_rate(tmp_path):
    bag = write_recording(tmp_path / "rec1")
    (ep,) = recording_episodes(bag, TopicMap.from_dict(MAP))
    assert ep.num_steps == 19 and ep.frames.shape == (20, 32, 32, 3)       # 2 s at 10 Hz, last frame = goal
    np.testing.assert_allclose(ep.actions, np.tile([0.5, -0.25], (19, 1)), atol=1e-6)   # m/s / max speed
    assert ep.instruction == "stack the cubes" and ep.custom_data["source"] == "imported"
    assert ep.frames[0, 0, 16, 0] == 0 and ep.frames[10, 0, 16, 0] == 90    # frame t = the newest image at tick t (1 s: the 30th)


@pytest.mark.parametrize("kind", ["bgr8", "rgb8", "png"])
def test_every_image_kind_arrives_as_rgb(tmp_path, kind):
    bag = write_recording(tmp_path / "rec", encoding="rgb8" if kind == "rgb8" else "bgr8", compressed=kind == "png")
    (ep,) = recording_episodes(bag, TopicMap.from_dict({**MAP, "image_size": 48}))
    assert ep.frames.shape[1:] == (48, 48, 3)                              # 64x48 centre-cropped to 48x48
    frame = ep.frames[5]                                                   # tick 5 = 0.5 s: camera frame 15, grey 45
    np.testing.assert_array_equal(frame[:, :8], np.tile([255, 45, 45], (48, 8, 1)))   # red, not blue: RGB order
    np.testing.assert_array_equal(frame[:, 20], np.tile([45, 45, 45], (48, 1)))


def test_markers_cut_demonstrations_and_discards_are_dropped(tmp_path):
    marks = [(0, "start"), (800_000_000, "success"), (900_000_000, "start"), (1_200_000_000, "discard"),
             (1_300_000_000, "start"), (1_900_000_000, "success")]
    bag = write_recording(tmp_path / "rec", markers=marks, gripper=1.0)
    tm = TopicMap.from_dict({**MAP, "episodes": {"topic": "/episode_marker"}, "gripper": "/gripper/command"})
    eps = recording_episodes(bag, tm)
    assert [e.num_steps for e in eps] == [8, 6]
    assert eps[0].actions.shape[1] == 3 and np.all(eps[0].actions[:, 2] == 1.0)   # twist + gripper


def test_train_sft_trains_on_recordings_through_a_topic_map(tmp_path):
    from efm_ros.learn.sft import main as train_sft

    recs = tmp_path / "recordings"
    recs.mkdir()
    for k, v in enumerate([(0.1, 0.0, 0.0), (0.0, 0.1, 0.0), (-0.1, 0.1, 0.0)]):
        write_recording(recs / f"take{k}", velocity=v)
    (tmp_path / "map.yaml").write_text(yaml.safe_dump({k: v for k, v in MAP.items() if k != "image_size"}))
    run = tmp_path / "run"
    assert train_sft(["--demos", str(recs), "--topic-map", str(tmp_path / "map.yaml"), "--out", str(run),
                      "--steps", "10", "--eval-every", "5", "--calibration-failures", "0", "--threads", "1",
                      "--no-progress"]) == 0
    assert len(list_episodes(run / "imported")) == 3
    assert read_episode(list_episodes(run / "imported")[0]).frames.shape[1:] == (96, 96, 3)   # the model's size
    meta = json.loads((run / "train_meta.json").read_text())
    assert meta["instructions"] == ["stack the cubes"] and meta["episodes"]["train"] == 2


@pytest.mark.parametrize("change, message", [
    ({"image": "/camera/missing"}, "no topic '/camera/missing'"),
    ({"action": "/camera/color/image_raw"}, "the topic map's action needs one of"),
    ({"episodes": {"topic": "/servo/delta_twist_cmds"}}, "the topic map's episodes needs"),
])
def test_mismatched_recordings_name_the_bag_and_the_problem(tmp_path, change, message):
    bag = write_recording(tmp_path / "rec")
    with pytest.raises(ForeignBagError, match=message) as err:
        recording_episodes(bag, TopicMap.from_dict({**MAP, **change}))
    assert str(bag) in str(err.value)


def test_bad_maps_bags_and_images_are_clear_errors(tmp_path, capsys):
    from efm_ros.data.foreign import main as import_bags

    with pytest.raises(ValueError, match="missing keys"):
        TopicMap.from_dict({"image": "/x"})
    with pytest.raises(ValueError, match="unknown keys"):
        TopicMap.from_dict({**MAP, "camera": "/x"})
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "metadata.yaml").write_text("not: a bag\n")
    with pytest.raises(ForeignBagError, match="junk"):
        recording_episodes(tmp_path / "junk", TopicMap.from_dict(MAP))
    bag = write_recording(tmp_path / "mono", encoding="mono16")
    with pytest.raises(ForeignBagError, match="unusable image"):
        recording_episodes(bag, TopicMap.from_dict(MAP))
    (tmp_path / "map.json").write_text(json.dumps(MAP))
    assert import_bags(["--bags", str(tmp_path / "empty_dir_missing"), "--topic-map", str(tmp_path / "map.json"),
                        "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "no such recording" in capsys.readouterr().err
    ok = write_recording(tmp_path / "good")
    assert import_recordings(ok, TopicMap.from_dict(MAP), tmp_path / "o", progress=False) == [tmp_path / "o" / "good_000"]
