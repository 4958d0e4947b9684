"""Record mode end to end (issue 11): a scripted teleop publisher drives the embedded robot through
the live graph (`efm-ros up --record`, one process per node), the operator's services start and
mark three episodes (success, discard, success); the logger writes demonstration bags that the
reader gives like collected demos, keeps the discarded one apart, and `train-sft` trains on them."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import yaml
from ros_helpers import spin_until, stop_process

from efm_ros.data import list_episodes, read_episode
from efm_ros.data.collect import CollectConfig, collect_demos
from efm_ros.graph.description import default_params_file

#: the scripted teleop's velocity per episode (m/s in the table frame): a different motion each
PATTERNS = [(0.2, 0.0), (0.0, -0.2), (-0.14, 0.14)]
MARKS = ["success", "discard", "success"]


def test_teleoperated_demonstrations_are_recorded_and_trained_on(tmp_path, python_env, rclpy_context):
    import rclpy
    from geometry_msgs.msg import TwistStamped
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    params = yaml.safe_load(default_params_file().read_text())
    params.setdefault("/**/logger", {}).setdefault("ros__parameters", {})["min_free_mb"] = 0.0
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    out = tmp_path / "demos"
    log_file = tmp_path / "up.log"
    up = subprocess.Popen([sys.executable, "-m", "efm_ros.cli", "up", "--record", "--episodes-dir", str(out),
                           "--params-file", str(params_file)],
                          env=python_env, stdout=log_file.open("w"), stderr=subprocess.STDOUT, text=True)
    node = rclpy.create_node("scripted_teleop", namespace="/robot_0", context=rclpy_context)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    twist_pub = node.create_publisher(TwistStamped, "teleop/cmd_vel", 10)
    latched = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE,
                         durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
    state = {"text": ""}
    node.create_subscription(String, "record/state", lambda m: state.update(text=m.data), latched)
    clients = {name: node.create_client(Trigger, f"record/{name}") for name in ("start", "success", "discard")}
    velocity = [0.0, 0.0]

    def send_twist():
        msg = TwistStamped()
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.twist.linear.x, msg.twist.linear.y = velocity
        twist_pub.publish(msg)

    node.create_timer(0.05, send_twist)

    def call(name: str) -> Trigger.Response:
        fut = clients[name].call_async(Trigger.Request())
        assert spin_until(executor, fut.done, 10.0), f"record/{name}: no answer"
        return fut.result()

    try:
        assert spin_until(executor, lambda: all(c.service_is_ready() for c in clients.values()), 60.0), \
            log_file.read_text()[-3000:]
        refused = call("success")                               # nothing is running: a clear refusal
        assert not refused.success and "no episode" in refused.message
        for k, (pattern, mark) in enumerate(zip(PATTERNS, MARKS)):
            # the logger may still be discovering the topics: start is refused until it records
            assert spin_until(executor, lambda: call("start").success, 30.0), log_file.read_text()[-3000:]
            assert spin_until(executor, lambda: state["text"].startswith("running"), 20.0), \
                (state["text"], log_file.read_text()[-3000:])
            velocity[:] = pattern
            spin_until(executor, lambda: False, 1.5)           # ~15 frames of teleoperation
            velocity[:] = [0.0, 0.0]
            assert call(mark).success
            assert spin_until(executor, lambda: state["text"].startswith("idle"), 10.0), state["text"]
            expected = MARKS[:k + 1].count("success")
            assert spin_until(executor, lambda: len(list_episodes(out)) == expected, 20.0), state["text"]
    finally:
        executor.remove_node(node)
        node.destroy_node()
        stop_process(up, timeout=30)
    log = log_file.read_text()
    kept = list_episodes(out)
    discarded = list_episodes(out / "discarded")
    assert len(kept) == 2 and len(discarded) == 1, log[-3000:]

    # the reader gives them like collected demonstrations
    demo_dir = tmp_path / "collected"
    collect_demos(CollectConfig(out=str(demo_dir), episodes=1, seed=0, fsync=False), workers=1, progress=False)
    collected = read_episode(list_episodes(demo_dir)[0])
    for bag, (vx, vy) in zip(kept, [PATTERNS[0], PATTERNS[2]]):
        ep = read_episode(bag)
        assert ep.custom_data["source"] == "teleop" and ep.outcome == "success"
        assert ep.termination_reason == "operator: success"
        assert ep.num_steps >= 5 and len(ep.frames) == ep.num_steps + 1
        for name in ("frames", "actions", "tokens"):
            got, ref = getattr(ep, name), getattr(collected, name)
            assert got.dtype == ref.dtype and got.shape[1:] == ref.shape[1:], name
        assert ep.instruction and [e.event for e in ep.events] == ["start", "success"]
        # the operator's commands, normalised by max_speed_mps (0.2): while it drove, they are the pattern
        moving = ep.actions[np.abs(ep.actions).sum(axis=1) > 0]
        assert len(moving) >= 5
        np.testing.assert_allclose(np.median(moving, axis=0), [vx / 0.2, vy / 0.2], atol=1e-5)
        assert all(v == "teleop" for v in ep.policy_versions)
    assert read_episode(discarded[0]).termination_reason == "discard"

    # train-sft trains on the recorded demonstrations (and never sees the discarded one)
    from efm_ros.learn.sft import main as train_sft

    run = tmp_path / "run"
    assert train_sft(["--demos", str(out), "--out", str(run), "--steps", "10", "--eval-every", "5",
                      "--calibration-failures", "0", "--threads", "1", "--no-progress"]) == 0
    meta = json.loads((run / "train_meta.json").read_text())
    assert meta["episodes"]["train"] + meta["episodes"]["val"] == 2
