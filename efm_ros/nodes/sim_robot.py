"""The embedded robot as a ROS 2 node (one per robot namespace, e.g. /robot_0).

Publishes
  camera/image_raw  sensor_msgs/Image (rgb8, sensor-data QoS) once per control tick; the camera
                  node turns it into the model-ready camera/image that policy, reward and logger use
  instruction     std_msgs/String (reliable, transient-local: late joiners get the current one)
  eval/success    std_msgs/Bool ground-truth success — EVALUATION ONLY, never a reward input
  /diagnostics    diagnostic_msgs/DiagnosticArray at 1 Hz
Subscribes
  cmd_vel         geometry_msgs/TwistStamped: velocity on the robot's action axes (action_axes; the
                  table: linear.x, linear.y in m/s), as the policy node sends it
  gripper_cmd     std_msgs/Float64, -1 open .. +1 closed (robots with a gripper axis); it stays
                  in force for later twists
  action          std_msgs/Float32MultiArray, normalised action in [-1, 1] (tools, teleop)
Services
  reset           std_srvs/Trigger: new episode (new seed, new instruction); message = instruction

Each tick applies the latest command, steps the robot and publishes the new frame. A command
older than ``command_timeout_s`` is not repeated: the arm holds still. Malformed commands are
rejected (NaN/inf, wrong length) or scaled into range, counted, logged (throttled) and reported on
/diagnostics; they never crash the node.
"""
from __future__ import annotations

import json
import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import TwistStamped
from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Bool, Float32MultiArray, Float64, String
from std_srvs.srv import Trigger

from efm_ros.diagnostics import RollingStats
from efm_ros.nodes.common import declare, diagnostic_array, phase_delay, spin_node
from efm_ros.nodes.images import numpy_to_image
from efm_ros.robots import make_robot
from efm_ros.robots.commands import ActionAxes, CommandValidator
from efm_ros.robots import DEFAULT_ROBOT
from efm_ros.vision.preprocess import IMAGE_SIZE

LATCHED = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)


class SimRobotNode(Node):
    def __init__(self, **kwargs):
        super().__init__("sim_robot", **kwargs)
        backend = declare(self, "backend", DEFAULT_ROBOT, "robot class, dotted path", read_only=True)
        backend_args = declare(self, "backend_args", "{}", "extra constructor arguments of the backend, JSON object", read_only=True)
        image_size = declare(self, "image_size", IMAGE_SIZE, "camera image height = width, pixels", lo=16, hi=1024, read_only=True)
        self.rate_hz = declare(self, "control_rate_hz", 10.0, "control ticks per second", lo=0.5, hi=200.0, read_only=True)
        self.seed = declare(self, "seed", 0, "seed of the first episode; each reset uses the next one", lo=0, hi=2**31 - 1)
        self.max_speed = declare(self, "max_speed_mps", 0.2, "cmd_vel speed that maps to a full-scale action, m/s", lo=1e-3, hi=10.0)
        self.cmd_timeout = declare(self, "command_timeout_s", 0.5, "hold still if no command is newer than this, s", lo=0.0, hi=10.0)
        self.frame_id = declare(self, "frame_id", "camera", "frame_id of published images")
        self.camera_phase = declare(self, "camera_phase", -1.0, "where in the control period the camera ticks, "
                                    "as a fraction of it on the wall clock's grid (robots sharing a host "
                                    "stagger theirs: k / robots); -1: drawn from the seed, from start-up",
                                    lo=-1.0, hi=0.999999, read_only=True)

        self.robot = make_robot(backend, image_size=image_size, control_rate_hz=self.rate_hz, **json.loads(backend_args))
        axes = declare(self, "action_axes", "", "what each action component is on cmd_vel / gripper_cmd, comma "
                       "separated ('' = the backend's action_axes, else by its action size)", read_only=True)
        max_angular = declare(self, "max_angular_rps", 1.0, "cmd_vel rotation rate that maps to a full-scale "
                              "angular action, rad/s", lo=1e-3, hi=20.0, read_only=True)
        self.axes = ActionAxes.parse(axes or getattr(self.robot, "action_axes", ""), int(self.robot.action_dim),
                                     max_speed_mps=self.max_speed, max_angular_rps=max_angular)
        self.validator = CommandValidator(action_dim=self.robot.action_dim, axes=self.axes)
        self._gripper: float | None = None
        self.stats = RollingStats()
        self._lock = threading.Lock()
        self._command: tuple[np.ndarray, float] | None = None
        self._last_warn = 0.0
        self.episode_steps = 0

        self.image_pub = self.create_publisher(Image, "camera/image_raw", qos_profile_sensor_data)
        self.instruction_pub = self.create_publisher(String, "instruction", LATCHED)
        self.success_pub = self.create_publisher(Bool, "eval/success", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(TwistStamped, "cmd_vel", self._on_twist, qos_profile_sensor_data)
        self.create_subscription(Float32MultiArray, "action", self._on_action, qos_profile_sensor_data)
        if self.axes.has_gripper:
            self.create_subscription(Float64, "gripper_cmd", self._on_gripper, 10)
        self.create_service(Trigger, "reset", self._on_reset)
        self._reset_episode()
        # a camera free-runs with its own phase; robots that share a host's cores would otherwise
        # tick at the same instant and queue their frames behind each other in every node
        # downstream. camera_phase >= 0 puts the ticks on that phase of the wall clock's grid, which
        # every process of the host shares, so a fleet's robots can take turns (describe_graph
        # staggers them k / robots); -1 draws a phase from the seed, counted from start-up.
        period = 1.0 / self.rate_hz
        if self.camera_phase >= 0.0:
            delay = phase_delay(time.time(), period, self.camera_phase)
        else:
            delay = max(float(np.random.default_rng(self.seed).random()) * period, 1e-3)
        self._phase_timer = self.create_timer(delay, self._start_ticking)
        self.create_timer(1.0, self._publish_diagnostics)

    def _start_ticking(self) -> None:
        if self._phase_timer is None:   # a one-shot: an executor may still deliver a queued expiry
            return
        self._phase_timer.cancel()
        self.destroy_timer(self._phase_timer)
        self._phase_timer = None
        self.create_timer(1.0 / self.rate_hz, self._tick)
        self._tick()

    # -- commands -----------------------------------------------------------------------------
    def _accept(self, values, source: str) -> None:
        check = self.validator.check(values)
        if check.reason is not None:
            now = time.monotonic()
            if now - self._last_warn > 1.0:  # throttled: a flood of bad commands must not flood the log
                self._last_warn = now
                verb = "rejected" if check.rejected else "clipped"
                self.get_logger().warning(f"{verb} {source} command: {check.reason} "
                                          f"(rejected {self.validator.rejected}, clipped {self.validator.clipped} so far)")
        if check.rejected:
            return
        with self._lock:
            self._command = (check.action, time.monotonic())

    def _on_twist(self, msg: TwistStamped) -> None:
        t = msg.twist
        action, ignored = self.axes.from_command((t.linear.x, t.linear.y, t.linear.z),
                                                 (t.angular.x, t.angular.y, t.angular.z), self._gripper)
        if ignored:
            self.validator.counts["ignored_components"] += 1
        self._accept(action, "cmd_vel")

    def _on_gripper(self, msg: Float64) -> None:
        """The gripper command stays in force; it also applies at once, with the latest motion."""
        value = float(msg.data)
        if not np.isfinite(value):
            self.validator.counts["rejected_nan"] += 1
            return
        self._gripper = value
        with self._lock:
            cmd = self._command
        g = self.axes.axes.index("gripper")
        fresh = cmd is not None and time.monotonic() - cmd[1] <= self.cmd_timeout
        action = np.array(cmd[0], np.float64) if fresh else np.zeros(self.robot.action_dim)
        action[g] = value
        self._accept(action, "gripper_cmd")

    def _on_action(self, msg: Float32MultiArray) -> None:
        self._accept(list(msg.data), "action")

    # -- episode ------------------------------------------------------------------------------
    def _reset_episode(self) -> str:
        instruction = self.robot.reset(seed=int(self.seed))
        self._gripper = None
        self.seed += 1
        self.episode_steps = 0
        with self._lock:
            self._command = None
        self.instruction_pub.publish(String(data=instruction))
        self._publish_frame()
        return instruction

    def _on_reset(self, request, response):
        try:
            instruction = self._reset_episode()
        except Exception as exc:  # a backend failure is reported to the caller, not fatal to the node
            self.get_logger().error(f"reset failed: {exc!r}")
            response.success, response.message = False, f"reset failed: {exc}"
            return response
        self.get_logger().info(f"reset: {instruction!r}")
        response.success, response.message = True, instruction
        return response

    # -- control tick -------------------------------------------------------------------------
    def _tick(self) -> None:
        t0 = time.perf_counter()
        with self._lock:
            cmd = self._command
        if cmd is None or time.monotonic() - cmd[1] > self.cmd_timeout:
            action = np.zeros(self.robot.action_dim, np.float32)   # hold still; the gripper keeps its state
            if self._gripper is not None:
                action[self.axes.axes.index("gripper")] = np.clip(self._gripper, -1.0, 1.0)
            self.stats.counts["held_still"] += 1
        else:
            action = cmd[0]
        self.robot.step(action)
        self.episode_steps += 1
        self._publish_frame()
        self.stats.tick(time.perf_counter() - t0)

    def _publish_frame(self) -> None:
        stamp = self.get_clock().now().to_msg()
        self.image_pub.publish(numpy_to_image(self.robot.observe(), stamp, self.frame_id))
        self.success_pub.publish(Bool(data=bool(self.robot.success())))

    def _publish_diagnostics(self) -> None:
        values = self.stats.summary()
        values.update({f"commands_{k}": str(v) for k, v in sorted(self.validator.counts.items())})
        values["episode_steps"] = str(self.episode_steps)
        level = DiagnosticStatus.WARN if self.validator.rejected else DiagnosticStatus.OK
        message = f"{self.validator.rejected} commands rejected" if self.validator.rejected else "running"
        self.diag_pub.publish(diagnostic_array(self, "sim robot", level, message, values))


def main(argv: list[str] | None = None) -> int:
    return spin_node(SimRobotNode, argv)


if __name__ == "__main__":
    raise SystemExit(main())
