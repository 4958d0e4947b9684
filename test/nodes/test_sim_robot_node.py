"""The embedded robot as a ROS 2 node, driven from another process over loopback."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from ros_helpers import diagnostic_values, spin_until, stop_process




@pytest.fixture
def sim_robot_process(python_env):
    proc = subprocess.Popen(
        [sys.executable, "-m", "efm_ros.cli", "sim-robot", "--ros-args", "-r", "__ns:=/robot_7",
         "-p", "image_size:=64", "-p", "control_rate_hz:=20.0", "-p", "seed:=5"],
        env=python_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield proc
    stop_process(proc)


def test_sim_robot_node_publishes_accepts_resets_and_survives_bad_commands(rclpy_context, sim_robot_process):
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import TwistStamped
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import Bool, Float32MultiArray, String
    from std_srvs.srv import Trigger

    from efm_ros.nodes.images import image_to_rgb
    from efm_ros.sim import instructions

    node = rclpy.create_node("sim_robot_tester", namespace="/robot_7", context=rclpy_context)
    images, instr, success, diags = [], [], [], []
    node.create_subscription(Image, "camera/image_raw", images.append, qos_profile_sensor_data)
    latched = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(String, "instruction", instr.append, latched)
    node.create_subscription(Bool, "eval/success", success.append, 10)
    node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
    cmd_pub = node.create_publisher(TwistStamped, "cmd_vel", 10)
    action_pub = node.create_publisher(Float32MultiArray, "action", 10)
    reset = node.create_client(Trigger, "reset")
    ex = SingleThreadedExecutor(context=rclpy_context)
    ex.add_node(node)
    try:
        assert spin_until(ex, lambda: len(images) >= 10 and instr, 40), \
            f"no images/instruction from the node: {sim_robot_process.poll()=}"
        first = image_to_rgb(images[-1], expect_size=(64, 64))
        assert first.shape == (64, 64, 3) and images[-1].encoding == "rgb8"
        instructions.parse_instruction(instr[-1].data)  # a real instruction of the embedded robot
        assert success and isinstance(success[-1].data, bool)

        # malformed commands: counted and rejected, the node keeps running
        for bad in ([math.nan, 0.0], [0.1, 0.2, 0.3], [math.inf, 1.0]):
            action_pub.publish(Float32MultiArray(data=bad))
        action_pub.publish(Float32MultiArray(data=[5.0, 0.0]))  # out of range -> scaled
        # a valid command moves the end effector: frames change
        before = image_to_rgb(images[-1]).copy()
        n0 = len(images)
        for _ in range(10):
            msg = TwistStamped()
            msg.twist.linear.x, msg.twist.linear.y = 0.2, 0.1
            cmd_pub.publish(msg)
            spin_until(ex, lambda: False, 0.05)
        assert spin_until(ex, lambda: len(images) >= n0 + 5, 10)
        after = image_to_rgb(images[-1])
        assert np.abs(after.astype(int) - before.astype(int)).sum() > 0, "commands did not move anything"

        def counters():
            return diagnostic_values(diags, "sim robot")
        assert spin_until(ex, lambda: int(counters().get("commands_rejected_nan", 0)) >= 2
                           and int(counters().get("commands_rejected_length", 0)) >= 1
                           and int(counters().get("commands_clipped_range", 0)) >= 1, 10), counters()
        assert sim_robot_process.poll() is None, "node died on bad input"

        # reset service: a new episode with a (new seed and) instruction
        assert reset.wait_for_service(timeout_sec=10)
        future = reset.call_async(Trigger.Request())
        assert spin_until(ex, future.done, 10)
        assert future.result().success
        instructions.parse_instruction(future.result().message)
        assert spin_until(ex, lambda: instr[-1].data == future.result().message, 5)
    finally:
        ex.shutdown()
        node.destroy_node()


def test_phase_delay_lands_on_the_grid():
    """The first tick of a camera with camera_phase p waits until t mod period = p x period, on
    the clock every process of the host shares; a tick due now waits one whole period (a timer
    needs a positive period), and a phase outside [0, 1) is refused."""
    from efm_ros.nodes.common import phase_delay

    period = 0.1
    for now in (1_700_000_000.0, 1_700_000_000.0371, 12.34567):
        for phase in (0.0, 0.25, 0.5, 0.999):
            delay = phase_delay(now, period, phase)
            assert 0.0 < delay <= period + 1e-9
            assert math.isclose((now + delay) % period, phase * period, abs_tol=1e-6) or \
                math.isclose((now + delay) % period, period, abs_tol=1e-6) and phase == 0.0
    assert math.isclose(phase_delay(10.0, period, 0.0), period)      # due now: the next grid point
    assert math.isclose(phase_delay(10.02, period, 0.5), 0.03)
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(ValueError):
            phase_delay(10.0, period, bad)
