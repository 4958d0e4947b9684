"""ros2 launch efm_ros self_improve.launch.py robots:=4 sim:=true model:=... episodes_dir:=...

A thin adapter: the nodes, namespaces, parameters and remappings come from
efm_ros.graph.description.describe_graph, the same description `efm-ros up` runs without launch.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from efm_ros.graph.description import PACKAGE, default_params_file, describe_graph

ARGUMENTS = {
    "robots": ("1", "number of robots (namespaces /robot_0 .. /robot_N-1)"),
    "sim": ("true", "true: embedded simulator per robot; false: real arms provide camera/cmd_vel/reset"),
    "model": ("models/efm_sft", "exported policy model directory"),
    "reward_model": ("", "frozen Stage-1 reward model directory (default: model)"),
    "episodes_dir": ("episodes", "where the loggers write one rosbag per episode"),
    "params_file": ("", "parameters YAML (default: share/efm_ros/config/efm_ros.yaml)"),
    "seed": ("0", "base seed (per-robot seeds derive from it)"),
    "first_robot": ("0", "index of the first robot namespace (fleets across machines)"),
    "watch_dir": ("", "policy versions directory to hot-swap from (the trainer's RUN/versions)"),
}


def _nodes(context):
    arg = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    params_file = arg["params_file"] or str(default_params_file())
    specs = describe_graph(robots=int(arg["robots"]), sim=arg["sim"].lower() in ("1", "true", "yes"),
                           model=arg["model"], reward_model=arg["reward_model"] or None,
                           episodes_dir=arg["episodes_dir"], seed=int(arg["seed"]),
                           first_robot=int(arg["first_robot"]), watch_dir=arg["watch_dir"] or None)
    return [Node(package=PACKAGE, executable=s.executable, name=s.name, namespace=s.namespace,
                 parameters=[params_file, dict(s.overrides)], remappings=list(s.remappings),
                 output="screen", emulate_tty=True)
            for s in specs]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=doc)
         for name, (default, doc) in ARGUMENTS.items()]
        + [OpaqueFunction(function=_nodes)])
