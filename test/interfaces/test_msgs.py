"""Our interfaces (msg/) as built by rosidl: import, (de)serialise, cross-process pub/sub,
and the RIHS01 type hash that rosbags computes from the .msg text equals rosidl's."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
MSG_TYPES = ("StepsToGo", "PolicyAction", "EpisodeEvent", "ImprovementIteration")


def test_import_fields_and_constants():
    from efm_ros.msg import EpisodeEvent, PolicyAction, StepsToGo

    s = StepsToGo(expected_steps=12.5, distribution=[0.25, 0.75], reward=1.5, success=True, model_version="rm-1")
    assert s.expected_steps == 12.5 and list(s.distribution) == [0.25, 0.75]
    a = PolicyAction(action=[0.5, -1.0], tokens=[15, 0], log_prob=-1.25, model_version="p-3")
    assert list(a.tokens) == [15, 0]
    assert (EpisodeEvent.START, EpisodeEvent.SUCCESS, EpisodeEvent.TIMEOUT, EpisodeEvent.OPERATOR_STOP,
            EpisodeEvent.RESET_DONE, EpisodeEvent.FAULT) == (0, 1, 2, 3, 4, 5)
    assert (EpisodeEvent.OUTCOME_UNKNOWN, EpisodeEvent.OUTCOME_SUCCESS, EpisodeEvent.OUTCOME_FAILURE) == (0, 1, 2)
    with pytest.raises(TypeError):  # typed arrays refuse wrong element types
        PolicyAction(tokens=["not an int"])


def test_serialise_round_trip():
    from rclpy.serialization import deserialize_message, serialize_message

    from efm_ros.msg import EpisodeEvent, PolicyAction, StepsToGo

    msgs = [
        StepsToGo(episode_id="e1", step=7, expected_steps=3.0, distribution=np.linspace(0, 1, 50, dtype=np.float32).tolist(),
                  reward=-0.5, success=False, model_version="rm"),
        PolicyAction(episode_id="e1", step=7, action=[0.1, -0.2], tokens=[11, 8], log_prob=-2.0, entropy=1.5, model_version="p"),
        EpisodeEvent(robot="robot_0", episode_id="e1", event=EpisodeEvent.SUCCESS, instruction="push the red block to the blue block",
                     termination_reason="success", outcome=EpisodeEvent.OUTCOME_SUCCESS, steps=42, policy_version="p", reward_model_version="rm"),
    ]
    msgs[0].header.stamp.sec, msgs[0].header.stamp.nanosec = 1700000000, 123
    for msg in msgs:
        back = deserialize_message(serialize_message(msg), type(msg))
        assert back == msg


_PUBLISHER = r"""
import sys, time, rclpy
from efm_ros.msg import PolicyAction
rclpy.init(args=["--ros-args", "--disable-external-lib-logs"])
node = rclpy.create_node("test_publisher")
pub = node.create_publisher(PolicyAction, "policy_action", 10)
deadline = time.monotonic() + 20.0
i = 0
while time.monotonic() < deadline and pub.get_subscription_count() == 0:
    time.sleep(0.05)
for i in range(20):
    pub.publish(PolicyAction(episode_id="x", step=i, action=[0.5, -0.5], tokens=[15, 5], log_prob=-float(i), model_version="v7"))
    time.sleep(0.05)
node.destroy_node(); rclpy.shutdown()
"""


def test_pub_sub_across_two_processes(rclpy_context, python_env):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from efm_ros.msg import PolicyAction

    node = rclpy.create_node("test_subscriber", context=rclpy_context)
    got: list = []
    node.create_subscription(PolicyAction, "policy_action", got.append, 10)
    proc = subprocess.Popen([sys.executable, "-c", _PUBLISHER], env=python_env)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    try:
        deadline = time.monotonic() + 30.0
        while len(got) < 15 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        executor.shutdown()
        node.destroy_node()
    assert len(got) >= 15, f"received only {len(got)} messages across processes"
    last = got[-1]
    assert last.model_version == "v7" and list(last.tokens) == [15, 5] and list(last.action) == [0.5, -0.5]
    assert last.log_prob == -float(last.step)


def _generated_description(name: str) -> Path:
    for prefix in (Path(sys.prefix), *[Path(p) for p in __import__("os").environ.get("AMENT_PREFIX_PATH", "").split(":") if p]):
        path = prefix / "share" / "efm_ros" / "msg" / f"{name}.json"
        if path.exists():
            return path
    pytest.fail(f"rosidl type description {name}.json not found: were the interfaces built (make setup)?")


@pytest.mark.parametrize("name", MSG_TYPES)
def test_rosbags_type_hash_equals_rosidl(name):
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    store.register(get_types_from_msg((REPO / "msg" / f"{name}.msg").read_text(), f"efm_ros/msg/{name}"))
    generated = json.loads(_generated_description(name).read_text())
    hashes = {h["type_name"]: h["hash_string"] for h in generated["type_hashes"]}
    assert store.hash_rihs01(f"efm_ros/msg/{name}") == hashes[f"efm_ros/msg/{name}"]
