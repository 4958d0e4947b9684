"""The self-improvement trainer on ROS: its iteration metrics on ``improve/metrics`` and ``/diagnostics``.

``efm-ros improve`` is an offline learner (it reads the fleet's episode bags), but people watch a
fleet with ROS tools: ``ros2 topic echo /improve/metrics``, PlotJuggler / rqt_plot on
``/improve/metrics/detector_success_rate``, rqt_robot_monitor on ``/diagnostics``. This node is the
trainer's ROS face; it publishes, it never decides anything.

* ``improve/metrics`` (``efm_ros/msg/ImprovementIteration``), reliable + transient local with a
  history of ``history_depth`` messages, so a subscriber that starts late still receives the recent
  iterations.
* ``/diagnostics``: the latest iteration's status, once a second like diagnostic_updater (OK; WARN when the detector success rate rises while the
  ground truth, where a simulator has one, does not: the over-optimisation the paper warns about).
* With ``efm-ros improve --coordinate`` (:meth:`ImproveMetricsPublisher.coordinate`), also the
  fleet coordinator's transport: commands on ``/fleet/command`` (``efm_ros/FleetCommand``,
  reliable + transient local, depth 1), the robots' answers from ``/fleet/status``
  (``efm_ros/FleetStatus``) into a :class:`efm_ros.control.coordinator.FleetCoordinator`, and a
  "fleet coordinator" entry on ``/diagnostics`` (WARN naming robots that stopped answering).
  What to do and when is the trainer's loop (``learn.improve.main``); this node carries it.

The node spins in a background thread (parameter and graph services stay responsive) while the
trainer's loop runs in the main thread.
"""
from __future__ import annotations

import math
import threading

ROW_FIELDS = ("detector_success_rate", "episode_length", "mean_reward", "mean_return", "policy_entropy", "loss",
              "gt_success_rate")
"""float32 fields of ImprovementIteration copied from the Improver's metrics row (NaN when absent)"""


def iteration_message(row: dict, *, version: str, reward_model_version: str, best: dict | None, stamp=None):
    """An ``ImprovementIteration`` from one row of ``Improver.history`` (see ``Improver.publish``)."""
    from efm_ros.msg import ImprovementIteration

    msg = ImprovementIteration()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = ""
    msg.iteration = int(row["iteration"])
    msg.version = version
    msg.trained_on_version = str(row.get("version_trained_on", ""))
    msg.reward_model_version = reward_model_version
    msg.episodes = int(row.get("episodes", 0))
    msg.transitions = int(row.get("transitions", 0))
    for name in ROW_FIELDS:
        value = row.get(name)
        setattr(msg, name, float(value) if value is not None else math.nan)
    msg.best_version = str((best or {}).get("version", ""))
    msg.best_measure = str((best or {}).get("measure", ""))
    return msg


def over_optimisation_warning(history: list[dict], window: int = 3) -> str | None:
    """A warning when, over the last ``window`` iterations, detector success rose but ground truth did not.

    Only possible in simulation (ground truth present); on a real robot it returns None.
    """
    rows = [r for r in history if "gt_success_rate" in r and "detector_success_rate" in r]
    if len(rows) < 2 * window:
        return None
    first, last = rows[-2 * window:-window], rows[-window:]
    mean = lambda rs, k: sum(r[k] for r in rs) / len(rs)  # noqa: E731
    d_det = mean(last, "detector_success_rate") - mean(first, "detector_success_rate")
    d_gt = mean(last, "gt_success_rate") - mean(first, "gt_success_rate")
    if d_det > 0.1 and d_gt <= 0.0:
        return (f"detector success +{d_det:.2f} over the last {window} iterations but ground truth {d_gt:+.2f}: "
                "the policy may be exploiting the reward model")
    return None


class ImproveMetricsPublisher:
    """Owns an rclpy context and a node ``improve`` that publishes the trainer's iterations."""

    def __init__(self, *, node_name: str = "improve", namespace: str = "/", history_depth: int = 100,
                 args: list[str] | None = None):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        from efm_ros.msg import ImprovementIteration

        from rclpy.signals import SignalHandlerOptions

        self._context = rclpy.Context()
        # the trainer owns SIGINT/SIGTERM (KeyboardInterrupt -> close()); rclpy's handler would only
        # shut this context down and leave the training loop running
        rclpy.init(args=args, context=self._context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(node_name, namespace=namespace, context=self._context)
        qos = QoSProfile(depth=history_depth, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._pub = self.node.create_publisher(ImprovementIteration, "improve/metrics", qos)
        self._diag = self.node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._status = ("OK", "waiting for the first iteration", {})
        self._lock = threading.Lock()
        self.node.create_timer(1.0, self._publish_diagnostics)
        self._executor = SingleThreadedExecutor(context=self._context)
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, name="improve-ros", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self._executor.spin()
        except ExternalShutdownException:
            pass

    def _publish_diagnostics(self) -> None:
        from diagnostic_msgs.msg import DiagnosticStatus

        from efm_ros.nodes.common import diagnostic_array

        with self._lock:
            level, message, values = self._status
            fleet = getattr(self, "_fleet_diag", None)
        level = DiagnosticStatus.WARN if level == "WARN" else DiagnosticStatus.OK
        self._diag.publish(diagnostic_array(self.node, "self-improvement", level, message, values))
        if fleet is not None:
            level = DiagnosticStatus.WARN if fleet[0] == "WARN" else DiagnosticStatus.OK
            self._diag.publish(diagnostic_array(self.node, "fleet coordinator", level, fleet[1], fleet[2]))

    def publish(self, row: dict, *, version: str, reward_model_version: str, best: dict | None,
                history: list[dict]) -> None:
        """Publish one iteration (called by the trainer's loop, thread-safe)."""
        stamp = self.node.get_clock().now().to_msg()
        self._pub.publish(iteration_message(row, version=version, reward_model_version=reward_model_version,
                                            best=best, stamp=stamp))
        warning = over_optimisation_warning(history)
        values = {"iteration": row["iteration"], "version": version, "best_version": (best or {}).get("version", ""),
                  **{k: f"{row[k]:.4g}" for k in ROW_FIELDS if k in row}}
        with self._lock:
            self._status = ("WARN" if warning else "OK", warning or f"iteration {row['iteration']} -> {version}",
                            {k: str(v) for k, v in values.items()})
        self._publish_diagnostics()

    def coordinate(self, coordinator, command_topic: str = "/fleet/command",
                   status_topic: str = "/fleet/status") -> None:
        """Carry ``coordinator``'s commands and the robots' status (see the module docstring)."""
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

        from efm_ros.msg import FleetCommand, FleetStatus

        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.coordinator = coordinator
        self._command_pub = self.node.create_publisher(FleetCommand, command_topic, latched)
        self._fleet_diag = ("OK", "no command yet", {})

        def on_status(msg: FleetStatus) -> None:
            import time as _time

            with self._lock:
                coordinator.on_status(msg.robot[:256], msg.seq, msg.paused, msg.policy_version[:256],
                                      msg.last_episode_id[:256], _time.monotonic())
        self.node.create_subscription(FleetStatus, status_topic, on_status, 50)

    def fleet(self):
        """The coordinator under the lock the status callback takes: ``with ros.fleet() as c: ...``."""
        import contextlib

        @contextlib.contextmanager
        def locked():
            with self._lock:
                yield self.coordinator
        return locked()

    def command(self, seq: int, command: int, version: str, *, values: dict | None = None, warn: str = "") -> None:
        """Publish one FleetCommand, and what the fleet is doing on /diagnostics."""
        from efm_ros.msg import FleetCommand

        msg = FleetCommand(seq=int(seq), command=int(command), version=version)
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self._command_pub.publish(msg)
        names = {FleetCommand.PAUSE: "PAUSE", FleetCommand.PAUSE_NOW: "PAUSE_NOW", FleetCommand.PRACTISE: "PRACTISE"}
        self.fleet_status(names.get(command, str(command)) + f" {seq}"
                          + (f" {version}" if version else ""), values=values, warn=warn)

    def fleet_status(self, message: str, *, values: dict | None = None, warn: str = "") -> None:
        with self._lock:
            self._fleet_diag = ("WARN" if warn else "OK", f"{message}: {warn}" if warn else message,
                                {k: str(v) for k, v in (values or {}).items()})

    def close(self) -> None:
        import rclpy

        self._executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self._context)
        self._thread.join(timeout=2.0)
