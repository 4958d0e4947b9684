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


def phase_delay(now_s: float, period_s: float, phase: float) -> float:
    """Seconds from ``now_s`` to the next instant t with t mod period = phase x period (0 <= phase < 1),
    on the clock whose time ``now_s`` is: ticks started there fall on that phase of a grid that every
    process reading the same clock shares. Never 0 (a timer needs a positive period): a tick due now
    waits one period."""
    if not 0.0 <= phase < 1.0 or not period_s > 0.0:
        raise ValueError(f"phase must be in [0, 1) and period > 0, got phase {phase}, period {period_s}")
    delay = (phase * period_s - now_s) % period_s
    return delay if delay > 1e-6 else period_s


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


#: the executor every node process spins (``EFM_ROS_EXECUTOR``): "events" (rclpy's EventsExecutor,
#: the default: its queue and timers are C++, docs/results.md "graph latency") or "single" (rclpy's
#: SingleThreadedExecutor, the wait-set executor of rclpy.spin)
EXECUTORS = ("events", "single")


def make_executor(kind: str | None = None, context=None, environ=None):
    """An executor of ``kind``, by default ``EFM_ROS_EXECUTOR``'s (default "events")."""
    import os

    if kind is None:
        kind = (os.environ if environ is None else environ).get("EFM_ROS_EXECUTOR", "events").strip().lower() or "events"
    if kind not in EXECUTORS:
        raise StartupError(f"EFM_ROS_EXECUTOR={kind!r}: expected one of {', '.join(EXECUTORS)}")
    if kind == "events":
        from rclpy.experimental import EventsExecutor

        return EventsExecutor(context=context)
    from rclpy.executors import SingleThreadedExecutor

    return SingleThreadedExecutor(context=context)


def executor_lanes(nodes, context=None) -> list[tuple[Any, list]]:
    """(executor, its nodes): one shared executor (:func:`make_executor`) for every node that can
    share it, and a wait-set executor of its own for each node class that sets ``EXECUTOR =
    "single"``. Such a node cannot use rclpy's EventsExecutor (Kilted): it fails with "SystemError:
    null argument to internal routine" on a subscription whose callback takes the MessageInfo,
    which the logger needs (receive stamps, publisher sequence numbers). Its own executor, not a
    shared wait-set one: the wait-set executor rebuilds its wait set over every entity it holds on
    each wake, and 8 loggers sharing one spent 90 % of a core doing that (docs/results.md, graph
    latency)."""
    shared = [n for n in nodes if getattr(n, "EXECUTOR", None) != "single"]
    lanes = [(make_executor(context=context), shared)] if shared else []
    return lanes + [(make_executor("single", context=context), [n])
                    for n in nodes if getattr(n, "EXECUTOR", None) == "single"]


def spin_node(make_node: Callable[[], Any], argv: list[str] | None = None) -> int:
    """Standard main(): init, spin until Ctrl-C / SIGTERM, clean teardown.

    argv: the node's arguments (``--ros-args ...``) without the program name; None = sys.argv."""
    args = sys.argv if argv is None else [sys.argv[0], *argv]
    return spin_nodes([make_node], args, name=make_node.__name__)


def spin_nodes(makers: list[Callable[[], Any]], init_args: list[str], name: str) -> int:
    """Init rclpy with ``init_args``, build every node, spin them (:func:`executor_lanes`: the first
    lane in this thread, any others in their own) until Ctrl-C / SIGTERM, then close and destroy
    them in reverse order. One node: :func:`spin_node`; several (each with its own ``cli_args``):
    one process per node type (efm_ros.graph.host). A callback that raises in any lane stops the
    process with that exception, as it would a one-node process (so a supervisor restarts it).

    rclpy's own signal handler would shut the context down before ``close()`` runs (so a node
    could not, say, send its final zero velocity or commit its bag); instead SIGINT and SIGTERM
    set a flag that the spin loop checks between callbacks (at least every 0.2 s), and the context
    stays valid until the nodes have closed. No exception is raised inside a callback.
    """
    import signal
    import threading

    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.signals import SignalHandlerOptions

    stop = threading.Event()

    # set SIGINT explicitly too: a process started from a background shell inherits SIGINT ignored,
    # and `ros2 launch` / `efm-ros up` stop nodes with SIGINT
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    rclpy.init(args=init_args, signal_handler_options=SignalHandlerOptions.NO)
    nodes, lanes, threads, errors = [], [], [], []
    rc = 0

    def spin(executor) -> None:
        # not spin(): the EventsExecutor waits in C++, where no signal handler runs
        try:
            while not stop.is_set():
                executor.spin_once(timeout_sec=0.2)
        except ExternalShutdownException:
            stop.set()
        except Exception as exc:  # noqa: BLE001 — re-raised in the main thread below
            errors.append(exc)
            stop.set()

    try:
        for make in makers:
            if stop.is_set():
                raise KeyboardInterrupt
            nodes.append(make())
        lanes = executor_lanes(nodes)
        for executor, members in lanes:
            for node in members:
                executor.add_node(node)
        threads = [threading.Thread(target=spin, args=(ex,), name=f"{name}-spin-{i}", daemon=True)
                   for i, (ex, _) in enumerate(lanes[1:], 1)]
        for t in threads:
            t.start()
        spin(lanes[0][0])
        for t in threads:
            t.join(timeout=5.0)
        if errors:
            raise errors[0]
    except KeyboardInterrupt:
        pass
    except StartupError as exc:
        print(f"[{name}] cannot start: {exc}", file=sys.stderr, flush=True)
        rc = 2
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5.0)
        for node in reversed(nodes):
            close = getattr(node, "close", None)
            if close is not None:
                close()
            for executor, members in lanes:
                if node in members:
                    executor.remove_node(node)
            node.destroy_node()
        for executor, _ in lanes:
            executor.shutdown(timeout_sec=1.0)
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
