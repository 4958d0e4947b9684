"""``efm-ros up``: run the graph of :mod:`efm_ros.graph.description` without ``ros2 launch``.

    efm-ros up --robots 2 --model models/efm_sft --episodes-dir episodes   # one process a node (default)
    efm-ros up --robots 8 --processes per-type ...                         # one process per node type
    efm-ros up --robots 2 --processes one ...                              # all nodes in one process

Every node gets exactly the ROS arguments the launch file gives it (NodeSpec.ros_arguments):
the same params file, overrides, namespace and remappings, and the processes are the launch
file's (``processes``, :meth:`LaunchPlan.groups`): ``per-node`` starts the installed executables
lib/efm_ros/<node> with ``--ros-args ...``, exactly as ros2 launch does (the same files:
:func:`find_node_executable`); ``per-type`` and ``one`` start lib/efm_ros/host_node with several
nodes, each with its own ROS arguments (:mod:`efm_ros.graph.host`). The flags are the launch
file's arguments (:func:`graph_arguments`), and both set the large-image Fast DDS profile unless a
transport is chosen. Ctrl-C / SIGTERM stops everything cleanly (loggers close their bags); so does
SIGINT when the runner was started as a background job of a script.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from efm_ros.graph import host
from efm_ros.graph.description import HOST_EXECUTABLE, LAYOUTS, LaunchPlan, NodeSpec, find_node_executable, graph_arguments, launch_plan


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="efm-ros up", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for a in graph_arguments():  # the launch file's arguments, the same names and defaults
        flag = "--" + a.name.replace("_", "-")
        if a.kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=a.default, help=a.help)
        else:
            p.add_argument(flag, type=a.kind, default=a.default, help=f"{a.help} (default: {a.default})",
                           choices=LAYOUTS if a.name == "processes" else None)
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: run until Ctrl-C)")
    p.add_argument("--respawn", action=argparse.BooleanOptionalAction, default=True,
                   help="per-node: restart a node that exits, with back-off, and keep the others running "
                        "(as the launch file's respawn); --no-respawn stops the graph on the first exit")
    p.add_argument("--dry-run", action="store_true", help="print the nodes and their ROS arguments, start nothing")
    return p


def plan_from_args(args) -> LaunchPlan:
    return launch_plan({a.name: getattr(args, a.name) for a in graph_arguments()})


def node_argv(spec: NodeSpec, params_file: str | Path) -> list[str]:
    """One node's command line, as ros2 launch builds it: the installed lib/efm_ros/<executable> with
    the launch file's ``--ros-args ...``."""
    return [str(find_node_executable(spec.executable)), *spec.ros_arguments(params_file)]


def start_node_process(spec: NodeSpec, params_file: str | Path, env: dict | None = None, **popen) -> subprocess.Popen:
    """One node in its own process (:func:`node_argv`)."""
    return _start(node_argv(spec, params_file), env, **popen)


def _start(argv: list[str], env: dict | None = None, **popen) -> subprocess.Popen:
    env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
    return subprocess.Popen(argv, env=env, **popen)


@dataclass(frozen=True)
class NodeProcess:
    """One process of a layout: a label for messages and its command line."""

    label: str
    argv: list[str]


def node_processes(plan: LaunchPlan) -> list[NodeProcess]:
    """The processes of the plan's layout (:meth:`LaunchPlan.groups`): a node alone runs its installed
    executable, as ros2 launch; several run in one host_node (:mod:`efm_ros.graph.host`)."""
    out = []
    for group in plan.groups():
        if plan.processes == "per-node":
            out.append(NodeProcess(group[0].fqn, node_argv(group[0], plan.params_file)))
        else:
            label = {"per-type": f"{group[0].executable} x{len(group)}",
                     "per-robot": f"{group[0].namespace or '/'}: {len(group)} nodes"}.get(plan.processes,
                                                                                    f"all {len(group)} nodes")
            out.append(NodeProcess(label, [str(find_node_executable(HOST_EXECUTABLE)),
                                           *host.host_arguments(group, plan.params_file)]))
    return out


#: respawn back-off of a crashed node: first delay, factor, cap (s); it resets after RESPAWN_STABLE_S of life
RESPAWN_BACKOFF = (1.0, 2.0, 30.0)
RESPAWN_STABLE_S = 60.0


def run_processes(specs: list[NodeProcess], stop: threading.Event, duration: float, respawn: bool = True) -> int:
    """The layout's processes until ``stop`` or ``duration``. A process that exits is reported and,
    with ``respawn`` (as launch's ``respawn=True``), started again after a back-off that doubles up
    to RESPAWN_BACKOFF's cap; the healthy ones keep running. Without respawn any exit stops all."""
    procs = [_start(spec.argv) for spec in specs]
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
                    print(f"efm-ros up: {s.label} exited with {p.returncode}; stopping the graph", file=sys.stderr)
                    return 1
                if now - started[i] > RESPAWN_STABLE_S:
                    delay[i] = RESPAWN_BACKOFF[0]
                due[i] = now + delay[i]
                print(f"efm-ros up: {s.label} exited with {p.returncode}; restarting it in {delay[i]:g} s "
                      f"(restart {respawns[i] + 1})", file=sys.stderr, flush=True)
                delay[i] = min(delay[i] * RESPAWN_BACKOFF[1], RESPAWN_BACKOFF[2])
            for i, when in list(due.items()):
                if now >= when:
                    del due[i]
                    respawns[i] += 1
                    procs[i], started[i] = _start(specs[i].argv), time.monotonic()
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
            print("efm-ros up: restarts " + ", ".join(f"{s.label} {n}" for s, n in zip(specs, respawns) if n),
                  file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        plan = plan_from_args(args)
    except ValueError as exc:
        print(f"efm-ros up: {exc}", file=sys.stderr)
        return 2
    os.environ.update(plan.env)  # the large-image Fast DDS profile, for this process and its children
    if args.dry_run:
        for s in plan.specs:
            print(f"{s.fqn:28s} {s.executable:18s} {' '.join(s.ros_arguments(plan.params_file))}")
        return 0
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    procs = node_processes(plan)
    print(f"efm-ros up: {len(plan.specs)} nodes for {args.robots} robot(s) in {len(procs)} process(es) "
          f"({plan.processes}); Ctrl-C stops", flush=True)
    return run_processes(procs, stop, args.duration, respawn=args.respawn)


if __name__ == "__main__":
    raise SystemExit(main())
