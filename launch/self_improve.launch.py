"""ros2 launch efm_ros self_improve.launch.py robots:=4 sim:=true model:=... episodes_dir:=...

A thin adapter: the arguments, nodes, namespaces, parameters, remappings and the environment come
from efm_ros.graph.description (graph_arguments, launch_plan), the same description `efm-ros up`
runs without launch. Every argument: `ros2 launch efm_ros self_improve.launch.py --show-args`.

processes:=per-node (default) starts one process per node; processes:=per-type one host_node per
node type, serving every robot namespace (8 robots: 5 processes instead of 40), processes:=per-robot
one host_node per robot namespace, and processes:=one a single host_node. Every node keeps its name, namespace, parameters and remappings in all three.

Camera frames over 512 KB need Fast DDS's big shared-memory profile: it is set for the nodes
(FASTDDS_DEFAULT_PROFILES_FILE = share/efm_ros/config/fastdds_shm_big.xml) unless
FASTDDS_DEFAULT_PROFILES_FILE or FASTDDS_BUILTIN_TRANSPORTS is set already.

Stopping: Ctrl-C, or SIGTERM to the launch process (`kill <pid>`). A launch started from a script
or a service ignores SIGINT (a background job of a non-interactive shell); send SIGTERM.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from efm_ros.graph.description import HOST_EXECUTABLE, PACKAGE, graph_arguments, launch_plan
from efm_ros.graph.host import host_arguments

RESPAWN_DELAY_S = 2.0   # a node that exits is started again (efm-ros up: the same, with back-off)


def _nodes(context):
    plan = launch_plan({a.name: LaunchConfiguration(a.name).perform(context) for a in graph_arguments()})
    common = dict(package=PACKAGE, output="screen", emulate_tty=True, respawn=True, respawn_delay=RESPAWN_DELAY_S)
    if plan.processes == "per-node":
        procs = [Node(executable=s.executable, name=s.name, namespace=s.namespace,
                      parameters=[str(plan.params_file), dict(s.overrides)], remappings=list(s.remappings), **common)
                 for s in plan.specs]
    else:   # processes:=per-type | per-robot | one: host_node processes, each node with its own --ros-args
        procs = [Node(executable=HOST_EXECUTABLE, arguments=host_arguments(group, plan.params_file), **common)
                 for group in plan.groups()]
    return [SetEnvironmentVariable(name, value) for name, value in plan.env.items()] + procs


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(a.name, default_value=a.launch_default, description=a.help) for a in graph_arguments()]
        + [OpaqueFunction(function=_nodes)])
