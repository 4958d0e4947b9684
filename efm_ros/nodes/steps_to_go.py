"""The steps-to-go reward/success node: the FROZEN Stage-1 model judges every control tick.

Publishes (in the robot namespace)
  steps_to_go     efm_ros/StepsToGo per camera frame of a running episode: d(o_t, g), the
                  distribution, reward r_t = d(o_{t-1}, g) − d(o_t, g), detector flag, model version
  episode_event   efm_ros/EpisodeEvent: START, SUCCESS | TIMEOUT | OPERATOR_STOP, RESET_DONE, FAULT
                  (reliable, transient-local depth 20: a late policy/logger still learns the state)
  /diagnostics    rate, inference latency p50/p99, episodes by outcome, reset failures, faults
Subscribes
  camera/image    sensor_msgs/Image from the camera node (model-ready frames)
  instruction     std_msgs/String (latched) — the goal g of the next episode
  operator_stop   std_msgs/String — ends the running episode (the data is the reason)
  policy_action   efm_ros/PolicyAction — liveness only: a running episode whose policy stops
                  acting for policy_timeout_s ends with a FAULT "input lost: ..."
  policy/version  std_msgs/String (latched) — the version the robot's policy node acts with
  policy/state    std_msgs/String (latched) — the policy node's lifecycle state: no episode starts
                  while it says anything but "active" (a safe stop pauses the robot's episodes)
  /fleet/command  efm_ros/FleetCommand (``fleet_command_topic``; latched) — the trainer's
                  coordinator: PAUSE_NOW ends the running episode at its next frame (a TIMEOUT,
                  "timeout: fleet pause"), PAUSE lets it end by the episode rules; neither starts
                  a new one; PRACTISE starts again once policy/version is the version it names
Publishes also
  /fleet/status   efm_ros/FleetStatus (``fleet_status_topic``) on every change and once a second,
                  while a coordinator has spoken: paused, the policy's version, the last episode
Watches
  camera/image (input_timeout_s), policy_action (policy_timeout_s) and the logger's
  subscriptions (wait_for_logger): a silent input ends the running episode with a FAULT, WARN
  on /diagnostics until an episode ends normally; without its logger no episode starts.
Calls
  reset           std_srvs/Trigger of the robot, with a timeout and retries; repeated failures
                  raise a FAULT event and an ERROR on /diagnostics, and are retried slowly — the
                  node never hangs on a robot that does not answer.

The episode logic (reward, k-consecutive success, timeout, reset/fault) is
efm_ros.control.episode.EpisodeTracker; this file is the ROS plumbing around it.
"""
from __future__ import annotations

import itertools
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from rclpy.time import Time
from sensor_msgs.msg import Image
from std_msgs.msg import String

from efm_ros.control.coordinator import PAUSE_REASON, RobotGate
from efm_ros.control.episode import INPUT_LOST, EpisodeConfig, EpisodeEventRecord, EpisodeTracker, Event, Phase
from efm_ros.diagnostics import RollingStats
from efm_ros.model.runtime import load_model
from efm_ros.msg import EpisodeEvent, FleetCommand, FleetStatus, PolicyAction, StepsToGo
from efm_ros.nodes.common import ResetCall, declare, diagnostic_array, recorder_subscribed, spin_node
from efm_ros.data.interfaces import MAX_TEXT_CHARS, valid_stamp
from efm_ros.nodes.images import ImageFormatError, image_to_rgb
from efm_ros.model.bins import T_MAX

LATCHED = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
EVENTS_QOS = QoSProfile(depth=20, reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)


class StepsToGoNode(Node):
    def __init__(self, **kwargs):
        super().__init__("steps_to_go", **kwargs)
        model_dir = declare(self, "model_dir", "models/efm_sft", "frozen Stage-1 model directory (reward graph used)", read_only=True)
        self.robot = declare(self, "robot", self.get_namespace().strip("/") or "robot", "robot name in events and bags")
        s = declare(self, "success_threshold", -1.0, "s in steps; < 0: from the model manifest", lo=-1.0, hi=1000.0)
        k = declare(self, "success_k", 0, "consecutive ticks with d <= s; 0: from the model manifest", lo=0, hi=1000)
        max_steps = declare(self, "max_episode_steps", T_MAX, "T_max: actions per episode before a timeout", lo=1, hi=100000)
        self.reset_timeout = declare(self, "reset_timeout_s", 5.0, "wait this long for the reset service", lo=0.1, hi=600.0)
        retries = declare(self, "reset_retries", 3, "reset attempts before a FAULT", lo=1, hi=100)
        self.fault_retry = declare(self, "fault_retry_s", 10.0, "retry period while faulty", lo=0.5, hi=3600.0)
        self.input_timeout = declare(self, "input_timeout_s", 2.0, "end the running episode with a FAULT when no camera "
                                     "frame arrives for this long (the camera or the robot died); 0 = never",
                                     lo=0.0, hi=600.0)
        self.policy_timeout = declare(self, "policy_timeout_s", 3.0, "end the running episode with a FAULT when "
                                      "no policy_action arrives for this long after its START (the policy died or "
                                      "stopped acting); 0 = never (no policy drives this robot)", lo=0.0, hi=600.0)
        self.wait_for_logger = declare(self, "wait_for_logger", "", "name of the node that records this robot's "
                                       "episodes (the graph sets 'logger'): no episode STARTs until it subscribes "
                                       "to episode_event and camera/image in this namespace, so none is lost at "
                                       "start-up; '' = start at once", read_only=True)
        fleet_command = declare(self, "fleet_command_topic", "/fleet/command", "the trainer's coordinator commands "
                                "(efm_ros/FleetCommand); '' = not coordinated, episodes follow each other",
                                read_only=True)
        fleet_status = declare(self, "fleet_status_topic", "/fleet/status", "where this robot answers the "
                               "coordinator (efm_ros/FleetStatus)", read_only=True)
        threads = declare(self, "inference_threads", 1, "ONNX Runtime intra-op threads", lo=0, hi=64, read_only=True)

        self.model = load_model(model_dir, intra_op_threads=threads, functions=("reward",))  # verifies manifest.json
        self.config = EpisodeConfig(success_threshold=self.model.success_threshold if s < 0 else s,
                                    success_k=self.model.success_k if k == 0 else k,
                                    max_steps=max_steps, reset_retries=retries)
        self.tracker = EpisodeTracker(self.config)
        self.stats = RollingStats()
        self.outcomes = {e.name: 0 for e in (Event.SUCCESS, Event.TIMEOUT, Event.OPERATOR_STOP, Event.FAULT)}
        self._ids = itertools.count()
        self._instruction = ""
        self._prev_frame: np.ndarray | None = None
        self._accept_after = Time(clock_type=self.get_clock().clock_type)  # frames older than the last reset are stale
        self._next_reset_at = float("inf")  # no retry planned
        self._last_fault = ""
        self._last_frame_t = time.monotonic()     # arrival of the newest usable frame (input watchdog)
        self._recorder_seen = False
        self._episode_t = 0.0                     # START of the running episode (policy watchdog)
        self._last_action_t = 0.0                 # arrival of the newest policy_action
        self._next_recorder_check = 0.0
        self._lost = ""                           # what the last episode lost ("" once one ends normally)
        self.gate = RobotGate()                   # the fleet coordinator's say on new episodes
        self._policy_version = ""
        self._policy_state = ""   # unknown until the policy node says (no policy node: episodes start)
        self._last_episode_id = ""
        self._paused_since: float | None = None
        self._paused_s = 0.0

        self.stg_pub = self.create_publisher(StepsToGo, "steps_to_go", 10)
        self.event_pub = self.create_publisher(EpisodeEvent, "episode_event", EVENTS_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(Image, "camera/image", self._on_image, qos_profile_sensor_data)
        self.create_subscription(String, "instruction", self._on_instruction, LATCHED)
        self.create_subscription(String, "operator_stop", self._on_operator_stop, 10)
        self.create_subscription(PolicyAction, "policy_action", self._on_policy_action, 10)
        self.create_subscription(String, "policy/version", self._on_policy_version, LATCHED)
        self.create_subscription(String, "policy/state", self._on_policy_state, LATCHED)
        self.status_pub = None
        if fleet_command:
            self.status_pub = self.create_publisher(FleetStatus, fleet_status, 10)
            self.create_subscription(FleetCommand, fleet_command, self._on_fleet_command, LATCHED)
            self.create_timer(1.0, self._publish_status)
        self.reset = ResetCall(self, self.reset_timeout)
        self.create_timer(0.05, self._poll_reset)
        self.create_timer(0.1, self._watch_inputs)
        self.create_timer(1.0, self._publish_diagnostics)
        self.get_logger().info(f"reward model {self.model.version}: s={self.config.success_threshold:g}, "
                               f"k={self.config.success_k}, T_max={self.config.max_steps}")

    # -- inputs -------------------------------------------------------------------------------
    def _on_instruction(self, msg: String) -> None:
        if len(msg.data) > MAX_TEXT_CHARS:
            self.stats.counts["rejected_instructions"] += 1
            self.get_logger().warning(f"rejected an instruction of {len(msg.data)} characters", throttle_duration_sec=1.0)
            return
        if self.model.encoder is None and msg.data not in self.model.instructions:
            self.stats.counts["rejected_unknown_instructions"] += 1   # the reward model cannot judge it
            self.get_logger().error(f"rejected instruction {msg.data[:80]!r}: the reward model {self.model.version} "
                                    "has no embedding for it; no episode starts with it", throttle_duration_sec=1.0)
            self._instruction = ""
            return
        self._instruction = msg.data

    def _on_policy_version(self, msg: String) -> None:
        if len(msg.data) > MAX_TEXT_CHARS:
            self.stats.counts["rejected_versions"] += 1
            return
        changed = msg.data != self._policy_version
        self._policy_version = msg.data
        if changed:
            self._publish_status()

    def _on_policy_state(self, msg: String) -> None:
        state = msg.data[:MAX_TEXT_CHARS]
        if state != self._policy_state and self._policy_state:
            self.get_logger().info(f"policy {state}" + ("" if state == "active" else ": no episode starts until it is active"))
        self._policy_state = state

    def _on_fleet_command(self, msg: FleetCommand) -> None:
        try:
            taken = self.gate.on_command(msg.seq, msg.command, msg.version[:MAX_TEXT_CHARS])
        except ValueError as exc:
            self.stats.counts["rejected_fleet_commands"] += 1
            self.get_logger().warning(f"rejected fleet command: {exc}", throttle_duration_sec=1.0)
            return
        if taken:
            what = {FleetCommand.PAUSE: "PAUSE (the running episode ends by the episode rules, none starts)",
                    FleetCommand.PAUSE_NOW: "PAUSE_NOW (the running episode ends at its next frame, none starts)"}
            self.get_logger().info(f"fleet command {msg.seq}: " + what.get(
                msg.command, f"PRACTISE with {msg.version or 'the current version'}"))
            self._publish_status()

    def _paused(self) -> bool:
        """No episode running, and the coordinator does not let one start."""
        return self.tracker.phase is not Phase.RUNNING and not self.gate.may_start(self._policy_version)

    def _publish_status(self) -> None:
        if self.status_pub is None or self.gate.seq == 0:   # no coordinator has spoken
            return
        paused = self._paused()
        now = time.monotonic()
        if paused and self._paused_since is None:
            self._paused_since = now
        elif not paused and self._paused_since is not None:
            self._paused_s += now - self._paused_since
            self._paused_since = None
        msg = FleetStatus(robot=self.get_namespace(), seq=self.gate.seq, paused=paused,
                          policy_version=self._policy_version, last_episode_id=self._last_episode_id)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.status_pub.publish(msg)

    def _on_policy_action(self, msg: PolicyAction) -> None:
        self._last_action_t = time.monotonic()   # content unused: the policy is alive and acting

    def _on_operator_stop(self, msg: String) -> None:
        record = self.tracker.operator_stop(f"operator stop: {msg.data[:200]}" if msg.data else "operator stop")
        if record is not None:
            self._finish(record)

    def _on_image(self, msg: Image) -> None:
        if not valid_stamp(msg.header.stamp):
            self.stats.counts["rejected_frames"] += 1
            self.get_logger().warning("rejected frame: invalid header stamp", throttle_duration_sec=1.0)
            return
        if Time.from_msg(msg.header.stamp) <= self._accept_after:
            self.stats.counts["stale_frames"] += 1
            return
        try:
            frame = image_to_rgb(msg, expect_size=(self.model.image_size, self.model.image_size))
        except ImageFormatError as exc:
            self.stats.counts["rejected_frames"] += 1
            self.get_logger().warning(f"rejected frame: {exc}", throttle_duration_sec=1.0)
            return
        self._last_frame_t = time.monotonic()
        if self.tracker.phase is Phase.WAITING:
            if not self._instruction:
                return
            if not self.gate.may_start(self._policy_version):
                self.stats.counts["start_paused_by_fleet"] += 1
                return
            if self._policy_state not in ("", "active"):   # the policy was stopped (safe stop, cleanup)
                self.stats.counts["start_waiting_for_policy"] += 1
                return
            if not self._recorder_ready():
                self.stats.counts["start_waiting_for_logger"] += 1
                self.get_logger().info(f"waiting for {self.wait_for_logger!r} to record before the first START",
                                       throttle_duration_sec=5.0)
                return
            # The frame that opens an episode is not part of it: START goes out first, so the
            # policy (which acts only inside episodes) and the logger (which opens the bag on
            # START) see the episode's frame 0 — the next frame — as its first.
            self._prev_frame = None
            self._accept_after = Time.from_msg(msg.header.stamp)
            self._emit(self.tracker.start(self._new_episode_id(), self._instruction))
            self._episode_t = time.monotonic()
            return
        if self.tracker.phase is not Phase.RUNNING:
            return
        t0 = time.perf_counter()
        prev = frame if self._prev_frame is None else self._prev_frame  # frame 0's previous is itself
        d, dist = self.model.steps_to_go(frame, prev, self.tracker.instruction)
        self._prev_frame = frame
        try:
            result = self.tracker.tick(d)
        except ValueError as exc:   # NaN d from a broken reward model: not progress, not success, not a crash
            self.stats.counts["rejected_d_nan"] += 1
            self.get_logger().error(f"reward model output refused: {exc}", throttle_duration_sec=2.0)
            return
        if result.event is None and self.gate.end_running():    # the fleet pauses for an update now
            result.event = self.tracker.truncate(PAUSE_REASON)
            self.stats.counts["episodes_truncated_by_fleet"] += 1
        out = StepsToGo(header=msg.header, episode_id=self.tracker.episode_id, step=result.step,
                        expected_steps=float(d), distribution=np.asarray(dist, np.float32).tolist(),
                        reward=float(result.reward), success=bool(result.success), model_version=self.model.version)
        self.stg_pub.publish(out)
        self.stats.tick(time.perf_counter() - t0)
        if result.event is not None:
            self._finish(result.event)

    def _recorder_ready(self) -> bool:
        """True once the recording node subscribes to this robot's episode_event and camera/image.
        Checked until it is seen; after that :meth:`_watch_inputs` notices when it goes away."""
        if not self.wait_for_logger or self._recorder_seen:
            return True
        if not self._recorder_subscribed():
            return False
        self._recorder_seen = True
        self.get_logger().info(f"{self.wait_for_logger!r} records {self.get_namespace()}: episodes may start")
        return True

    def _recorder_subscribed(self) -> bool:
        return recorder_subscribed(self, self.wait_for_logger,
                                   (self.event_pub.topic_name, self.resolve_topic_name("camera/image")))

    def _watch_inputs(self) -> None:
        """Liveness of everything a running episode depends on: the camera (frames), the policy
        (policy_action) and the logger (subscribed to this robot's topics). Silence ends the
        episode with a FAULT "input lost: ..." (then the reset is tried as after any episode; a
        dead robot becomes the reset FAULT), never a stall or an unrecorded, unsupervised episode.
        Without the logger no new episode starts until it is back."""
        now = time.monotonic()
        lost = ""
        if self.wait_for_logger and self._recorder_seen and now >= self._next_recorder_check:
            self._next_recorder_check = now + 0.5
            if not self._recorder_subscribed():
                self._recorder_seen = False
                self.stats.counts["logger_lost"] += 1
                self._lost = f"{self.wait_for_logger!r} stopped recording {self.get_namespace()}"
                self.get_logger().error(f"{self._lost}: no episode starts until it is back")
                lost = self._lost
        if self.tracker.phase is not Phase.RUNNING:
            return
        silent = now - self._last_frame_t
        quiet = now - max(self._last_action_t, self._episode_t)
        if not lost and 0 < self.input_timeout < silent:
            lost = f"no camera/image for {silent:.1f} s (input_timeout_s {self.input_timeout:g})"
            self.stats.counts["input_lost"] += 1
        elif not lost and 0 < self.policy_timeout < quiet:
            lost = f"no policy_action for {quiet:.1f} s (policy_timeout_s {self.policy_timeout:g})"
            self.stats.counts["policy_lost"] += 1
        if not lost:
            return
        record = self.tracker.input_lost(lost)
        if record is not None:
            self._last_fault = self._lost = record.reason
            self.get_logger().error(f"FAULT: {record.reason}")
            self._finish(record)

    # -- episode end and reset ----------------------------------------------------------------
    def _new_episode_id(self) -> str:
        return f"{self.robot}_{time.strftime('%Y%m%dT%H%M%S')}_{next(self._ids):05d}"

    def _finish(self, record: EpisodeEventRecord) -> None:
        self.outcomes[record.event.name] += 1
        self._last_episode_id = record.episode_id
        if not record.reason.startswith(INPUT_LOST):
            self._lost = ""
        self._emit(record)
        self._instruction = ""  # the next episode waits for the instruction published after the reset
        self._request_reset()
        self._publish_status()

    def _request_reset(self) -> None:
        self._accept_after = self.get_clock().now()
        if not self.reset.ready():
            self._reset_failed("reset service not available")
            return
        self.reset.call()
        self._next_reset_at = float("inf")

    def _poll_reset(self) -> None:
        waiting = self.tracker.phase in (Phase.RESETTING, Phase.FAULT)
        if waiting and not self.reset.pending and time.monotonic() >= self._next_reset_at:
            self._request_reset()  # a retry (the first request is made when the episode ends)
            return
        result = self.reset.poll()
        if result is None:
            return
        ok, why = result
        if ok:
            self._accept_after = self.get_clock().now()
            self._emit(self.tracker.reset_succeeded())
        else:
            self._reset_failed(why)

    def _reset_failed(self, reason: str) -> None:
        self.stats.counts["reset_failures"] += 1
        self.get_logger().warning(f"reset failed: {reason}")
        fault = self.tracker.reset_failed(reason)
        if fault is not None:
            self._last_fault = fault.reason
            self.outcomes["FAULT"] += 1
            self.get_logger().error(f"FAULT: {fault.reason}; retrying every {self.fault_retry:g} s")
            self._emit(fault)
        self._next_reset_at = time.monotonic() + (self.fault_retry if self.tracker.phase is Phase.FAULT else 0.5)

    # -- outputs ------------------------------------------------------------------------------
    def _emit(self, record: EpisodeEventRecord) -> None:
        msg = EpisodeEvent(robot=self.robot, episode_id=record.episode_id, event=int(record.event),
                           instruction=record.instruction, termination_reason=record.reason,
                           outcome=int(record.outcome), steps=record.steps,
                           reward_model_version=self.model.version,
                           success_threshold=float(self.config.success_threshold), success_k=self.config.success_k)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.event_pub.publish(msg)
        if record.event is not Event.START:
            self.get_logger().info(f"{record.event.name} {record.episode_id} after {record.steps} steps {record.reason}")

    def _publish_diagnostics(self) -> None:
        values = self.stats.summary()
        values.update({f"episodes_{k.lower()}": str(v) for k, v in self.outcomes.items()})
        values.update({"phase": self.tracker.phase.value, "episode": self.tracker.episode_id,
                       "model_version": self.model.version, "s": f"{self.config.success_threshold:g}",
                       "k": str(self.config.success_k)})
        values["last_input_lost"] = self._lost
        values["policy_state"] = self._policy_state or "unknown"
        if self.status_pub is not None:
            paused_s = self._paused_s + (time.monotonic() - self._paused_since if self._paused_since is not None else 0.0)
            values.update({"fleet_command": str(self.gate.seq), "fleet_paused": str(self._paused()).lower(),
                           "fleet_paused_s": f"{paused_s:.1f}", "policy_version": self._policy_version})
        if self.tracker.phase is Phase.FAULT:
            level, message = DiagnosticStatus.ERROR, f"FAULT: {self._last_fault}"
        elif self._lost:   # until an episode ends normally again
            level, message = DiagnosticStatus.WARN, f"{self.tracker.phase.value}: {self._lost}"
        elif time.monotonic() - self._last_frame_t > max(self.input_timeout, 1.0) and self.input_timeout > 0:
            level, message = DiagnosticStatus.WARN, f"{self.tracker.phase.value}: no camera/image for " \
                                                    f"{time.monotonic() - self._last_frame_t:.0f} s"
        else:
            level, message = DiagnosticStatus.OK, self.tracker.phase.value
        self.diag_pub.publish(diagnostic_array(self, "steps-to-go reward/success", level, message, values))


def main(argv: list[str] | None = None) -> int:
    return spin_node(StepsToGoNode, argv)


if __name__ == "__main__":
    raise SystemExit(main())
