"""The camera node: raw frames in (topic, video file), model-ready frames out, bad frames counted."""
from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
from ros_helpers import diagnostic_values, spin_until, stop_process




def _raw_image(rgb: np.ndarray, stamp, encoding: str = "rgb8"):
    from efm_ros.nodes.images import numpy_to_image

    return numpy_to_image(rgb[:, :, ::-1] if encoding == "bgr8" else rgb, stamp, "raw_cam", encoding)



@pytest.fixture
def camera_process(python_env):
    proc = subprocess.Popen(
        [sys.executable, "-m", "efm_ros.nodes.camera", "--ros-args", "-r", "__ns:=/robot_5", "-p", "image_size:=96"],
        env=python_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield proc
    stop_process(proc)


def test_topic_source_converts_keeps_stamps_and_counts_bad_frames(rclpy_context, camera_process):
    import rclpy
    from builtin_interfaces.msg import Time as TimeMsg
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from efm_ros.sim.tabletop import TabletopRobot
    from efm_ros.vision.preprocess import to_model_frame

    node = rclpy.create_node("camera_tester", namespace="/robot_5", context=rclpy_context)
    out, diags = {}, []
    node.create_subscription(Image, "camera/image", lambda m: out.setdefault((m.header.stamp.sec, m.header.stamp.nanosec), m),
                             qos_profile_sensor_data)
    node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
    raw_pub = node.create_publisher(Image, "camera/image_raw", qos_profile_sensor_data)
    ex = SingleThreadedExecutor(context=rclpy_context)
    ex.add_node(node)

    robot = TabletopRobot(image_size=96)
    robot.reset(seed=2)
    sim_frame = robot.observe()                                  # a training-identical frame
    camera = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)  # a 4:3 camera
    base = int(time.time())

    def send(msg, key, timeout=10.0):
        """Publish (best effort) until the converted frame with this stamp comes back."""
        deadline = time.monotonic() + timeout
        while key not in out and time.monotonic() < deadline:
            raw_pub.publish(msg)
            spin_until(ex, lambda: key in out, 0.3)
        return out.get(key)

    try:
        got = send(_raw_image(sim_frame, TimeMsg(sec=base, nanosec=1)), (base, 1), timeout=30)
        assert got is not None, f"no output from the camera node: {camera_process.poll()=}"
        assert (got.encoding, got.height, got.width, got.step) == ("rgb8", 96, 96, 288)
        assert bytes(got.data) == sim_frame.tobytes(), "sim frames must pass through bit-identical"
        assert got.header.frame_id == "raw_cam"

        got = send(_raw_image(camera, TimeMsg(sec=base, nanosec=2), "bgr8"), (base, 2))
        assert got is not None and (got.height, got.width) == (96, 96)
        expected = to_model_frame(camera, 96)                    # centre crop + INTER_AREA
        assert bytes(got.data) == expected.tobytes()

        bad = []
        m = _raw_image(sim_frame, TimeMsg(sec=base, nanosec=3))
        m.encoding = "mono16"
        bad.append(m)
        m = _raw_image(sim_frame, TimeMsg(sec=base, nanosec=4))
        m.height = 95                                            # data is 96 rows: size mismatch
        bad.append(m)
        m = _raw_image(sim_frame, TimeMsg(sec=base, nanosec=5))
        m.step = 100                                             # step < width * 3
        bad.append(m)
        empty = Image(encoding="rgb8")
        empty.header.stamp = TimeMsg(sec=base, nanosec=6)
        bad.append(empty)
        bad.append(_raw_image(sim_frame, TimeMsg(sec=-1, nanosec=8)))  # crashed the node before (issue 13)
        for _ in range(3):                                       # best effort: a few copies each
            for m in bad:
                raw_pub.publish(m)
            spin_until(ex, lambda: False, 0.1)

        def rejected():
            c = diagnostic_values(diags, ": camera")
            return {k: int(c.get(f"rejected_{k}", 0)) for k in ("encoding", "size", "step", "empty", "bad_stamp")}
        assert spin_until(ex, lambda: all(v >= 1 for v in rejected().values()), 10), (rejected(), diagnostic_values(diags, ": camera"))
        assert not any(k[1] in (3, 4, 5, 6, 8) for k in out), "a malformed frame was published"
        c = diagnostic_values(diags, ": camera")
        assert float(c["rate_hz"]) >= 0 and "latency_p50_ms" in c and "process_p99_ms" in c and c["source"] == "topic"
        got = send(_raw_image(sim_frame, TimeMsg(sec=base, nanosec=7)), (base, 7))
        assert got is not None and camera_process.poll() is None, "node died on bad input"
    finally:
        ex.shutdown()
        node.destroy_node()


def test_file_source_publishes_fresh_stamps_and_bad_sources_fail_clearly(rclpy_context, tmp_path):
    import cv2
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from efm_ros.nodes.camera import CameraNode, CameraSourceError
    from efm_ros.nodes.images import image_to_rgb

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 20.0, (160, 120))
    for level in (30, 90, 150):
        frame = np.zeros((120, 160, 3), np.uint8)
        frame[..., 2] = level                                    # red in OpenCV's BGR
        writer.write(frame)
    writer.release()

    def params(**kw):
        return [Parameter(k, value=v) for k, v in kw.items()]

    for bad, match in ((dict(source="file", file_path=str(tmp_path / "missing.avi")), "is not a file"),
                       (dict(source="device", device="/dev/video_efm_test_absent"), "cannot open device"),
                       (dict(source="webcam"), "not one of")):
        with pytest.raises(CameraSourceError, match=match):
            CameraNode(context=rclpy_context, namespace="/robot_6", parameter_overrides=params(**bad))

    camera = CameraNode(context=rclpy_context, namespace="/robot_6",
                        parameter_overrides=params(source="file", file_path=str(video), capture_rate_hz=40.0, image_size=64))
    node = rclpy.create_node("file_tester", namespace="/robot_6", context=rclpy_context)
    frames = []
    node.create_subscription(Image, "camera/image", frames.append, qos_profile_sensor_data)
    ex = SingleThreadedExecutor(context=rclpy_context)
    ex.add_node(node)
    ex.add_node(camera)
    try:
        assert spin_until(ex, lambda: len(frames) >= 8, 20), len(frames)   # 3-frame clip, looped
        now_ns = node.get_clock().now().nanoseconds
        stamps = [f.header.stamp.sec * 10**9 + f.header.stamp.nanosec for f in frames]
        assert stamps == sorted(set(stamps)) and 0 <= now_ns - stamps[-1] < 5e9   # fresh capture stamps
        reds = [int(image_to_rgb(f, expect_size=(64, 64))[..., 0].mean()) for f in frames]
        assert {r // 20 for r in reds} >= {30 // 20, 90 // 20, 150 // 20}    # every clip frame, RGB order
        assert frames[0].header.frame_id == "camera"
    finally:
        ex.shutdown()
        camera.close()
        camera.destroy_node()
        node.destroy_node()
