"""The policy as a managed (lifecycle) ROS 2 node: camera frame + instruction -> action, at the
control rate, with the model hot-swapped between ticks (one per robot namespace).

Publishes
  policy_action   efm_ros/PolicyAction (reliable, depth 10), one per acted tick: header.stamp =
                  the SOURCE camera image's stamp (the bag reader aligns on it), episode_id, step,
                  sampled action (as sampled, unclamped), tokens, log_prob, entropy, model_version
  cmd_vel         geometry_msgs/TwistStamped (reliable, depth 10): each action component on its axis
                  (action_axes; default by the model's action size: 2 = linear.x/y, 3 = linear.x/y/z,
                  4 = linear.x/y/z + gripper), linear x max_speed_mps in m/s and angular x
                  max_angular_rps in rad/s, each part's norm clamped to its maximum; a zero twist =
                  hold still
  gripper_cmd     std_msgs/Float64 (reliable, depth 10), only with a gripper axis: -1 open .. +1
                  closed; not sent while holding still (the gripper keeps its state)
  /diagnostics    tick rate, camera->action latency p50/p99, stale/skipped/clamped/held counts,
                  model version, swaps, refused versions, faults (1 Hz, in every lifecycle state)
  policy/version  std_msgs/String (reliable, transient local): the version it acts with, on
                  configure and after every swap (the fleet coordinator waits for it)
  policy/state    std_msgs/String (reliable, transient local): its lifecycle state on every change
                  (unconfigured, inactive, active, finalized); steps_to_go starts no episode while
                  it is not active, so a safe stop (deactivate) does not turn into a loop of resets
Subscribes
  camera/image    sensor_msgs/Image rgb8, image_size x image_size (sensor-data QoS; camera node)
  instruction     std_msgs/String (reliable, transient local: the current one on joining)
  episode_event   efm_ros/EpisodeEvent (reliable, transient local depth 20, as steps_to_go offers):
                  START sets the episode id (and its instruction); SUCCESS / TIMEOUT /
                  OPERATOR_STOP / FAULT of that episode make the arm hold still until the next START
  /fleet/command  efm_ros/FleetCommand (``fleet_command_topic``; latched): a PRACTISE naming a version
                  this node does not act with rescans watch_dir at once (not at the next
                  watch_period_s): the fleet waits for every robot's swap after each update
Services
  policy/reload          std_srvs/Trigger: rescan watch_dir now (the outcome shows in the log and
                         on /diagnostics; the reply names the current version)
  policy/change_state, policy/get_state, ...   lifecycle_msgs services of the managed node
  policy/set_parameters  model_dir:=<dir> hot-swaps to that model (refused if it has no manifest.json,
                         lies outside model_root, or is not signed by one of trusted_keys)

Lifecycle (return values: SUCCESS completes the transition, FAILURE returns to the previous state)
  configure   load + verify the model (newest complete version in watch_dir, else model_dir);
              a missing/corrupt/unsigned model -> FAILURE, logged; at start-up (autostart) the node
              then exits with status 2, unless wait_for_model:=true keeps it alive (unconfigured)
  activate    start acting at control_rate_hz;  deactivate: SAFE STOP, one zero twist, no more commands
  cleanup     stop the watcher, unload the model
With ``autostart`` (default true) the node configures and activates itself after construction,
so ``ros2 run``, ``ros2 launch`` and the in-process runner need no lifecycle manager; set it false
to drive the transitions from outside (nav2-style lifecycle manager, ``ros2 lifecycle set``).

Triggering. ``trigger:=timer`` (default): a timer at control_rate_hz takes the latest frame, for
cameras faster than the control rate; a frame waits up to one period (its latency is the timer's
phase). ``trigger:=frame``: every new frame is acted on as it arrives, for robots whose camera is
the control clock (the embedded robot publishes one frame per control step): latency is just the
inference, and each frame gets exactly one action; the timer then only runs the watchdog.

Each tick takes the latest frame and acts once: never twice on the same frame (a tick without a
new frame is ``skipped`` and publishes nothing), never on a frame older than
``stale_frame_timeout_s`` by its stamp (vs the node clock) or by its arrival (``stale``: publishes a
zero twist, hold still), never outside an episode. The previous-frame input is the frame acted on at
the previous tick of the same episode (frame 0's previous is frame 0), as the steps-to-go node and
the trainer pair them. Hot-swap: efm_ros.control.hotswap (order of versions, atomicity).
"""
from __future__ import annotations

import functools
import threading
import time
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import TwistStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from rclpy.time import Time
from sensor_msgs.msg import Image
from std_msgs.msg import Float64, String
from std_srvs.srv import Trigger

from efm_ros.control.hotswap import HotSwapper
from efm_ros.data.interfaces import MAX_TEXT_CHARS, event_problem, valid_stamp
from efm_ros.diagnostics import RollingStats
from efm_ros.model.manifest import MANIFEST_NAME
from efm_ros.model.runtime import load_model
from efm_ros.model.signing import SignatureError, check_trusted, load_public_key
from efm_ros.msg import EpisodeEvent, FleetCommand, PolicyAction, StepsToGo
from efm_ros.nodes.common import StartupError, declare, diagnostic_array, spin_node, twist_stamped
from efm_ros.robots.commands import ActionAxes
from efm_ros.vision.preprocess import FrameError, decode

LATCHED = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
EVENTS_QOS = QoSProfile(depth=20, reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
TERMINAL = (EpisodeEvent.SUCCESS, EpisodeEvent.TIMEOUT, EpisodeEvent.OPERATOR_STOP, EpisodeEvent.FAULT)
EVENT_NAMES = {EpisodeEvent.START: "START", EpisodeEvent.SUCCESS: "SUCCESS", EpisodeEvent.TIMEOUT: "TIMEOUT",
               EpisodeEvent.OPERATOR_STOP: "OPERATOR_STOP", EpisodeEvent.FAULT: "FAULT"}


class PolicyNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__("policy", **kwargs)
        ro = dict(read_only=True)   # read once at construction / configure
        self.autostart = declare(self, "autostart", True, "configure + activate after construction "
                                 "(no lifecycle manager needed)", **ro)
        declare(self, "model_dir", "", "model directory; setting it at run time hot-swaps to it")
        self.watch_dir = declare(self, "watch_dir", "", "directory of model versions; the newest complete one "
                                 "is loaded as it appears ('' = off)", **ro)
        self.watch_period = declare(self, "watch_period_s", 2.0, "how often watch_dir is scanned, s", lo=0.05, hi=600.0, **ro)
        self.rate_param = declare(self, "control_rate_hz", 0.0, "control ticks per second; 0 = the model manifest's "
                                  "rate", lo=0.0, hi=200.0, **ro)
        self.trigger = declare(self, "trigger", "timer", "'timer': act at control_rate_hz on the latest frame; "
                               "'frame': act on each new frame as it arrives (the camera is the clock)", **ro)
        declare(self, "max_speed_mps", 0.2, "speed of a full-scale action on cmd_vel, and the speed limit, m/s",
                lo=1e-3, hi=10.0)
        declare(self, "stale_frame_timeout_s", 0.5, "hold still when the newest frame is older than this, s",
                lo=0.01, hi=60.0)
        self.seed = declare(self, "seed", 0, "seed of the action sampler (numpy Generator)", lo=0, hi=2**31 - 1, **ro)
        self.require_start = declare(self, "require_episode_start", True, "act only inside an episode (after a "
                                     "START event); false: act from activation on, episode_id ''", **ro)
        self.providers = declare(self, "providers", "", "ONNX Runtime providers, comma separated ('' = best "
                                 "available)", **ro)
        self.threads = declare(self, "inference_threads", 1, "ONNX Runtime intra-op threads (0 = ORT default)",
                               lo=0, hi=64, **ro)
        self.supervisor_timeout = declare(self, "supervisor_timeout_s", 1.0, "inside an episode, hold still when the "
                                          "steps-to-go supervisor has published nothing for this long (it ends "
                                          "episodes; without it nothing would); 0 = no check", lo=0.0, hi=600.0, **ro)
        self.trusted_keys = declare(self, "trusted_keys", "", "Ed25519 public keys (PEM files, comma separated) whose "
                                    "signature a model version must carry (efm-ros keygen); '' = unsigned versions "
                                    "are accepted", **ro)
        self.model_root = declare(self, "model_root", "", "every model loaded (model_dir, watch_dir versions, a "
                                  "model_dir set at run time) must lie under this directory; '' = anywhere", **ro)
        self.wait_for_model = declare(self, "wait_for_model", False, "when no model loads at start (autostart): "
                                      "false = exit with status 2 so a supervisor sees it; true = stay up "
                                      "unconfigured and wait for a lifecycle configure", **ro)
        self.command_frame = declare(self, "command_frame_id", "table", "frame_id of cmd_vel (the robot's planar "
                                     "command frame)", **ro)
        self.action_axes = declare(self, "action_axes", "", "what each action component drives, comma separated: "
                                   "linear.x|y|z, angular.x|y|z, gripper ('' = by the model's action size: 2 planar, "
                                   "3 xyz, 4 xyz + gripper, 6 xyz + rotation, 7 + gripper)", **ro)
        self.fleet_command = declare(self, "fleet_command_topic", "/fleet/command", "the fleet coordinator's commands: "
                                     "a PRACTISE naming a version this node does not act with rescans watch_dir "
                                     "at once ('' = only every watch_period_s)", **ro)
        declare(self, "max_angular_rps", 1.0, "rotation rate of a full-scale angular action on cmd_vel, and its "
                "limit, rad/s", lo=1e-3, hi=20.0)

        if self.trigger not in ("timer", "frame"):
            self.destroy_node()
            raise ValueError(f"policy: trigger must be 'timer' or 'frame', got {self.trigger!r}")
        self._axes: dict[tuple, ActionAxes] = {}  # (action size, max speed, max angular rate) -> axes
        self.swapper: HotSwapper | None = None
        self.stats = RollingStats()              # one event per published action; latency = now - image stamp
        self.counts = self.stats.counts
        self.rng = np.random.default_rng(self.seed)
        self._lock = threading.Lock()            # inputs written by subscriptions, read by the tick
        self._tick_lock = threading.Lock()       # a whole tick; deactivate waits for it (no command after the stop)
        self._active = False
        self._frame: tuple[Image, float, int] | None = None     # (msg, arrival monotonic s, arrival seq)
        self._frame_seq = 0
        self._instruction = ""
        self._episode: str | None = None if self.require_start else ""
        self._ended = False
        # frames stamped before the end of the previous episode are never used for the next one
        self._accept_after = Time(clock_type=self.get_clock().clock_type)
        self._step = 0
        self._prev: tuple[int, np.ndarray] | None = None        # (seq, frame) acted on at the previous tick
        self._last_acted_stamp = None
        self._keys: list = []                    # trusted public keys (loaded at configure)
        self._supervisor_t = 0.0                 # monotonic time of the newest steps_to_go message (or START)
        self._last_fault = ""
        self._timer = None
        self._state = "unconfigured"             # lifecycle state label, for /diagnostics
        self._reported = (0, 0, 0)               # (faults, stale, refused versions) at the last diagnostics message

        # Inputs in their own group: with a multi-threaded executor frames keep arriving during a tick.
        inputs = MutuallyExclusiveCallbackGroup()
        self._control_group = MutuallyExclusiveCallbackGroup()
        self.action_pub = self.create_publisher(PolicyAction, "policy_action", 10)
        self.cmd_pub = self.create_publisher(TwistStamped, "cmd_vel", 10)
        self.gripper_pub = self.create_publisher(Float64, "gripper_cmd", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.version_pub = self.create_publisher(String, "~/version", LATCHED)
        self.state_pub = self.create_publisher(String, "~/state", LATCHED)
        self.state_pub.publish(String(data=self._state))
        self.create_subscription(Image, "camera/image", self._on_image, qos_profile_sensor_data, callback_group=inputs)
        self.create_subscription(String, "instruction", self._on_instruction, LATCHED, callback_group=inputs)
        self.create_subscription(EpisodeEvent, "episode_event", self._on_event, EVENTS_QOS, callback_group=inputs)
        self.create_subscription(StepsToGo, "steps_to_go", self._on_supervisor, 10, callback_group=inputs)
        if self.fleet_command:
            self.create_subscription(FleetCommand, self.fleet_command, self._on_fleet_command, LATCHED,
                                     callback_group=inputs)
        self.create_service(Trigger, "~/reload", self._on_reload)    # private: <ns>/policy/reload, like change_state
        self.add_on_set_parameters_callback(self._check_params)
        self.add_post_set_parameters_callback(self._apply_params)
        self.create_timer(1.0, self._publish_diagnostics)

        if self.autostart:
            if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                self.trigger_activate()
            elif not self.wait_for_model:
                fault = self._last_fault
                self.destroy_node()
                raise StartupError(f"{fault} (set wait_for_model:=true to stay up and wait)")

    def _on_fleet_command(self, msg: FleetCommand) -> None:
        """The trainer has published a new version and waits for every robot to act with it:
        look for it now. Only a hint: what is loaded is still whatever watch_dir holds and verifies."""
        swapper = self.swapper
        if msg.command != FleetCommand.PRACTISE or not msg.version or swapper is None or swapper.watch_dir is None:
            return
        current = swapper.slot.current
        if getattr(current, "version", None) != msg.version[:MAX_TEXT_CHARS]:
            self.counts["rescans_by_fleet"] += 1
            swapper.rescan()

    # -- lifecycle ----------------------------------------------------------------------------
    def _trusted_load(self, path, **kwargs):
        check_trusted(path, self._keys, self.model_root or None)   # SignatureError: refused and counted
        return load_model(path, **kwargs)

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        providers = [p.strip() for p in self.providers.split(",") if p.strip()] or None
        try:
            self._keys = [load_public_key(p.strip()) for p in self.trusted_keys.split(",") if p.strip()]
        except SignatureError as exc:
            self._last_fault = f"configure failed: {exc}"
            self.get_logger().error(self._last_fault)
            return TransitionCallbackReturn.FAILURE
        loader = functools.partial(self._trusted_load, providers=providers, intra_op_threads=self.threads,
                                   functions=("policy",))
        swapper = HotSwapper(loader, watch_dir=self.watch_dir or None, period_s=self.watch_period, log=self._log)
        try:
            model = swapper.load_initial(self.get_parameter("model_dir").value)
        except Exception as exc:  # noqa: BLE001 — rclpy would turn an exception into a silent ERROR transition
            self._last_fault = f"configure failed: {exc}"
            self.get_logger().error(f"configure failed, staying unconfigured: {exc}")
            return TransitionCallbackReturn.FAILURE
        try:
            self._axes_for(model.action_bins.dims)
        except ValueError as exc:
            self._last_fault = f"configure failed: {exc}"
            self.get_logger().error(self._last_fault)
            return TransitionCallbackReturn.FAILURE
        self.swapper = swapper
        self.rng = np.random.default_rng(self.seed)
        rate = self.rate_param or model.control_rate_hz
        self._timer = self.create_timer(1.0 / rate, self._tick, callback_group=self._control_group)
        self._timer.cancel()                     # runs only while active
        swapper.start()
        self.version_pub.publish(String(data=model.version))
        self._last_fault = ""
        self._set_state("inactive")
        self.get_logger().info(f"configured: model {model.version} from {model.model_dir} "
                               f"({', '.join(model.providers)}), {rate:g} Hz"
                               + (f", watching {self.watch_dir}" if self.watch_dir else ""))
        return TransitionCallbackReturn.SUCCESS

    def _set_state(self, label: str) -> None:
        """The lifecycle state label (/diagnostics), published on policy/state."""
        self._state = label
        self.state_pub.publish(String(data=label))

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._tick_lock:
            self._active = True
        self._timer.reset()
        self._set_state("active")
        self.get_logger().info("active: acting on camera/image")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._safe_stop()
        self._set_state("inactive")
        self.get_logger().info("inactive: safe stop sent, no more commands")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._unload()
        self._set_state("unconfigured")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._safe_stop()
        self._unload()
        self._set_state("finalized")
        return TransitionCallbackReturn.SUCCESS

    def _safe_stop(self) -> None:
        """Stop acting and command zero velocity once; waits for a running tick to finish."""
        if self._timer is not None:
            self._timer.cancel()
        with self._tick_lock:
            was_active, self._active = self._active, False
            if was_active:
                self._publish_twist()

    def _unload(self) -> None:
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None
        if self.swapper is not None:
            self.swapper.stop()
            self.swapper.slot.set(None)          # drop the ONNX Runtime sessions
            self.swapper = None

    def close(self) -> None:
        """Called by spin_node on exit: best-effort zero twist (the context may be gone already)."""
        try:
            self._safe_stop()
        except Exception:  # noqa: BLE001 — publishing after rclpy shut down raises; nothing to do then
            pass
        self._unload()

    # -- inputs -------------------------------------------------------------------------------
    def _on_image(self, msg: Image) -> None:
        if not valid_stamp(msg.header.stamp):
            self.counts["rejected_bad_stamp"] += 1
            self.get_logger().warning("rejected frame: invalid header stamp", throttle_duration_sec=2.0)
            return
        with self._lock:
            self._frame_seq += 1
            self._frame = (msg, time.monotonic(), self._frame_seq)
        if self.trigger == "frame":
            self._tick(on_frame=True)

    def _on_supervisor(self, msg: StepsToGo) -> None:
        self._supervisor_t = time.monotonic()  # content unused: the supervisor is alive

    def _on_instruction(self, msg: String) -> None:
        if len(msg.data) > MAX_TEXT_CHARS:
            self.counts["rejected_instructions"] += 1
            self.get_logger().warning(f"rejected an instruction of {len(msg.data)} characters", throttle_duration_sec=2.0)
            return
        with self._lock:
            self._instruction = msg.data

    def _on_event(self, msg: EpisodeEvent) -> None:
        problem = event_problem(msg)
        if problem:
            self.counts["rejected_events"] += 1
            self.get_logger().warning(f"rejected episode event: {problem}", throttle_duration_sec=2.0)
            return
        with self._lock:
            stamp = Time.from_msg(msg.header.stamp)
            if msg.event == EpisodeEvent.START:
                self._episode, self._step, self._prev, self._ended = msg.episode_id, 0, None, False
                self._supervisor_t = time.monotonic()   # the supervisor just spoke: START comes from it
                if msg.instruction:
                    self._instruction = msg.instruction
                if stamp.nanoseconds:  # an episode's frames come after its START (steps_to_go node)
                    self._accept_after = stamp
            elif msg.event in TERMINAL and msg.episode_id in ("", self._episode):
                self._ended = True
                if stamp.nanoseconds:
                    self._accept_after = stamp
        if msg.event in EVENT_NAMES:
            self.get_logger().info(f"episode {msg.episode_id!r}: {EVENT_NAMES[msg.event]}"
                                   + ("" if msg.event == EpisodeEvent.START else ", holding still until the next START"))

    # -- control tick -------------------------------------------------------------------------
    def _tick(self, on_frame: bool = False) -> None:
        """One control decision. Timer ticks (and, with trigger:=frame, every new frame) come here;
        in frame mode the timer only keeps the watchdog and hold-still commands going."""
        with self._tick_lock:
            if self.swapper is None or not self._active:
                return
            model, replaced = self.swapper.slot.take()       # the only swap point: between ticks
            if replaced is not None:
                self.counts["swaps"] += 1
                self.version_pub.publish(String(data=model.version))
                self.get_logger().info(f"hot-swapped model {replaced.version} -> {model.version}")
            with self._lock:
                frame, episode, ended, instruction = self._frame, self._episode, self._ended, self._instruction
                prev, step = self._prev, self._step
            if episode is None:
                return self._hold("held_no_episode")
            if ended:
                return self._hold("held_episode_ended")
            if (self.require_start and self.supervisor_timeout > 0
                    and time.monotonic() - self._supervisor_t > self.supervisor_timeout):
                self.get_logger().warning(f"no steps_to_go for {time.monotonic() - self._supervisor_t:.1f} s: nothing "
                                          f"supervises the episode, holding still", throttle_duration_sec=2.0)
                return self._hold("held_no_supervisor")
            if frame is None:
                return self._hold("held_no_frame")
            msg, arrival, seq = frame
            now = self.get_clock().now()
            stamp = Time.from_msg(msg.header.stamp)
            timeout = self.get_parameter("stale_frame_timeout_s").value
            stamp_age = (now - stamp).nanoseconds * 1e-9 if stamp.nanoseconds else 0.0
            if stamp_age > timeout or time.monotonic() - arrival > timeout:
                self.get_logger().warning(f"newest frame is {stamp_age:.3f} s old (limit {timeout:g} s): holding still",
                                          throttle_duration_sec=2.0)
                return self._hold("stale")
            if (prev is not None and prev[0] == seq) or msg.header.stamp == self._last_acted_stamp:
                if self.trigger == "timer" or on_frame:
                    self.counts["skipped"] += 1                # no new frame since the last action
                return None
            if stamp < self._accept_after:
                return self._hold("held_frame_before_episode")
            if not instruction:
                return self._hold("held_no_instruction")
            try:
                rgb = decode(msg.encoding, msg.height, msg.width, msg.step, msg.data)
                if rgb.shape[:2] != (model.image_size, model.image_size):
                    raise FrameError("frame_size", f"frame is {rgb.shape[1]}x{rgb.shape[0]}, the model takes "
                                     f"{model.image_size}x{model.image_size} (camera node image_size?)")
            except FrameError as exc:
                self.counts[f"rejected_{exc.reason}"] += 1
                self.get_logger().warning(f"rejected frame: {exc}", throttle_duration_sec=2.0)
                return self._hold("held_bad_frame")
            try:
                prev_rgb = rgb if prev is None else prev[1]     # frame 0's previous frame is frame 0
                action, tokens, log_prob, entropy = model.act(rgb, prev_rgb, instruction, self.rng)
                if not np.all(np.isfinite(action)):
                    raise ValueError(f"non-finite action {action}")
            except Exception as exc:  # noqa: BLE001 — unknown instruction, ORT error: hold still, report, go on
                self._last_fault = f"{type(exc).__name__}: {exc}"
                self.counts[f"fault_{type(exc).__name__}"] += 1
                self.get_logger().error(f"policy failed, holding still: {self._last_fault}", throttle_duration_sec=2.0)
                return self._hold("held_fault")
            with self._lock:
                if self._episode != episode:                   # a START arrived during inference: drop it
                    return None
                self._prev, self._step, self._last_acted_stamp = (seq, rgb), step + 1, msg.header.stamp
            out = PolicyAction(header=msg.header, episode_id=episode, step=step,
                               action=[float(a) for a in action], tokens=[int(t) for t in tokens],
                               log_prob=float(log_prob), entropy=float(entropy), model_version=model.version)
            self.action_pub.publish(out)
            self._command(action)
            self.stats.tick((self.get_clock().now() - stamp).nanoseconds * 1e-9)

    def _axes_for(self, dims: int) -> ActionAxes:
        """The action axes for a ``dims``-component action (ValueError if action_axes does not fit),
        parsed once per action size and limits (max_speed_mps / max_angular_rps may change at run time)."""
        key = (dims, self.get_parameter("max_speed_mps").value, self.get_parameter("max_angular_rps").value)
        if key not in self._axes:
            self._axes[key] = ActionAxes.parse(self.action_axes, dims, max_speed_mps=key[1], max_angular_rps=key[2])
        return self._axes[key]

    def _command(self, action: np.ndarray) -> None:
        """cmd_vel (and gripper_cmd) from the action by its axes, each part clamped to its limit."""
        try:
            axes = self._axes_for(len(action))
        except ValueError as exc:   # a hot-swapped model of another action size: hold, count, report
            self._last_fault = str(exc)
            return self._hold("held_axes_mismatch")
        if axes.bound(action)[1]:
            self.counts["clamped"] += 1
        linear, angular, gripper = axes.to_command(action)
        self._publish_twist(linear, angular)
        if gripper is not None:
            self.gripper_pub.publish(Float64(data=gripper))

    def _hold(self, reason: str) -> None:
        self.counts[reason] += 1
        self._publish_twist()

    def _publish_twist(self, linear=(0.0, 0.0, 0.0), angular=(0.0, 0.0, 0.0)) -> None:
        self.cmd_pub.publish(twist_stamped(self, self.command_frame, linear, angular))

    # -- hot-swap triggers --------------------------------------------------------------------
    def _on_reload(self, request, response):
        if self.swapper is None:
            response.success, response.message = False, "not configured: no model loaded"
        elif self.swapper.watch_dir is None:
            response.success, response.message = False, "no watch_dir set: nothing to rescan (set model_dir to swap)"
        else:
            self.swapper.rescan()
            current = self.swapper.slot.current
            response.success = True
            response.message = f"rescanning {self.swapper.watch_dir}; current version {current.version}"
        return response

    def _check_params(self, params) -> SetParametersResult:
        for p in params:
            if p.name == "model_dir" and self.swapper is not None:
                if not (p.value and (Path(p.value) / MANIFEST_NAME).is_file()):
                    return SetParametersResult(successful=False,
                                               reason=f"{p.value!r} has no {MANIFEST_NAME}: not a model directory")
                try:
                    check_trusted(p.value, self._keys, self.model_root or None)
                except SignatureError as exc:
                    self.counts["model_dir_refused"] += 1
                    self.get_logger().warning(f"refused model_dir {p.value!r}: {exc}")
                    return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _apply_params(self, params) -> None:
        for p in params:
            if p.name == "model_dir" and self.swapper is not None:
                self.get_logger().info(f"model_dir set to {p.value}: loading it in the background")
                self.swapper.request(p.value)

    def _log(self, level: str, message: str) -> None:
        # One call site per severity: rclpy keys its logging state on the caller's line and raises
        # "Logger severity cannot be changed between calls" if one line logs at two severities.
        if level == "error":
            self.get_logger().error(message)
        elif level == "warning":
            self.get_logger().warning(message)
        else:
            self.get_logger().info(message)

    # -- diagnostics --------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        state = self._state
        values = self.stats.summary()
        values.update({"state": state, "episode": str(self._episode), "step": str(self._step),
                       "signature_check": f"{len(self._keys)} trusted keys" if self._keys else "off",
                       "model_root": self.model_root or "(any)"})
        if self.swapper is not None:
            values.update({k: str(v) for k, v in self.swapper.status().items()})
        if self._last_fault:
            values["last_fault"] = self._last_fault
        faults = sum(v for k, v in self.counts.items() if k.startswith("fault_"))
        refused = 0 if self.swapper is None else sum(self.swapper.counts[k] for k in ("rejected", "load_failed",
                                                                                      "scan_errors"))
        stale = self.counts["stale"] + self.counts["held_no_supervisor"]
        new_faults, new_stale = faults - self._reported[0], stale - self._reported[1]
        self._reported = (faults, stale, refused)
        if self.swapper is None:
            level, message = DiagnosticStatus.ERROR, self._last_fault or f"{state}: no model loaded"
        elif new_faults or new_stale:   # WARN while it is happening, OK again once it stops
            level, message = DiagnosticStatus.WARN, (f"{state}: {new_faults} faults, {new_stale} ticks held (stale frame "
                                                     f"or no supervisor) in the last second")
        elif refused or self.swapper.incomplete:   # WARN from the first refusal on: an operator must look
            level, message = DiagnosticStatus.WARN, (f"{state}: {refused} model versions refused ({self.swapper.last_error})"
                                                     if refused else f"{state}: incomplete version directories in watch_dir")
        else:
            level, message = DiagnosticStatus.OK, state
        self.diag_pub.publish(diagnostic_array(self, "policy", level, message, values))


def main(argv: list[str] | None = None) -> int:
    return spin_node(PolicyNode, argv)


if __name__ == "__main__":
    raise SystemExit(main())
