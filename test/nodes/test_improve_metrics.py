"""The trainer's iteration metrics on ROS: a late subscriber receives them (transient local), with
the fields the Improver measured, and /diagnostics carries a status per iteration."""
from __future__ import annotations

import csv
import math
import signal
import subprocess
import sys

import pytest

from ros_helpers import diagnostic_values, spin_until

from efm_ros.nodes.improve_metrics import iteration_message, over_optimisation_warning


def test_iteration_message_copies_the_row_and_marks_missing_ground_truth_nan():
    row = {"iteration": 3, "version_trained_on": "si-v0002", "episodes": 12, "transitions": 1030,
           "detector_success_rate": 0.25, "episode_length": 71.5, "mean_reward": 0.2, "mean_return": 1.5,
           "policy_entropy": 4.1, "loss": -0.01}
    msg = iteration_message(row, version="si-v0003", reward_model_version="rm", best={"version": "si-v0002",
                                                                                          "measure": "m"})
    assert (msg.iteration, msg.version, msg.trained_on_version, msg.episodes, msg.transitions) == \
        (3, "si-v0003", "si-v0002", 12, 1030)
    assert math.isclose(msg.detector_success_rate, 0.25) and math.isclose(msg.episode_length, 71.5)
    assert math.isnan(msg.gt_success_rate), "a real robot has no ground truth: NaN, not 0"
    assert msg.best_version == "si-v0002"


def test_over_optimisation_warning_needs_detector_up_and_ground_truth_flat():
    rising = [{"detector_success_rate": 0.1 * i, "gt_success_rate": 0.1} for i in range(6)]
    assert "exploiting" in over_optimisation_warning(rising)
    honest = [{"detector_success_rate": 0.1 * i, "gt_success_rate": 0.05 * i} for i in range(6)]
    assert over_optimisation_warning(honest) is None
    assert over_optimisation_warning([{"detector_success_rate": 0.1 * i} for i in range(6)]) is None  # real robot


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_improve_publishes_each_iteration_on_ros(tmp_path, rclpy_context, sim_model_dir, python_env, stop):
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    from efm_ros.data.bag import write_episode
    from efm_ros.learn.actors import rollout
    from efm_ros.model.runtime import load_model
    from efm_ros.msg import ImprovementIteration
    from efm_ros.sim.tabletop import TabletopRobot

    episodes = tmp_path / "episodes"
    policy, robot = load_model(sim_model_dir), TabletopRobot(seed=0, families=("block2block",))
    for i in range(4):
        write_episode(episodes, rollout(robot, policy, policy, seed=300 + i, episode_id=f"ep_{i}", max_steps=8))
    out = tmp_path / "si"
    cmd = [sys.executable, "-m", "efm_ros.learn.improve", "--episodes-dir", str(episodes), "--policy",
           str(sim_model_dir), "--reward-model", str(sim_model_dir), "--out", str(out),
           "--updates", "2", "--batch-size", "8", "--poll-s", "0.1", "--ros", "on",
           "--ros-args", "-r", "__ns:=/fleet_a"]
    proc = subprocess.Popen(cmd, env=python_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    node = rclpy.create_node("metrics_probe", context=rclpy_context)
    got, diags = [], []
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(ImprovementIteration, "/fleet_a/improve/metrics", got.append, qos)
    node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
    ex = SingleThreadedExecutor(context=rclpy_context)
    ex.add_node(node)
    try:
        # the trainer runs until Ctrl-C (the fleet keeps practising); 4 episodes give one iteration
        ok = spin_until(ex, lambda: got and diagnostic_values(diags, "self-improvement").get("version"), timeout=120)
        proc.send_signal(stop)
        try:
            log = proc.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"the trainer ignored {stop!r}; log:\n{proc.communicate()[0][-3000:]}") from None
        assert ok, f"no ImprovementIteration / diagnostics received; trainer log:\n{log[-3000:]}"
        assert proc.returncode == 0, log[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        ex.shutdown()
        node.destroy_node()
    msg = got[0]
    row = next(csv.DictReader(open(out / "metrics.csv")))
    # the row describes the episodes of the version that acted; the message names the new version too
    assert msg.iteration == 1 and msg.version == "si-v0001" == row["new_version"]
    assert msg.trained_on_version == row["version"] == row["version_trained_on"]
    assert msg.episodes == 4 == int(row["episodes"])
    assert math.isclose(msg.detector_success_rate, float(row["detector_success_rate"]), abs_tol=1e-6)
    assert 0.0 <= msg.gt_success_rate <= 1.0, "the embedded robot reports ground truth (simulation only)"
    assert msg.best_version == row["version"]   # one iteration: the guard can only judge the starting version
    values = diagnostic_values(diags, "self-improvement")
    assert values["version"] == "si-v0001" and values["iteration"] == "1"
