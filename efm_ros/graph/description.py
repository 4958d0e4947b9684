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

import inspect
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "efm_ros"


def default_params_file() -> Path:
    """config/efm_ros.yaml of the source tree, or of the installed share/efm_ros."""
    here = Path(__file__).resolve().parents[2] / "config" / "efm_ros.yaml"
    candidates = [here] + [p / "share" / PACKAGE / "config" / "efm_ros.yaml" for p in install_prefixes()]
    for c in candidates:
        if c.exists():
            return c
    raise FileNotFoundError(f"efm_ros.yaml not found in {[str(c) for c in candidates]}")


def install_prefixes() -> list[Path]:
    """Where an installed efm_ros may live: each prefix on AMENT_PREFIX_PATH (a sourced colcon
    workspace or ROS install), then this interpreter's prefix (the pip world's venv)."""
    prefixes = [Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    return prefixes + [Path(sys.prefix)]


def find_node_executable(executable: str) -> Path:
    """lib/efm_ros/<executable> of the first prefix that registers efm_ros in its ament index,
    exactly where ``ros2 run`` / ``ros2 launch`` look for it."""
    for prefix in install_prefixes():
        exe = prefix / "lib" / PACKAGE / executable
        if (prefix / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE).exists() and exe.exists():
            return exe
    raise FileNotFoundError(
        f"no installed executable {executable!r} of {PACKAGE} in {[str(p) for p in install_prefixes()]}: "
        f"run `make setup` (pip world) or `colcon build` and source install/setup.bash")


def large_image_transport(environ=None) -> dict[str, str]:
    """The environment both launchers add for camera frames over 512 KB: Fast DDS's shared-memory
    profile with big segments (config/fastdds_shm_big.xml; LARGE_DATA alone lost most best-effort
    VGA frames). Nothing when the user chose a transport (either variable already set)."""
    environ = os.environ if environ is None else environ
    if "FASTDDS_DEFAULT_PROFILES_FILE" in environ or "FASTDDS_BUILTIN_TRANSPORTS" in environ:
        return {}
    profile = default_params_file().with_name("fastdds_shm_big.xml")
    return {"FASTDDS_DEFAULT_PROFILES_FILE": str(profile)} if profile.exists() else {}


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
                   seed: int = 0, first_robot: int = 0, watch_dir: str | None = None,
                   robot: str | None = None, robot_args: str | None = None, record: bool = False,
                   camera_topic: str | None = None, command_topic: str | None = None) -> list[NodeSpec]:
    """All nodes of a fleet of ``robots`` robots (namespaces /robot_<first_robot + k>).

    sim: start the embedded robot in each namespace; otherwise the lab's arm driver provides
    camera/image_raw (or the camera node reads a device, see config), cmd_vel and the reset service.
    model: exported policy directory; reward_model: the frozen Stage-1 model (default: ``model``).
    watch_dir: directory of policy versions the policy nodes hot-swap to (the trainer's versions/).
    robot, robot_args: with sim, the simulated robot backend (dotted path) and its constructor
    arguments (JSON); None: the parameters file's (the embedded table). Another backend without
    robot_args gets none ({}), not the table's site arguments.
    record: record mode, for teleoperated demonstrations: the teleop node (efm_ros.nodes.teleop)
    takes the places of the policy and steps-to-go nodes, the operator starts and marks episodes,
    the logger writes demonstration bags (source "teleop"; discarded ones into discarded/), and the
    sim robot draws all of its instructions (not only the practice task).
    camera_topic, command_topic: a real arm's topics, remapped in each robot namespace (relative
    names resolve in it): the camera node reads camera_topic instead of camera/image_raw, and the
    policy (teleop) node sends its twists on command_topic instead of cmd_vel (e.g.
    servo_node/delta_twist_cmds). None: the graph's own names.
    """
    if robots < 1:
        raise ValueError(f"robots must be >= 1, got {robots}")
    reward_model = reward_model or model
    specs: list[NodeSpec] = []
    for k in range(first_robot, first_robot + robots):
        ns = robot_namespace(k)
        name = ns.strip("/")
        if sim:
            backend = {"backend": robot} if robot else {}
            if robot_args is not None or robot or record:
                backend["backend_args"] = robot_args if robot_args is not None else "{}"
            specs.append(NodeSpec("sim_robot", ns, "sim_robot_node", "efm_ros.nodes.sim_robot:SimRobotNode",
                                  {"seed": seed * 100_003 + k * 1_000, **backend,
                                   # the robots of one launch share its host's cores: their cameras
                                   # take turns within the control period instead of colliding
                                   "camera_phase": (k - first_robot) / robots}))
        camera = NodeSpec("camera", ns, "camera_node", "efm_ros.nodes.camera:CameraNode", {"source": "topic"} if sim else {},
                          remappings=(("camera/image_raw", camera_topic),) if camera_topic else ())
        to_arm = (("cmd_vel", command_topic),) if command_topic else ()
        logger = NodeSpec("logger", ns, "logger_node", "efm_ros.nodes.logger:LoggerNode",
                          {"episodes_dir": str(episodes_dir), "robot": name, **({"source": "teleop"} if record else {})})
        if record:
            axes = sim_action_axes(robot) if sim else None
            specs += [camera,
                      NodeSpec("teleop", ns, "teleop_node", "efm_ros.nodes.teleop:TeleopNode",
                               {"robot": name, "wait_for_logger": "logger",
                                **({"action_axes": ",".join(axes)} if axes else {})}, remappings=to_arm),
                      logger]
            continue
        specs += [
            camera,
            NodeSpec("policy", ns, "policy_node", "efm_ros.nodes.policy:PolicyNode",
                     {"model_dir": str(model), "seed": seed * 100_003 + k,
                      **({"trigger": "frame"} if sim else {}),  # sim camera runs at the control rate
                      **({"watch_dir": str(watch_dir)} if watch_dir else {})}, remappings=to_arm),
            NodeSpec("steps_to_go", ns, "steps_to_go_node", "efm_ros.nodes.steps_to_go:StepsToGoNode",
                     {"model_dir": str(reward_model), "robot": name,
                      "wait_for_logger": "logger"}),  # the logger below: no first episode is lost
            logger,
        ]
    return specs


def sim_action_axes(robot: str | None) -> tuple[str, ...] | None:
    """The action axes of a simulated backend known from its class (``action_axes``, else by a
    class-level ``action_dim``); None when only an instance can tell (then the node's default)."""
    from efm_ros.robots import DEFAULT_ROBOT, load_object
    from efm_ros.robots.commands import default_axes

    cls = load_object(robot or DEFAULT_ROBOT)
    axes, dims = getattr(cls, "action_axes", None), getattr(cls, "action_dim", None)
    if isinstance(axes, (tuple, list)):
        return tuple(axes)
    return default_axes(dims) if isinstance(dims, int) else None


#: the executable that hosts several nodes in one process (scripts/host_node; the per-type layout)
HOST_EXECUTABLE = "host_node"


def node_executables() -> list[str]:
    """Every node executable of the graph, in practice and in record mode, and the host of the
    per-type layout (lib/efm_ros/<name>; scripts/<name> in the source)."""
    return sorted({s.executable for record in (False, True) for s in describe_graph(robots=1, sim=True, record=record)}
                  | {HOST_EXECUTABLE})


# -- the graph's arguments: `ros2 launch efm_ros self_improve.launch.py NAME:=VALUE` and `efm-ros up --NAME VALUE`

#: help for each launch argument / runner flag. The names and defaults are describe_graph's keyword
#: arguments (their one home) plus the parameters file.
_ARGUMENT_HELP = {
    "robots": "number of robots (namespaces /robot_<first_robot> ..)",
    "sim": "true: the embedded simulator per robot; false: real arms provide camera/image_raw, cmd_vel and reset",
    "model": "exported policy model directory",
    "reward_model": "frozen Stage-1 reward model directory (default: model)",
    "episodes_dir": "where the loggers write one rosbag per episode",
    "seed": "base seed (per-robot seeds derive from it)",
    "first_robot": "index of the first robot namespace (fleets across machines)",
    "watch_dir": "policy versions directory to hot-swap from (the trainer's RUN/versions)",
    "robot": "sim robot backend, a dotted path pkg.mod:Class implementing efm_ros.robots.Robot "
             "(default: the parameters file's, the embedded table)",
    "robot_args": "constructor arguments of the sim robot backend, a JSON object (default: the parameters "
                  "file's for the table, {} for another robot)",
    "record": "record mode: teleoperated demonstrations (the teleop node instead of policy and steps_to_go; "
              "start / success / discard with record/command, the record/* services or efm-ros teleop-keyboard)",
    "camera_topic": "real arms: the camera driver's image topic, remapped onto the camera node's camera/image_raw "
                    "(relative names resolve in each robot namespace, e.g. camera/color/image_raw)",
    "command_topic": "real arms: the arm's twist input, remapped onto the policy's (teleop's) cmd_vel "
                     "(e.g. servo_node/delta_twist_cmds)",
    "params_file": "parameters YAML (default: config/efm_ros.yaml of the package)",
    "processes": "process layout: per-node (one process a node), per-type (one process per node type, serving "
                 "every robot namespace: 8 robots are 5 processes, not 40), per-robot (one process per robot "
                 "namespace: its sim, camera, policy, steps-to-go and logger; fewest DDS hops between processes) "
                 "or one (every node in one process)",
}

#: process layouts (the ``processes`` argument): :meth:`LaunchPlan.groups`
LAYOUTS = ("per-node", "per-type", "per-robot", "one")


@dataclass(frozen=True)
class GraphArgument:
    name: str
    default: object
    kind: type
    """int, bool or str; optional strings have default None"""
    help: str

    @property
    def launch_default(self) -> str:
        """The default as a launch argument's string ('' = None)."""
        if self.default is None:
            return ""
        return ("true" if self.default else "false") if self.kind is bool else str(self.default)

    def parse(self, text: str):
        """A launch argument's string -> the typed value describe_graph takes."""
        if self.kind is bool:
            low = str(text).strip().lower()
            if low not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                raise ValueError(f"launch argument {self.name}:={text!r} is not a boolean (true/false)")
            return low in ("1", "true", "yes", "on")
        if self.kind is int:
            try:
                return int(text)
            except ValueError:
                raise ValueError(f"launch argument {self.name}:={text!r} is not an integer") from None
        return text if (text != "" or self.default is not None) else None


def graph_arguments() -> list[GraphArgument]:
    """Every argument of the graph, for both launchers, from describe_graph's signature."""
    kinds = {"int": int, "bool": bool, "str": str, "str | None": str}
    args = [GraphArgument(name, p.default, kinds[p.annotation], _ARGUMENT_HELP[name])
            for name, p in inspect.signature(describe_graph).parameters.items()]
    return args + [GraphArgument("params_file", None, str, _ARGUMENT_HELP["params_file"]),
                   GraphArgument("processes", LAYOUTS[0], str, _ARGUMENT_HELP["processes"])]


@dataclass(frozen=True)
class LaunchPlan:
    """What a launcher starts: the nodes, the parameters file they all read, the environment to add."""

    specs: list[NodeSpec]
    params_file: Path
    env: dict[str, str]
    processes: str = LAYOUTS[0]
    """the process layout, one of :data:`LAYOUTS`"""

    def groups(self) -> list[list[NodeSpec]]:
        """The nodes of each process: per-node, each alone (its own executable); per-type, the nodes
        of one executable, every namespace's, together (one host_node each); per-robot, the nodes of
        one namespace together (one host_node per robot, plus one for any node outside the robot
        namespaces); one, all in one host_node."""
        if self.processes == "per-node":
            return [[s] for s in self.specs]
        if self.processes == "one":
            return [list(self.specs)]
        key = (lambda s: s.executable) if self.processes == "per-type" else (lambda s: s.namespace)
        groups: dict[str, list[NodeSpec]] = {}
        for s in self.specs:
            groups.setdefault(key(s), []).append(s)
        return list(groups.values())


def launch_plan(values: dict, environ=None) -> LaunchPlan:
    """values: name -> typed value (runner flags) or string (launch arguments), for any subset of
    graph_arguments(); the rest take their defaults."""
    typed = {}
    for a in graph_arguments():
        v = values.get(a.name, a.default)
        typed[a.name] = a.parse(v) if isinstance(v, str) else v
    params_file = Path(typed.pop("params_file") or default_params_file())
    processes = typed.pop("processes")
    if processes not in LAYOUTS:
        raise ValueError(f"processes:={processes!r} is not one of {', '.join(LAYOUTS)}")
    for key in ("model", "reward_model"):
        typed[key] = typed[key] and str(package_path(typed[key]))
    return LaunchPlan(describe_graph(**typed), params_file, large_image_transport(environ), processes)


def package_path(path: str | Path) -> Path:
    """A relative path that does not exist here but does in the package (the source tree, or an
    installed share/efm_ros), e.g. the default models/efm_sft when launched from another directory."""
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    for root in [Path(__file__).resolve().parents[2]] + [p / "share" / PACKAGE for p in install_prefixes()]:
        if (root / path).exists():
            return root / path
    return path
