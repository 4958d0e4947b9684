"""The teleop node: record mode's actor and episode manager (one per robot namespace).

A human demonstrates through any teleop source; this node turns it into demonstration episodes in
the bag format ``train-sft`` reads (efm_ros.control.teleop.TeleopSession is the logic). It takes
the policy node's place in the graph, with the same safety limits (action_axes, max_speed_mps,
max_angular_rps, the command watchdog), and the steps-to-go node's place as the episode manager,
with the operator deciding instead of the detector.

Subscribes
  teleop/cmd_vel   geometry_msgs/TwistStamped from the teleop source (``teleop_topic``;
                   teleop_twist_keyboard / teleop_twist_joy need ``stamped:=true`` and a remap)
  teleop/gripper   std_msgs/Float64, -1 open .. +1 closed (``gripper_topic``; robots with a gripper)
  camera/image     sensor_msgs/Image (model-ready frames): one action per frame of an episode
  instruction      std_msgs/String (latched): the robot's (sim) or the operator's instruction
  record/command   std_msgs/String: "start", "success" or "discard" (what the keyboard teleop sends)
Publishes
  cmd_vel, gripper_cmd   the bounded command, as the policy node sends it (zero twist = hold still)
  policy_action    efm_ros/PolicyAction per acted frame: stamp = the frame's, the continuous action,
                   no tokens (train-sft tokenises with the model's bins), model_version "teleop"
  episode_event    START on the operator's start (after the robot's reset), SUCCESS (outcome
                   success) at the frame after the success mark: the goal frame; OPERATOR_STOP with
                   termination_reason "discard" (the logger keeps the bag apart, in discarded/)
  record/state     std_msgs/String (latched): phase, episode, steps, instruction (for the operator)
  /diagnostics     phase, episodes recorded / discarded, command counts, faults
Services
  record/start, record/success, record/discard   std_srvs/Trigger (the same as record/command)
Calls
  reset            std_srvs/Trigger of the robot before each episode (``reset_on_start``)
"""
from __future__ import annotations

import itertools
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import TwistStamped
from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from rclpy.time import Time
from sensor_msgs.msg import Image
from std_msgs.msg import Float64, String
from std_srvs.srv import Trigger

from efm_ros.control.episode import Event, Outcome
from efm_ros.control.teleop import OPERATOR_COMMANDS, EpisodeEnd, TeleopPhase, TeleopSession
from efm_ros.data.episode import TELEOP_SOURCE
from efm_ros.data.interfaces import MAX_TEXT_CHARS, valid_stamp
from efm_ros.msg import EpisodeEvent, PolicyAction
from efm_ros.nodes.common import ResetCall, declare, diagnostic_array, recorder_subscribed, spin_node, twist_stamped
from efm_ros.robots.commands import ActionAxes

LATCHED = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
EVENTS_QOS = QoSProfile(depth=20, reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)


class TeleopNode(Node):
    def __init__(self, **kwargs):
        super().__init__("teleop", **kwargs)
        ro = {"read_only": True}
        self.robot = declare(self, "robot", self.get_namespace().strip("/") or "robot", "robot name in events and bags")
        teleop_topic = declare(self, "teleop_topic", "teleop/cmd_vel", "TwistStamped velocities of the teleop source",
                               **ro)
        gripper_topic = declare(self, "gripper_topic", "teleop/gripper", "Float64 gripper command of the teleop "
                                "source, -1 open .. +1 closed", **ro)
        axes = declare(self, "action_axes", "", "what each action component drives (as the policy node's): "
                       "'' = by action_dims", **ro)
        rate = declare(self, "control_rate_hz", 10.0, "act at most this often: a faster camera's frames in between "
                       "are skipped, as the policy node's timer does (0 = on every frame: the camera is the clock)",
                       lo=0.0, hi=200.0, **ro)
        dims = declare(self, "action_dims", 2, "the robot's action size when action_axes is ''", lo=1, hi=7, **ro)
        max_speed = declare(self, "max_speed_mps", 0.2, "speed of a full-scale action, and the limit, m/s",
                            lo=1e-3, hi=10.0, **ro)
        max_angular = declare(self, "max_angular_rps", 1.0, "rotation rate of a full-scale angular action, rad/s",
                              lo=1e-3, hi=20.0, **ro)
        timeout = declare(self, "command_timeout_s", 0.5, "hold still when the teleop source sent nothing newer, s",
                          lo=0.01, hi=10.0, **ro)
        max_steps = declare(self, "max_episode_steps", 1000, "a demonstration this long is discarded (forgotten "
                            "mark)", lo=1, hi=100000, **ro)
        self.reset_on_start = declare(self, "reset_on_start", True, "call the robot's reset service before each "
                                      "episode (false: the operator resets the scene by hand)", **ro)
        self.reset_timeout = declare(self, "reset_timeout_s", 5.0, "wait this long for the reset service", lo=0.1,
                                     hi=600.0, **ro)
        self.command_frame = declare(self, "command_frame_id", "table", "frame_id of cmd_vel", **ro)
        self.wait_for_logger = declare(self, "wait_for_logger", "", "name of the node that records this robot's "
                                       "episodes: start is refused until it subscribes ('' = do not check)", **ro)
        named = [a for a in axes.split(",") if a.strip()]
        dims = len(named) if named else dims      # action_dims only sizes the default axes
        self.min_gap_ns = int(0.75e9 / rate) if rate > 0 else 0
        self._last_acted_ns: int | None = None
        self.session = TeleopSession(ActionAxes.parse(axes, dims, max_speed_mps=max_speed, max_angular_rps=max_angular),
                                     self.robot, command_timeout_s=timeout, max_steps=max_steps)
        self._ids = itertools.count()
        self._instruction = ""
        self._begin_after: Time | None = None     # frames stamped after the reset open the episode
        self._last_refusal = ""

        self.action_pub = self.create_publisher(PolicyAction, "policy_action", 10)
        self.cmd_pub = self.create_publisher(TwistStamped, "cmd_vel", 10)
        self.gripper_pub = self.create_publisher(Float64, "gripper_cmd", 10)
        self.event_pub = self.create_publisher(EpisodeEvent, "episode_event", EVENTS_QOS)
        self.state_pub = self.create_publisher(String, "record/state", LATCHED)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(TwistStamped, teleop_topic, self._on_twist, qos_profile_sensor_data)
        self.create_subscription(Float64, gripper_topic, self._on_gripper, 10)
        self.create_subscription(Image, "camera/image", self._on_frame, qos_profile_sensor_data)
        self.create_subscription(String, "instruction", self._on_instruction, LATCHED)
        self.create_subscription(String, "record/command", self._on_command, 10)
        for name in OPERATOR_COMMANDS:
            self.create_service(Trigger, f"record/{name}", lambda req, res, name=name: self._on_service(name, res))
        self.reset = ResetCall(self, self.reset_timeout)
        self.create_timer(0.05, self._poll)
        self.create_timer(1.0, self._publish_diagnostics)
        self._publish_state()
        self.get_logger().info(f"record mode: teleop on {self.resolve_topic_name(teleop_topic)}, axes "
                               f"{','.join(self.session.axes.axes)}; start with record/start or 's' in "
                               "efm-ros teleop-keyboard")

    # -- inputs ---------------------------------------------------------------------------------
    def _on_twist(self, msg: TwistStamped) -> None:
        t = msg.twist
        self.session.on_twist((t.linear.x, t.linear.y, t.linear.z), (t.angular.x, t.angular.y, t.angular.z))

    def _on_gripper(self, msg: Float64) -> None:
        self.session.on_gripper(float(msg.data))

    def _on_instruction(self, msg: String) -> None:
        text = msg.data.strip()
        if not text or len(text) > MAX_TEXT_CHARS:
            self.session.counts["rejected_instruction"] += 1
            return
        self._instruction = text

    def _on_command(self, msg: String) -> None:
        refusal = self.operator(msg.data.strip().lower())
        if refusal:
            self.get_logger().warning(f"record/command {msg.data!r} refused: {refusal}")

    def _on_service(self, name: str, response):
        refusal = self.operator(name)
        response.success = not refusal
        response.message = refusal or f"{name}: ok ({self.session.phase.value} {self.session.episode_id})"
        return response

    # -- operator ---------------------------------------------------------------------------------
    def operator(self, command: str) -> str:
        """Apply an operator command; returns '' or why it was refused."""
        if command not in OPERATOR_COMMANDS:
            return f"unknown command {command!r}; expected one of {', '.join(OPERATOR_COMMANDS)}"
        if command == "start":
            if self.wait_for_logger and not recorder_subscribed(self, self.wait_for_logger, (
                    self.event_pub.topic_name, self.resolve_topic_name("camera/image"))):
                return f"{self.wait_for_logger!r} does not record {self.get_namespace()} yet"
            episode_id = f"{self.robot}_demo_{time.strftime('%Y%m%dT%H%M%S')}_{next(self._ids):05d}"
            refusal = self.session.start(episode_id)
            if refusal:
                return refusal
            self._begin_after = None
            if self.reset_on_start:
                if not self.reset.ready():
                    self.session.abort_start()
                    return "the robot's reset service is not available (reset_on_start:=false to reset by hand)"
                self.reset.call()
            else:
                self._begin_after = self.get_clock().now()
            self._publish_state()
            return ""
        refusal, end = self.session.mark(command)
        if end is not None:
            self._finish(end)
        self._publish_state()
        return refusal or ""

    def _poll(self) -> None:
        result = self.reset.poll()
        if result is None:
            return
        ok, why = result
        if ok:
            self._begin_after = self.get_clock().now()
        else:
            self._start_failed(why)

    def _start_failed(self, why: str) -> None:
        self.session.abort_start()
        self.session.counts["start_failed"] += 1
        self._last_refusal = why
        self.get_logger().error(f"episode not started: {why}")
        self._publish_state()

    # -- control tick -------------------------------------------------------------------------
    def _on_frame(self, msg: Image) -> None:
        if not valid_stamp(msg.header.stamp):
            self.session.counts["rejected_frames"] += 1
            return
        stamp = Time.from_msg(msg.header.stamp)
        if self.session.phase is TeleopPhase.STARTING:
            # The frame that opens an episode is not part of it (as in practice): START goes out
            # first, so the logger, which opens the bag on START, sees the next frame as frame 0.
            if self._begin_after is None or stamp <= self._begin_after:
                return
            refusal = self.session.begin(self._instruction)
            if refusal:
                return self._start_failed(refusal)
            self._emit(Event.START, self.session.episode_id, Outcome.UNKNOWN, "", 0, self.session.instruction)
            self._last_refusal, self._last_acted_ns = "", None
            self._hold()
            self._publish_state()
            return
        stamp_ns = stamp.nanoseconds
        if (self.session.phase is TeleopPhase.RUNNING and self._last_acted_ns is not None
                and stamp_ns - self._last_acted_ns < self.min_gap_ns):
            self.session.counts["frames_between_ticks"] += 1   # a camera faster than the control rate
            return
        action, step, end = self.session.on_frame()
        if end is not None:
            self._hold()
            self._finish(end)
            self._publish_state()
            return
        if action is None:
            return
        self._last_acted_ns = stamp_ns
        self.action_pub.publish(PolicyAction(header=msg.header, episode_id=self.session.episode_id, step=step,
                                             action=[float(a) for a in action], tokens=[], log_prob=0.0, entropy=0.0,
                                             model_version=TELEOP_SOURCE))
        linear, angular, gripper = self.session.axes.to_command(action)
        self._publish_twist(linear, angular)
        if gripper is not None:
            self.gripper_pub.publish(Float64(data=gripper))

    # -- outputs ------------------------------------------------------------------------------
    def _finish(self, end: EpisodeEnd) -> None:
        event = Event.SUCCESS if end.success else Event.OPERATOR_STOP
        self._emit(event, end.episode_id, Outcome.SUCCESS if end.success else Outcome.FAILURE, end.reason,
                   end.steps, end.instruction)
        self.get_logger().info(f"{'recorded' if end.success else 'discarded'} {end.episode_id}: {end.steps} steps")

    def _emit(self, event: Event, episode_id: str, outcome: Outcome, reason: str, steps: int, instruction: str) -> None:
        msg = EpisodeEvent(robot=self.robot, episode_id=episode_id, event=int(event), instruction=instruction,
                           termination_reason=reason, outcome=int(outcome), steps=int(steps),
                           policy_version=TELEOP_SOURCE)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.event_pub.publish(msg)

    def _hold(self) -> None:
        self._publish_twist()

    def _publish_twist(self, linear=(0.0, 0.0, 0.0), angular=(0.0, 0.0, 0.0)) -> None:
        self.cmd_pub.publish(twist_stamped(self, self.command_frame, linear, angular))

    def _publish_state(self) -> None:
        s = self.session
        self.state_pub.publish(String(data=f"{s.phase.value} {s.episode_id or '-'} steps={s.steps} "
                                           f"recorded={s.counts['success']} discarded={s.counts['discarded']} "
                                           f"instruction={s.instruction or self._instruction!r}"))

    def _publish_diagnostics(self) -> None:
        s = self.session
        level = DiagnosticStatus.WARN if self._last_refusal else DiagnosticStatus.OK
        values = {"phase": s.phase.value, "episode": s.episode_id, "steps": str(s.steps),
                  "instruction": self._instruction, "last_start_failure": self._last_refusal,
                  **{k: str(v) for k, v in sorted(s.counts.items())}}
        self.diag_pub.publish(diagnostic_array(self, "record mode", level, f"{s.phase.value}", values))


def main(argv: list[str] | None = None) -> int:
    return spin_node(TeleopNode, argv)


if __name__ == "__main__":
    raise SystemExit(main())
