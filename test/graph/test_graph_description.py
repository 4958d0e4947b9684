"""One graph description, two launchers.

`ros2 launch` cannot run here (launch/launch_ros are not on PyPI), so the launch file is executed
against minimal recording stand-ins of the launch API it uses (DeclareLaunchArgument,
LaunchConfiguration, OpaqueFunction, Node): this checks that it turns every NodeSpec of the
description into a launch_ros Node with the same executable, name, namespace, parameters and
remappings that `efm-ros up` passes as ROS arguments. What it cannot check — launch_ros itself —
is exercised on a real ROS 2 install (README, "What is verified where").
"""
from __future__ import annotations

import dataclasses
import importlib.util
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import yaml

from efm_ros.graph.description import (NodeSpec, default_params_file, describe_graph, graph_arguments, launch_plan,
                                       node_executables)
from efm_ros.graph.host import host_arguments
from efm_ros.graph.runner import build_parser

REPO = Path(__file__).resolve().parents[2]


def test_description_fleet_layout():
    specs = describe_graph(robots=3, sim=True, model="m", reward_model="rm", episodes_dir="eps", seed=2)
    assert len(specs) == 15 and len({s.fqn for s in specs}) == 15
    assert {s.namespace for s in specs} == {"/robot_0", "/robot_1", "/robot_2"}
    by = {s.fqn: s for s in specs}
    assert by["/robot_1/policy"].overrides["model_dir"] == "m"
    assert by["/robot_1/steps_to_go"].overrides["model_dir"] == "rm"
    assert by["/robot_2/logger"].overrides == {"episodes_dir": "eps", "robot": "robot_2"}
    seeds = [s.overrides["seed"] for s in specs if s.name == "sim_robot"]
    assert len(set(seeds)) == 3
    # the cameras of one launch's robots take turns within the control period (k / robots)
    assert [s.overrides["camera_phase"] for s in specs if s.name == "sim_robot"] == [0.0, 1 / 3, 2 / 3]
    second_host = describe_graph(robots=2, first_robot=4)
    assert [s.overrides["camera_phase"] for s in second_host if s.name == "sim_robot"] == [0.0, 0.5]
    real = describe_graph(robots=1, sim=False)
    assert "sim_robot" not in {s.name for s in real}
    with pytest.raises(ValueError):
        describe_graph(robots=0)


def test_real_arm_topics_and_record_mode_in_the_description():
    plan = launch_plan({"sim": "false", "camera_topic": "camera/color/image_raw",
                        "command_topic": "/servo_node/delta_twist_cmds"}, {})
    by = {s.name: s for s in plan.specs}
    assert by["camera"].remappings == (("camera/image_raw", "camera/color/image_raw"),)
    assert by["policy"].remappings == (("cmd_vel", "/servo_node/delta_twist_cmds"),)
    assert "-r" in by["policy"].ros_arguments("p.yaml") and not by["logger"].remappings
    record = {s.name: s for s in describe_graph(robots=1, record=True, robot="efm_ros.sim.lift:LiftRobot",
                                                command_topic="arm/twist")}
    assert set(record) == {"sim_robot", "camera", "teleop", "logger"}       # no policy, no steps_to_go
    assert record["teleop"].overrides["action_axes"] == "linear.x,linear.y,linear.z,gripper"
    assert record["teleop"].remappings == (("cmd_vel", "arm/twist"),)
    assert record["logger"].overrides["source"] == "teleop"
    assert record["sim_robot"].overrides["backend_args"] == "{}"           # all its instructions, not the practice task


def test_ros_arguments_quote_strings_and_keep_types():
    spec = NodeSpec("policy", "/robot_4", "policy_node", "m:C", {"model_dir": "it's here", "seed": 3, "on": True},
                    (("cmd_vel", "/arm/cmd"),))
    args = spec.ros_arguments("p.yaml")
    assert args[:5] == ["--ros-args", "-r", "__node:=policy", "--params-file", "p.yaml"]
    assert ["-r", "__ns:=/robot_4"] == args[5:7]
    assert "model_dir:='it''s here'" in args and "seed:=3" in args and "on:=true" in args
    assert args[-2:] == ["-r", "cmd_vel:=/arm/cmd"]


def _fake_launch_modules(record: dict) -> dict[str, types.ModuleType]:
    class LaunchConfiguration:
        def __init__(self, name):
            self.name = name

        def perform(self, context):
            return context["args"][self.name]

    class DeclareLaunchArgument:
        def __init__(self, name, default_value=None, description=""):
            record.setdefault("declared", {})[name] = default_value

    class SetEnvironmentVariable:
        def __init__(self, name, value):
            self.name, self.value = name, value

    class OpaqueFunction:
        def __init__(self, function):
            self.function = function

    class LaunchDescription(list):
        pass

    class Node:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    mods = {name: types.ModuleType(name) for name in
            ("launch", "launch.actions", "launch.substitutions", "launch_ros", "launch_ros.actions")}
    mods["launch"].LaunchDescription = LaunchDescription
    mods["launch.actions"].DeclareLaunchArgument = DeclareLaunchArgument
    mods["launch.actions"].OpaqueFunction = OpaqueFunction
    mods["launch.actions"].SetEnvironmentVariable = SetEnvironmentVariable
    mods["launch.substitutions"].LaunchConfiguration = LaunchConfiguration
    mods["launch_ros.actions"].Node = Node
    return mods


def test_launch_file_builds_exactly_the_described_nodes(monkeypatch):
    record: dict = {}
    for name, mod in _fake_launch_modules(record).items():
        monkeypatch.setitem(sys.modules, name, mod)
    spec = importlib.util.spec_from_file_location("self_improve_launch", REPO / "launch" / "self_improve.launch.py")
    launch_file = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch_file)
    ld = launch_file.generate_launch_description()
    # the launch arguments are `efm-ros up`'s flags, with the same defaults
    assert record["declared"] == {a.name: a.launch_default for a in graph_arguments()}
    flags = {a.dest: a.default for a in build_parser()._actions if a.dest in record["declared"]}
    assert flags == {a.name: a.default for a in graph_arguments()}
    opaque = [a for a in ld if hasattr(a, "function")]
    assert len(opaque) == 1
    args = dict(record["declared"], robots="2", sim="true", model="models/x", reward_model="models/rm",
                episodes_dir="/tmp/eps", seed="7")
    # the large-image Fast DDS profile is set unless the user chose a transport (conftest sets one)
    monkeypatch.delenv("FASTDDS_BUILTIN_TRANSPORTS", raising=False)
    monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE", raising=False)
    actions = opaque[0].function({"args": args})
    env = [a for a in actions if hasattr(a, "value")]
    assert [(e.name, e.value) for e in env] == [("FASTDDS_DEFAULT_PROFILES_FILE",
                                                 str(default_params_file().with_name("fastdds_shm_big.xml")))]
    assert Path(env[0].value).exists()
    monkeypatch.setenv("FASTDDS_BUILTIN_TRANSPORTS", "UDPv4")
    nodes = opaque[0].function({"args": args})
    assert all(hasattr(n, "kwargs") for n in nodes)
    expected = describe_graph(robots=2, sim=True, model="models/x", reward_model="models/rm",
                              episodes_dir="/tmp/eps", seed=7)
    assert len(nodes) == len(expected)
    for node, spec_ in zip(nodes, expected):
        kw = node.kwargs
        assert (kw["package"], kw["executable"], kw["name"], kw["namespace"]) == \
            ("efm_ros", spec_.executable, spec_.name, spec_.namespace)
        assert kw["parameters"] == [str(default_params_file()), spec_.overrides]
        assert kw["remappings"] == list(spec_.remappings)
        assert kw["respawn"] is True and kw["respawn_delay"] > 0
    # processes:=per-type: one host_node per executable, each node with exactly its own ROS arguments
    hosted = opaque[0].function({"args": dict(args, processes="per-type")})
    assert [n.kwargs["executable"] for n in hosted] == ["host_node"] * 5
    assert [n.kwargs["arguments"] for n in hosted] == \
        [host_arguments([s for s in expected if s.executable == exe], default_params_file())
         for exe in dict.fromkeys(s.executable for s in expected)]
    assert all(n.kwargs["respawn"] is True for n in hosted)
    # processes:=per-robot: one host_node per robot namespace, holding that robot's nodes only
    per_robot = opaque[0].function({"args": dict(args, processes="per-robot")})
    assert [n.kwargs["arguments"] for n in per_robot] == \
        [host_arguments([s for s in expected if s.namespace == ns], default_params_file())
         for ns in dict.fromkeys(s.namespace for s in expected)]
    assert len(per_robot) == len({s.namespace for s in expected}) > 1
    with pytest.raises(ValueError, match="processes"):
        opaque[0].function({"args": dict(args, processes="per-socket")})
    # the executables colcon installs are exactly the graph's nodes (and the host)
    assert sorted(p.name for p in (REPO / "scripts").iterdir() if p.name.endswith("_node")) == sorted(node_executables())


def test_launch_arguments_parse_like_the_runner_flags(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # launched from some other directory
    plan = launch_plan({"robots": "3", "sim": "false", "seed": "4", "reward_model": "", "watch_dir": ""}, {})
    assert [s.namespace for s in plan.specs if s.name == "policy"] == ["/robot_0", "/robot_1", "/robot_2"]
    assert "sim_robot" not in {s.name for s in plan.specs}
    policy = next(s for s in plan.specs if s.name == "policy")
    assert "watch_dir" not in policy.overrides and policy.overrides["seed"] == 4 * 100_003
    # the default model resolves inside the package wherever the launch starts
    assert Path(policy.overrides["model_dir"]).is_absolute() and Path(policy.overrides["model_dir"]).exists()
    with pytest.raises(ValueError, match="sim"):
        launch_plan({"sim": "maybe"}, {})
    with pytest.raises(ValueError, match="robots"):
        launch_plan({"robots": "two"}, {})


@pytest.mark.parametrize("processes", ["per-type", "per-robot", "one"])
def test_host_processes_run_real_nodes_with_the_described_namespaces_and_parameters(processes, rclpy_context,
                                                                                  python_env, sim_model_dir):
    """processes:=per-type / per-robot / one: the host_node processes that the runner (and the launch file) start
    serve every node with its own name, namespace and parameters (asked over ROS, from outside)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter_client import AsyncParameterClient

    from efm_ros.graph.runner import node_processes

    plan = launch_plan({"robots": 2, "model": str(sim_model_dir), "seed": 3, "processes": processes}, {})
    plan = dataclasses.replace(plan, specs=[s for s in plan.specs if s.name in ("sim_robot", "steps_to_go")])
    procs = node_processes(plan)
    assert len(procs) == {"per-type": 2, "per-robot": 2, "one": 1}[processes]
    assert all(Path(p.argv[0]).name == "host_node" for p in procs)
    running = [subprocess.Popen(p.argv, env=python_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for p in procs]
    node = rclpy.create_node("host_probe", context=rclpy_context)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    try:
        site = yaml.safe_load(default_params_file().read_text())["/**/sim_robot"]["ros__parameters"]
        for s in plan.specs:
            keys = list(s.overrides) + (["backend_args"] if s.name == "sim_robot" else [])
            client = AsyncParameterClient(node, s.fqn)
            assert client.wait_for_services(timeout_sec=60.0), f"{s.fqn} did not come up"
            # a host's services are discoverable from its first node on, but it answers only once it has
            # built every node and spins (up to seconds on a loaded machine), and a reply sent before the
            # replier matched the reader can be lost: ask again (a read is idempotent) until answered
            answer, deadline = None, time.monotonic() + 60.0
            while answer is None and time.monotonic() < deadline:
                future = client.get_parameters(keys)
                executor.spin_until_future_complete(future, timeout_sec=10.0)
                answer = future.result() if future.done() else None
            assert answer is not None, f"{s.fqn}: no answer to get_parameters in 60 s"
            got = dict(zip(keys, answer.values))
            for key, value in s.overrides.items():
                assert rclpy.parameter.parameter_value_to_python(got[key]) == value, (s.fqn, key)
            if s.name == "sim_robot":   # a value from config/efm_ros.yaml reached the nodes too
                assert got["backend_args"].string_value == site["backend_args"]
    finally:
        executor.shutdown()
        node.destroy_node()
        for p in running:
            p.send_signal(signal.SIGTERM)
        outs = [p.communicate(timeout=30)[0] for p in running]
    assert all(p.returncode == 0 for p in running), outs
    assert not any("Traceback" in o for o in outs), outs
