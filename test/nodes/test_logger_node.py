"""The episode logger node in its own process, fed by a fake robot graph in the test process:
one bag per episode, SIGTERM closes the open bag, SIGKILL + recover-bag loses ≤ 1 s, full disk."""
from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from efm_ros.data import list_episodes, read_episode, read_metadata
from ros_helpers import spin_until
from fs_helpers import mounted_tmpfs

NS = "/robot_4"




@contextlib.contextmanager
def logger_process(python_env, episodes_dir: Path, *params: str):
    proc = subprocess.Popen(
        [sys.executable, "-m", "efm_ros.cli", "logger", "--ros-args", "-r", f"__ns:={NS}",
         "-p", f"episodes_dir:={episodes_dir}", "-p", "discovery_period_s:=0.2", "-p", "diagnostics_period_s:=0.3",
         "-p", "min_free_mb:=0.0", *[a for p in params for a in ("-p", p)]],
        env=python_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


class FakeRobot:
    """The publishers of one robot namespace (camera, policy, reward node, robot, episode manager)."""

    def __init__(self, context, image_size: int = 32):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import TwistStamped
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        from efm_ros.msg import EpisodeEvent, PolicyAction, StepsToGo

        self.node = rclpy.create_node("fake_robot", namespace=NS, context=context)
        latched = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE,
                             durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
        n = self.node
        self.pubs = {
            "image": n.create_publisher(Image, "camera/image", qos_profile_sensor_data),
            "action": n.create_publisher(PolicyAction, "policy_action", 10),
            "stg": n.create_publisher(StepsToGo, "steps_to_go", 10),
            "cmd": n.create_publisher(TwistStamped, "cmd_vel", qos_profile_sensor_data),
            "instruction": n.create_publisher(String, "instruction", latched),
            "event": n.create_publisher(EpisodeEvent, "episode_event", 10),
        }
        self.other = n.create_publisher(String, "/robot_9/instruction", 10)  # another robot: not recorded
        self.diags: list = []
        n.create_subscription(DiagnosticArray, "/diagnostics", self.diags.append, 10)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(n)
        self.rng = np.random.default_rng(0)
        self.size = image_size
        self.frames_sent: list[tuple[float, int]] = []  # (publish time, stamp ns)
        self.types = dict(Image=Image, String=String, TwistStamped=TwistStamped, EpisodeEvent=EpisodeEvent,
                          PolicyAction=PolicyAction, StepsToGo=StepsToGo)

    def wait_for_logger(self, timeout: float = 60.0) -> None:
        assert spin_until(self.executor, lambda: all(p.get_subscription_count() for p in self.pubs.values()),
                           timeout), {k: p.get_subscription_count() for k, p in self.pubs.items()}

    def spin(self, seconds: float) -> None:
        spin_until(self.executor, lambda: False, seconds)

    def stamp(self):
        return self.node.get_clock().now().to_msg()

    def instruction(self, text: str) -> None:
        self.pubs["instruction"].publish(self.types["String"](data=text))
        self.other.publish(self.types["String"](data="not mine"))

    def event(self, name: str, episode_id: str, **fields) -> None:
        msg_type = self.types["EpisodeEvent"]
        msg = msg_type(robot=NS.strip("/"), episode_id=episode_id, event=getattr(msg_type, name.upper()), **fields)
        msg.header.stamp = self.stamp()
        self.pubs["event"].publish(msg)

    def frame(self, size: int | None = None):
        from efm_ros.nodes.images import numpy_to_image

        stamp = self.stamp()
        s = size or self.size
        self.pubs["image"].publish(numpy_to_image(self.rng.integers(0, 256, (s, s, 3), dtype=np.uint8), stamp))
        self.frames_sent.append((time.monotonic(), stamp.sec * 10**9 + stamp.nanosec))
        return stamp

    def tick(self, episode_id: str, step: int, version: str = "pol-1", size: int | None = None) -> None:
        t = self.types
        stamp = self.frame(size)
        action = t["PolicyAction"](episode_id=episode_id, step=step, action=[0.5, -0.5], tokens=[7, 3],
                                   log_prob=-1.25, model_version=version)
        action.header.stamp = stamp
        self.pubs["action"].publish(action)
        stg = t["StepsToGo"](episode_id=episode_id, step=step, expected_steps=10.0 - step, distribution=[0.5, 0.5],
                             model_version="rm-1")
        stg.header.stamp = stamp
        self.pubs["stg"].publish(stg)
        cmd = t["TwistStamped"]()
        cmd.header.stamp = stamp
        self.pubs["cmd"].publish(cmd)

    def diagnostics(self) -> dict[str, str]:
        """Key/values of the logger's latest status (empty before the first)."""
        for arr in reversed(self.diags):
            for st in arr.status:
                if st.name.startswith(f"{NS}/logger"):
                    return {"_level": int.from_bytes(st.level, "little") if isinstance(st.level, bytes) else st.level,
                            "_message": st.message, **{kv.key: kv.value for kv in st.values}}
        return {}

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


@pytest.fixture
def fake_robot(rclpy_context):
    robot = FakeRobot(rclpy_context)
    yield robot
    robot.close()


# the best-effort publisher that joins steps_to_go meets the logger's reliable subscription until it
# re-subscribes; rclpy's default incompatible-QoS handler reports that with a deprecated logger call
@pytest.mark.filterwarnings("ignore:Deprecated in favor of:DeprecationWarning")
def test_one_bag_per_episode_with_all_topics_and_facts_and_sigterm_closes_the_open_one(
        tmp_path, python_env, fake_robot):
    robot = fake_robot
    episodes = tmp_path / "episodes"
    with logger_process(python_env, episodes, "success_threshold:=3.0", "success_k:=2") as proc:
        robot.instruction("push the red block to the blue block")  # latched, before the logger exists
        robot.wait_for_logger()
        robot.spin(0.3)
        robot.frame()  # before START: outside any episode
        robot.spin(0.1)
        robot.event("start", "robot_4_e0", instruction="push the red block to the blue block",
                    policy_version="pol-1", reward_model_version="rm-1")
        robot.spin(0.05)
        for step in range(10):
            robot.tick("robot_4_e0", step, version="pol-1" if step < 8 else "pol-2")
            robot.spin(0.05)
        robot.frame()  # the final observation
        robot.spin(0.05)
        robot.event("success", "robot_4_e0", outcome=1, termination_reason="success: d<=3 for 2 ticks", steps=10,
                    policy_version="pol-2", reward_model_version="rm-1")
        robot.spin(0.05)
        for _ in range(3):  # the reset: not part of any episode
            robot.frame()
            robot.spin(0.05)
        robot.event("reset_done", "robot_4_e0")
        robot.instruction("push the green block to the center")
        assert spin_until(robot.executor, lambda: list_episodes(episodes) == [episodes / "robot_4_e0"]
                           and int(robot.diagnostics().get("outside_episodes", 0)) >= 5, 20), robot.diagnostics()
        diag = robot.diagnostics()
        assert diag["episodes_committed"] == "1" and diag["state"] == "idle" and diag["fault"] == ""
        assert diag["_level"] == 0 and diag["lost"] == "0" and diag["dropped_queue_full"] == "0"
        assert diag["topic camera/image"].startswith("written=11 outside=4 ")  # 1 before START, 3 in the reset
        assert int(diag["bytes_written"]) > 11 * 32 * 32 * 3 and float(diag["messages_per_s"]) >= 0

        ep = read_episode(episodes / "robot_4_e0", extra_topics=True)
        assert ep.num_steps == 10 and ep.frames.shape == (11, 32, 32, 3) and ep.dropped == {}
        assert ep.outcome == "success" and ep.instruction == "push the red block to the blue block"
        assert ep.policy_versions == ["pol-1"] * 8 + ["pol-2"] * 2
        assert ep.steps_to_go is not None and ep.steps_to_go.present[:10].all()
        assert [e.event for e in ep.events] == ["start", "success"]
        assert ep.topic_counts == {f"{NS}/{t}": n for t, n in [
            ("camera/image", 11), ("policy_action", 10), ("steps_to_go", 10), ("cmd_vel", 10),
            ("instruction", 1), ("episode_event", 2)]}
        facts = ep.custom_data
        assert {k: facts[k] for k in ("robot", "episode_id", "source", "terminated", "termination_reason", "steps",
                                      "policy_version", "policy_versions_seen", "reward_model_version",
                                      "success_threshold", "success_k", "image_height", "messages_lost")} == {
            "robot": "robot_4", "episode_id": "robot_4_e0", "source": "policy", "terminated": "true",
            "termination_reason": "success: d<=3 for 2 ticks", "steps": "10", "policy_version": "pol-2",
            "policy_versions_seen": "pol-1,pol-2", "reward_model_version": "rm-1", "success_threshold": "3",
            "success_k": "2", "image_height": "32", "messages_lost": "0"}
        for log_time, cmd in ep.extras[f"{NS}/cmd_vel"]:  # log time = receive time; the stamp stays in the payload
            assert 0 < log_time - (cmd.header.stamp.sec * 10**9 + cmd.header.stamp.nanosec) < 10**9
        assert read_metadata(episodes / "robot_4_e0")["message_count"] == 44

        # a best-effort publisher joins steps_to_go: the logger re-subscribes best effort (gets both)
        from rclpy.qos import qos_profile_sensor_data
        robot.node.create_publisher(robot.types["StepsToGo"], "steps_to_go", qos_profile_sensor_data)
        robot.spin(1.0)

        # episode 2 is cut by SIGTERM: a complete bag that says it was not terminated
        robot.event("start", "robot_4_e1", instruction="push the green block to the center", policy_version="pol-2")
        robot.spin(0.05)
        for step in range(4):
            robot.tick("robot_4_e1", step, version="pol-2")
            robot.spin(0.05)
        robot.spin(0.3)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
    assert list_episodes(episodes) == [episodes / "robot_4_e0", episodes / "robot_4_e1"], out
    ep2 = read_episode(episodes / "robot_4_e1")
    assert ep2.outcome == "unknown" and ep2.instruction == "push the green block to the center"
    assert ep2.num_steps == 3 and ep2.dropped == {"actions_without_next_frame": 1}  # no frame after the last action
    assert {k: ep2.custom_data[k] for k in ("terminated", "termination_reason", "steps_recorded")} == {
        "terminated": "false", "termination_reason": "logger_shutdown", "steps_recorded": "4"}
    assert ep2.topic_counts[f"{NS}/instruction"] == 1  # the new instruction, carried from the reset
    assert ep2.topic_counts[f"{NS}/steps_to_go"] == 4 and ep2.steps_to_go.present.all()
    assert f"re-subscribed {NS}/steps_to_go [efm_ros/msg/StepsToGo] (best effort)" in out
    assert "episode robot_4_e1: NOT terminated (logger_shutdown)" in out
    assert list((episodes / ".staging").iterdir()) == []  # nothing left behind


def test_sigkill_mid_episode_then_recover_bag_loses_at_most_the_last_second(tmp_path, python_env, fake_robot):
    """Small frames (3 KB at 20 Hz): a 256 KiB chunk would hold 4 s, so only the time limit bounds the loss."""
    robot = fake_robot
    episodes = tmp_path / "episodes"
    with logger_process(python_env, episodes) as proc:
        robot.wait_for_logger()
        robot.spin(0.3)
        robot.event("start", "robot_4_killed", instruction="push the blue block to the center")
        robot.spin(0.05)
        for step in range(50):
            robot.tick("robot_4_killed", step)
            robot.spin(0.05)
        t_kill = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    staging = episodes / ".staging" / "robot_4_killed"
    assert list_episodes(episodes) == [] and (staging / "robot_4_killed.mcap").is_file()
    rc = subprocess.run([sys.executable, "-m", "efm_ros.cli", "recover-bag", str(staging)], env=python_env,
                        capture_output=True, text=True, timeout=120)
    assert rc.returncode == 0, rc.stderr
    ep = read_episode(episodes / "robot_4_killed", unmatched_actions="drop")
    must_have = [stamp for t, stamp in robot.frames_sent if t <= t_kill - 1.0]
    assert len(must_have) >= 25
    assert set(must_have) <= set(ep.frame_stamps_ns.tolist()), \
        f"recovered {len(ep.frame_stamps_ns)} frames of {len(robot.frames_sent)}; needed the first {len(must_have)}"
    assert ep.custom_data["recovered"] == "true" and ep.instruction == "push the blue block to the center"


def test_full_disk_stops_recording_with_an_error_keeps_data_and_the_node_alive(tmp_path, python_env, fake_robot):
    from efm_ros.data import recover_bag

    robot = fake_robot
    with mounted_tmpfs(tmp_path / "disk", "size=1m") as disk, \
            logger_process(python_env, disk, "chunk_bytes:=16384", "min_free_mb:=0.3") as proc:
        robot.wait_for_logger()
        robot.spin(0.3)
        robot.event("start", "e_small", instruction="push the red block")
        for step in range(3):
            robot.tick("e_small", step)
            robot.spin(0.05)
        robot.frame()
        robot.spin(0.05)
        robot.event("success", "e_small", outcome=1, steps=3)
        assert spin_until(robot.executor, lambda: list_episodes(disk) == [disk / "e_small"], 20)

        robot.event("start", "e_big", instruction="push the red block")  # 64x64 noise: 12 KB a frame, 1 MB disk
        for step in range(120):
            robot.tick("e_big", step, size=64)
            robot.spin(0.01)
        assert spin_until(robot.executor, lambda: robot.diagnostics().get("_level") == 2, 20), robot.diagnostics()
        diag = robot.diagnostics()
        assert "e_big: recording stopped" in diag["_message"] and "no space left on device" in diag["_message"]
        assert diag["state"] == "failed" and diag["episodes_failed"] == "1" and int(diag["not_recorded"]) > 0
        robot.event("timeout", "e_big", outcome=2, steps=120)
        robot.event("start", "e_next", instruction="push the red block")  # below min_free_mb: not started
        robot.spin(0.5)
        assert spin_until(robot.executor, lambda: "e_next: not recorded" in robot.diagnostics().get("_message", ""),
                           10), robot.diagnostics()
        assert "disk full" in robot.diagnostics()["_message"] and robot.diagnostics()["_level"] == 2
        assert proc.poll() is None, "the logger died on a full disk"

        # completed episodes untouched; the cut one kept in .staging for recover-bag (no lock held any more)
        assert list_episodes(disk) == [disk / "e_small"] and read_episode(disk / "e_small").num_steps == 3
        staging = disk / ".staging" / "e_big"
        assert (staging / "e_big.mcap").stat().st_size > 0 and not (staging / "metadata.yaml").exists()
        recovered = read_episode(recover_bag(staging, tmp_path / "recovered"), unmatched_actions="drop")
        assert 10 <= recovered.num_steps < 120 and recovered.frames.shape[1:] == (64, 64, 3)

        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
    assert "e_big: recording stopped" in out and "no space left on device" in out and "kept at" in out
