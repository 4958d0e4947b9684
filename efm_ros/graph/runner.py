"""``efm-ros up``: run the graph of :mod:`efm_ros.graph.description` without ``ros2 launch``.

    efm-ros up --robots 2 --model models/efm_sft --episodes-dir episodes   # one process a node (default)
    efm-ros up --robots 2 --processes one ...                              # all nodes in one process

Every node gets exactly the ROS arguments the launch file gives it (NodeSpec.ros_arguments):
the same params file, overrides, namespace and remappings. In one process the nodes share a
MultiThreadedExecutor (rclpy has no intra-process shortcut, but no extra DDS participants or
interpreters either); ``per-node`` starts the installed executables lib/efm_ros/<node> with
``--ros-args ...``, exactly as ros2 launch does (the same files: :func:`find_node_executable`).
The flags are the launch file's arguments (:func:`graph_arguments`), and both set the large-image
Fast DDS profile unless a transport is chosen. Ctrl-C / SIGTERM stops everything cleanly (loggers
close their bags); so does SIGINT when the runner was started as a background job of a script.
"""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from efm_ros.graph.description import LaunchPlan, NodeSpec, find_node_executable, graph_arguments, launch_plan


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="efm-ros up", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for a in graph_arguments():  # the launch file's arguments, the same names and defaults
        flag = "--" + a.name.replace("_", "-")
        if a.kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=a.default, help=a.help)
        else:
            p.add_argument(flag, type=a.kind, default=a.default, help=f"{a.help} (default: {a.default})")
    p.add_argument("--processes", choices=("one", "per-node"), default="per-node",
                   help="process layout: per-node (as ros2 launch; lowest latency: 8.6/12.8 ms p50/p99 camera->action "
                        "for 1 robot vs 22/346 ms in one process on 2 cores) or one (fewest processes)")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: run until Ctrl-C)")
    p.add_argument("--respawn", action=argparse.BooleanOptionalAction, default=True,
                   help="per-node: restart a node that exits, with back-off, and keep the others running "
                        "(as the launch file's respawn); --no-respawn stops the graph on the first exit")
    p.add_argument("--dry-run", action="store_true", help="print the nodes and their ROS arguments, start nothing")
    return p


def plan_from_args(args) -> LaunchPlan:
    return launch_plan({a.name: getattr(args, a.name) for a in graph_arguments()})


def node_class(spec: NodeSpec):
    module, _, name = spec.entry.partition(":")
    return getattr(importlib.import_module(module), name)


class InProcessGraph:
    """All nodes in this process on one MultiThreadedExecutor, spinning in a background thread."""

    def __init__(self, specs: list[NodeSpec], params_file: str | Path, context=None, threads: int | None = None):
        import rclpy
        from rclpy.executors import MultiThreadedExecutor

        self.context = context
        if context is None:
            rclpy.init(args=["--ros-args", "--disable-external-lib-logs"])
            self.context = rclpy.get_default_context()
        self.nodes = []
        try:
            for spec in specs:
                self.nodes.append(node_class(spec)(context=self.context, cli_args=spec.ros_arguments(params_file)))
        except Exception:
            self.close()
            raise
        self.executor = MultiThreadedExecutor(num_threads=threads or max(4, 2 * len(self.nodes)), context=self.context)
        for n in self.nodes:
            self.executor.add_node(n)
        self._thread = threading.Thread(target=self._spin, name="efm-ros-up", daemon=True)

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass

    def start(self) -> "InProcessGraph":
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop spinning, close the nodes (loggers commit their bags), destroy them, shut down."""
        ex = getattr(self, "executor", None)
        if ex is not None:
            ex.shutdown(timeout_sec=5.0)
            if self._thread.is_alive():
                self._thread.join(timeout=10.0)
        for n in reversed(self.nodes):
            close = getattr(n, "close", None)
            if close is not None:
                close()
            n.destroy_node()
        self.nodes = []
        if self.context is not None:
            self.context.try_shutdown()


def start_node_process(spec: NodeSpec, params_file: str | Path, env: dict | None = None, **popen) -> subprocess.Popen:
    """One node in its own process, as ros2 launch starts it: the installed lib/efm_ros/<executable>
    with the launch file's ``--ros-args ...``."""
    env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
    exe = find_node_executable(spec.executable)
    return subprocess.Popen([str(exe), *spec.ros_arguments(params_file)], env=env, **popen)


#: respawn back-off of a crashed node: first delay, factor, cap (s); it resets after RESPAWN_STABLE_S of life
RESPAWN_BACKOFF = (1.0, 2.0, 30.0)
RESPAWN_STABLE_S = 60.0


def run_per_node(specs: list[NodeSpec], params_file: str | Path, stop: threading.Event, duration: float,
                 respawn: bool = True) -> int:
    """One process per node until ``stop`` or ``duration``. A node that exits is reported and, with
    ``respawn`` (as launch's ``respawn=True``), started again after a back-off that doubles up to
    RESPAWN_BACKOFF's cap; the healthy nodes keep running. Without respawn any exit stops all."""
    procs = [start_node_process(spec, params_file) for spec in specs]
    started = [time.monotonic()] * len(specs)
    delay = [RESPAWN_BACKOFF[0]] * len(specs)
    due: dict[int, float] = {}                     # node index -> when to start it again
    respawns = [0] * len(specs)
    deadline = time.monotonic() + duration if duration > 0 else float("inf")
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            now = time.monotonic()
            for i, (s, p) in enumerate(zip(specs, procs)):
                if i in due or p.poll() is None:
                    continue
                if not respawn:
                    print(f"efm-ros up: {s.fqn} exited with {p.returncode}; stopping the graph", file=sys.stderr)
                    return 1
                if now - started[i] > RESPAWN_STABLE_S:
                    delay[i] = RESPAWN_BACKOFF[0]
                due[i] = now + delay[i]
                print(f"efm-ros up: {s.fqn} exited with {p.returncode}; restarting it in {delay[i]:g} s "
                      f"(restart {respawns[i] + 1})", file=sys.stderr, flush=True)
                delay[i] = min(delay[i] * RESPAWN_BACKOFF[1], RESPAWN_BACKOFF[2])
            for i, when in list(due.items()):
                if now >= when:
                    del due[i]
                    respawns[i] += 1
                    procs[i], started[i] = start_node_process(specs[i], params_file), time.monotonic()
            stop.wait(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        if any(respawns):
            print("efm-ros up: restarts " + ", ".join(f"{s.fqn} {n}" for s, n in zip(specs, respawns) if n),
                  file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    plan = plan_from_args(args)
    os.environ.update(plan.env)  # the large-image Fast DDS profile, for this process and its children
    specs, params_file = plan.specs, plan.params_file
    if args.dry_run:
        for s in specs:
            print(f"{s.fqn:28s} {s.executable:18s} {' '.join(s.ros_arguments(params_file))}")
        return 0
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if args.processes == "per-node":
        return run_per_node(specs, params_file, stop, args.duration, respawn=args.respawn)
    graph = InProcessGraph(specs, params_file).start()
    print(f"efm-ros up: {len(specs)} nodes for {args.robots} robot(s) in one process; Ctrl-C stops", flush=True)
    deadline = time.monotonic() + args.duration if args.duration > 0 else float("inf")
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            stop.wait(0.2)
    finally:
        graph.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
