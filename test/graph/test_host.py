"""One process for several nodes (processes:=per-type / one): host_node's command line, the
executors it spins, and simulated robots in one host keeping their own rate and phase."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from ros_helpers import spin_until, stop_process

from efm_ros.graph.description import NodeSpec, default_params_file
from efm_ros.graph.host import host_arguments, main, parse


def test_host_node_refuses_a_bad_command_line():
    assert parse(["--node", "a.b:C", "--ros-args", "-r", "__node:=x", "--node", "a.b:D"]) == \
        [("a.b:C", ["--ros-args", "-r", "__node:=x"]), ("a.b:D", [])]
    for bad in ([], ["--ros-args"], ["--node"], ["--node", "no_colon"]):
        with pytest.raises(ValueError):
            parse(bad)
    assert main(["--node", "efm_ros.nodes.nothing:Here"]) == 2


def test_executor_lanes_share_the_events_executor_and_give_the_logger_its_own(rclpy_context, monkeypatch):
    """Nodes share one EventsExecutor (EFM_ROS_EXECUTOR, default "events"); a node class that needs
    the wait-set executor (the logger: MessageInfo) gets one of its own, never a shared one."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from efm_ros.nodes.common import StartupError, executor_lanes
    from efm_ros.nodes.logger import LoggerNode

    class Needy(Node):
        EXECUTOR = LoggerNode.EXECUTOR

    plain = [Node(f"plain_{k}", context=rclpy_context) for k in range(2)]
    needy = [Needy(f"needy_{k}", context=rclpy_context) for k in range(2)]
    try:
        lanes = executor_lanes(plain + needy, context=rclpy_context)
        assert [type(ex).__name__ for ex, _ in lanes] == ["EventsExecutor", "SingleThreadedExecutor",
                                                          "SingleThreadedExecutor"]
        assert [members for _, members in lanes] == [plain, [needy[0]], [needy[1]]]
        monkeypatch.setenv("EFM_ROS_EXECUTOR", "single")
        assert type(executor_lanes(plain, context=rclpy_context)[0][0]) is SingleThreadedExecutor
        monkeypatch.setenv("EFM_ROS_EXECUTOR", "asyncio")
        with pytest.raises(StartupError, match="EFM_ROS_EXECUTOR"):
            executor_lanes(plain, context=rclpy_context)
    finally:
        for n in plain + needy:
            n.destroy_node()


@pytest.mark.parametrize("staggered", [False, True], ids=["seeded", "camera_phase"])
def test_sim_robots_in_one_host_tick_at_their_rate_with_their_own_phase(staggered, rclpy_context, python_env):
    """Three simulated robots in one host_node: each publishes at its control rate (not twice: the
    phase timer fires once), and their frames do not all come at the same instant. Seeded: each
    phase is drawn from its robot's seed. camera_phase (as describe_graph staggers a fleet): robot k
    ticks k/3 of the period after robot 0, on the wall clock's grid."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    import rclpy

    specs = [NodeSpec("sim_robot", f"/robot_{k}", "sim_robot_node", "efm_ros.nodes.sim_robot:SimRobotNode",
                      {"seed": 1000 * k, "image_size": 32, **({"camera_phase": k / 3} if staggered else {})})
             for k in range(3)]
    proc = subprocess.Popen([sys.executable, "-m", "efm_ros.graph.host", *host_arguments(specs, default_params_file())],
                            env=python_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    node = rclpy.create_node("host_rate_probe", context=rclpy_context)
    stamps: dict[int, list[float]] = {k: [] for k in range(3)}
    for k in range(3):
        node.create_subscription(Image, f"/robot_{k}/camera/image_raw",
                                 lambda m, k=k: stamps[k].append(m.header.stamp.sec + m.header.stamp.nanosec * 1e-9),
                                 qos_profile_sensor_data)
    ex = SingleThreadedExecutor(context=rclpy_context)
    ex.add_node(node)
    try:
        assert spin_until(ex, lambda: all(len(v) >= 5 for v in stamps.values()), 60), proc.poll()
        for v in stamps.values():
            v.clear()
        spin_until(ex, lambda: False, 4.0)
        counts = [len(v) for v in stamps.values()]
        assert all(30 <= c <= 50 for c in counts), counts            # 10 Hz for 4 s (tolerant of load)
        period = 0.1
        phases = [float(np.median(np.mod(np.asarray(v), period))) for v in stamps.values()]
        spread = max(min(abs(a - b), period - abs(a - b)) for a in phases for b in phases)
        assert spread > 0.01, phases
        if staggered:   # the stamp is taken after the frame is rendered: a few ms past the grid point
            late = [(p - k * period / 3) % period for k, p in enumerate(phases)]
            assert all(late_k < 0.03 for late_k in late), (phases, late)
    finally:
        ex.shutdown()
        node.destroy_node()
        stop_process(proc)


FAILING_NODES = """
from rclpy.node import Node


class Raises(Node):
    EXECUTOR = "single"          # a lane of its own, in a thread of the host

    def __init__(self, **kwargs):
        super().__init__("raises", **kwargs)
        self.create_timer(0.3, self._boom)

    def _boom(self):
        raise RuntimeError("boom in a callback")


class Quiet(Node):
    def __init__(self, **kwargs):
        super().__init__("quiet", **kwargs)
"""


def test_a_callback_that_raises_in_any_lane_stops_the_host(tmp_path, python_env):
    """A node whose callback raises stops its host_node with an error, whichever lane (thread) it
    spins in, as it would stop a one-node process: the supervisor (launch respawn, efm-ros up)
    restarts it, instead of a host that lives on with a dead node."""
    (tmp_path / "failing_nodes.py").write_text(FAILING_NODES)
    env = dict(python_env, PYTHONPATH=f"{tmp_path}:{python_env.get('PYTHONPATH', '')}")
    proc = subprocess.run([sys.executable, "-m", "efm_ros.graph.host", "--node", "failing_nodes:Quiet",
                           "--node", "failing_nodes:Raises"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "boom in a callback" in proc.stderr
