"""Small rclpy helpers shared by the nodes: parameter declaration with descriptors, diagnostics, main()."""
from __future__ import annotations

import sys
from typing import Any, Callable

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor


def declare(node, name: str, default: Any, description: str, *, lo=None, hi=None, read_only: bool = False):
    """Declare a parameter with a descriptor (and a range for numbers); return its value."""
    desc = ParameterDescriptor(description=description, read_only=read_only)
    if lo is not None and hi is not None:
        if isinstance(default, bool):
            raise TypeError("no range for bool parameters")
        if isinstance(default, int):
            desc.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
        else:
            desc.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

    try:
        return node.declare_parameter(name, default, desc).value
    except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
        # a wrong type or an out-of-range value in the YAML / on the command line: one clear line
        # and exit status 2 (spin_node), not a traceback
        kind = type(default).__name__ if default != "" else "str"
        raise StartupError(f"parameter {name!r}: {exc} (expected a {kind}"
                           f"{f' in [{lo}, {hi}]' if lo is not None else ''}; {description})") from None


def diagnostic_array(node, name: str, level: bytes, message: str, values: dict[str, str]) -> DiagnosticArray:
    """One DiagnosticStatus named ``<namespace>/<node>: name`` in a DiagnosticArray."""
    arr = DiagnosticArray()
    arr.header.stamp = node.get_clock().now().to_msg()
    status = DiagnosticStatus(level=level,  # DiagnosticStatus.OK / WARN / ERROR (bytes)
                              name=f"{node.get_fully_qualified_name()}: {name}",
                              message=message, hardware_id=node.get_namespace().strip("/") or "efm_ros")
    status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
    arr.status = [status]
    return arr


class StartupError(RuntimeError):
    """A node that cannot do its job from the start (e.g. no loadable model): ``spin_node`` logs
    it and exits with status 2, so a supervisor (launch ``respawn``, systemd, ``efm-ros up``) sees it."""


def spin_node(make_node: Callable[[], Any], argv: list[str] | None = None) -> int:
    """Standard main(): init, spin until Ctrl-C / SIGTERM, clean teardown.

    argv: the node's arguments (``--ros-args ...``) without the program name; None = sys.argv.

    rclpy's own signal handler would shut the context down before ``close()`` runs (so a node
    could not, say, send its final zero velocity or commit its bag); instead SIGINT and SIGTERM
    raise KeyboardInterrupt here and the context stays valid until the node has closed.
    """
    import signal

    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.signals import SignalHandlerOptions

    def _interrupt(signum, frame):
        raise KeyboardInterrupt

    # set SIGINT explicitly too: a process started from a background shell inherits SIGINT ignored,
    # and `ros2 launch` / `efm-ros up` stop nodes with SIGINT
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    args = sys.argv if argv is None else [sys.argv[0], *argv]
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    rc = 0
    try:
        node = make_node()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except StartupError as exc:
        print(f"[{make_node.__name__}] cannot start: {exc}", file=sys.stderr, flush=True)
        rc = 2
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            if close is not None:
                close()
            node.destroy_node()
        rclpy.try_shutdown()
    return rc


def recorder_subscribed(node, recorder: str, topics) -> bool:
    """True when the node named ``recorder`` in ``node``'s namespace subscribes to every topic of
    ``topics`` (fully qualified names): the episode recorder is there before an episode starts."""
    ns = node.get_namespace()
    return all(any(i.node_name == recorder and i.node_namespace == ns for i in node.get_subscriptions_info_by_topic(t))
               for t in topics)


def twist_stamped(node, frame_id: str, linear=(0.0, 0.0, 0.0), angular=(0.0, 0.0, 0.0)):
    """A geometry_msgs/TwistStamped stamped now (a zero twist = hold still)."""
    from geometry_msgs.msg import TwistStamped

    msg = TwistStamped()
    msg.header.stamp = node.get_clock().now().to_msg()
    msg.header.frame_id = frame_id
    t = msg.twist
    t.linear.x, t.linear.y, t.linear.z = (float(v) for v in linear)
    t.angular.x, t.angular.y, t.angular.z = (float(v) for v in angular)
    return msg


class ResetCall:
    """The robot's ``reset`` (std_srvs/Trigger) called with a deadline, polled from a timer: the
    steps_to_go node (after every episode) and the teleop node (before a recorded one) share it.
    A node never blocks on a robot that does not answer."""

    def __init__(self, node, timeout_s: float, service: str = "reset"):
        from std_srvs.srv import Trigger

        self._trigger = Trigger
        self.client = node.create_client(Trigger, service)
        self.timeout_s = float(timeout_s)
        self._future = None
        self._deadline = 0.0

    @property
    def pending(self) -> bool:
        return self._future is not None

    def ready(self) -> bool:
        return self.client.service_is_ready()

    def call(self) -> None:
        import time

        self._future = self.client.call_async(self._trigger.Request())
        self._deadline = time.monotonic() + self.timeout_s

    def poll(self) -> tuple[bool, str] | None:
        """None while no call is pending or its answer is still awaited; else (succeeded, why not)."""
        import time

        fut = self._future
        if fut is None:
            return None
        if fut.done():
            self._future = None
            res = fut.result()
            if res is not None and res.success:
                return True, ""
            return False, f"the robot refused the reset: {res.message if res else 'no response'}"
        if time.monotonic() > self._deadline:
            self.client.remove_pending_request(fut)
            self._future = None
            return False, f"no answer within {self.timeout_s:g} s"
        return None
