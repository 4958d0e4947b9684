"""The one description of the self-improvement graph (DESIGN §1, §8).

Both launchers read this and only this:

* ``launch/self_improve.launch.py`` turns each :class:`NodeSpec` into a ``launch_ros`` ``Node``
  (package ``efm_ros``, ``executable``, ``name``, ``namespace``, ``parameters=[params_file,
  overrides]``, ``remappings``) on a real ROS 2 install;
* ``efm-ros up`` (:mod:`efm_ros.graph.runner`) builds the same nodes with rclpy, passing the same
  things as ROS arguments (:meth:`NodeSpec.ros_arguments`), in one process or one per robot.

Per robot namespace ``/robot_<k>``::

    sim_robot (sim only) --camera/image_raw--> camera --camera/image--> policy --cmd_vel--> sim_robot / arm
                                                    \\--> steps_to_go (reward/success) --episode_event-->
                                                    \\--> logger (rosbag per episode)

Parameters: defaults live in the nodes' declarations, lab/site values in ``config/efm_ros.yaml``
(``/**/<node name>:`` sections apply in every namespace), and the few per-launch values (model
paths, episodes directory, per-robot seed) are overrides computed here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "efm_ros"


def default_params_file() -> Path:
    """config/efm_ros.yaml of the source tree, or of the installed share/efm_ros."""
    import os
    import sys

    here = Path(__file__).resolve().parents[2] / "config" / "efm_ros.yaml"
    candidates = [here, Path(sys.prefix) / "share" / PACKAGE / "config" / "efm_ros.yaml"]
    candidates += [Path(p) / "share" / PACKAGE / "config" / "efm_ros.yaml"
                   for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    for c in candidates:
        if c.exists():
            return c
    raise FileNotFoundError(f"efm_ros.yaml not found in {[str(c) for c in candidates]}")


@dataclass(frozen=True)
class NodeSpec:
    """One node of the graph, in the terms both launchers understand."""

    name: str
    """node name (unique within its namespace)"""
    namespace: str
    """robot namespace, e.g. /robot_0 ("" for global nodes)"""
    executable: str
    """executable in lib/efm_ros (colcon; scripts/<executable>)"""
    entry: str
    """"module:Class" of the rclpy node, for the in-process runner"""
    overrides: dict = field(default_factory=dict)
    """parameters set by this launch on top of the params file"""
    remappings: tuple[tuple[str, str], ...] = ()
    """(from, to) topic/service remappings"""

    @property
    def fqn(self) -> str:
        return f"{self.namespace.rstrip('/')}/{self.name}"

    def ros_arguments(self, params_file: str | Path) -> list[str]:
        """The ``--ros-args ...`` that give this node exactly what the launch file gives it."""
        args = ["--ros-args", "-r", f"__node:={self.name}", "--params-file", str(params_file)]
        if self.namespace:
            args += ["-r", f"__ns:={self.namespace}"]
        for key, value in self.overrides.items():
            args += ["-p", f"{key}:={_param_literal(value)}"]
        for src, dst in self.remappings:
            args += ["-r", f"{src}:={dst}"]
        return args


def _param_literal(value) -> str:
    """A parameter value as a `-p name:=value` YAML literal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"  # YAML single-quoted: always a string
    return repr(value)


def robot_namespace(k: int) -> str:
    return f"/robot_{k}"


def describe_graph(*, robots: int = 1, sim: bool = True, model: str = "models/efm_sft",
                   reward_model: str | None = None, episodes_dir: str = "episodes",
                   seed: int = 0, first_robot: int = 0, watch_dir: str | None = None) -> list[NodeSpec]:
    """All nodes of a fleet of ``robots`` robots (namespaces /robot_<first_robot + k>).

    sim: start the embedded robot in each namespace; otherwise the lab's arm driver provides
    camera/image_raw (or the camera node reads a device, see config), cmd_vel and the reset service.
    model: exported policy directory; reward_model: the frozen Stage-1 model (default: ``model``).
    watch_dir: directory of policy versions the policy nodes hot-swap to (the trainer's versions/).
    """
    if robots < 1:
        raise ValueError(f"robots must be >= 1, got {robots}")
    reward_model = reward_model or model
    specs: list[NodeSpec] = []
    for k in range(first_robot, first_robot + robots):
        ns = robot_namespace(k)
        robot = ns.strip("/")
        if sim:
            specs.append(NodeSpec("sim_robot", ns, "sim_robot_node", "efm_ros.nodes.sim_robot:SimRobotNode",
                                  {"seed": seed * 100_003 + k * 1_000}))
        specs += [
            NodeSpec("camera", ns, "camera_node", "efm_ros.nodes.camera:CameraNode", {"source": "topic"} if sim else {}),
            NodeSpec("policy", ns, "policy_node", "efm_ros.nodes.policy:PolicyNode",
                     {"model_dir": str(model), "seed": seed * 100_003 + k,
                      **({"trigger": "frame"} if sim else {}),  # sim camera runs at the control rate
                      **({"watch_dir": str(watch_dir)} if watch_dir else {})}),
            NodeSpec("steps_to_go", ns, "steps_to_go_node", "efm_ros.nodes.steps_to_go:StepsToGoNode",
                     {"model_dir": str(reward_model), "robot": robot}),
            NodeSpec("logger", ns, "logger_node", "efm_ros.nodes.logger:LoggerNode",
                     {"episodes_dir": str(episodes_dir), "robot": robot}),
        ]
    return specs
