"""``efm-ros up``: run the graph of :mod:`efm_ros.graph.description` without ``ros2 launch``.

    efm-ros up --robots 2 --model models/efm_sft --episodes-dir episodes   # one process a node (default)
    efm-ros up --robots 2 --processes one ...                              # all nodes in one process

Every node gets exactly the ROS arguments the launch file gives it (NodeSpec.ros_arguments):
the same params file, overrides, namespace and remappings. In one process the nodes share a
MultiThreadedExecutor (rclpy has no intra-process shortcut, but no extra DDS participants or
interpreters either); ``per-node`` starts ``python -m <node module> --ros-args ...`` children,
as ros2 launch would. Ctrl-C / SIGTERM stops everything cleanly (loggers close their bags).
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

from efm_ros.graph.description import NodeSpec, default_params_file, describe_graph


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="efm-ros up", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--robots", type=int, default=1, help="number of robots (namespaces /robot_0..)")
    p.add_argument("--first-robot", type=int, default=0, help="index of the first robot namespace")
    p.add_argument("--sim", action=argparse.BooleanOptionalAction, default=True, help="embedded simulator per robot")
    p.add_argument("--model", default="models/efm_sft", help="exported policy directory")
    p.add_argument("--reward-model", default=None, help="frozen Stage-1 model directory (default: --model)")
    p.add_argument("--episodes-dir", default="episodes", help="where the loggers write episode bags")
    p.add_argument("--params-file", default=None, help="parameters YAML (default: config/efm_ros.yaml)")
    p.add_argument("--seed", type=int, default=0, help="base seed")
    p.add_argument("--watch-dir", default=None, help="policy versions directory to hot-swap from (trainer's versions/)")
    p.add_argument("--processes", choices=("one", "per-node"), default="per-node",
                   help="process layout: per-node (as ros2 launch; lowest latency: 8.6/12.8 ms p50/p99 camera->action "
                        "for 1 robot vs 22/346 ms in one process on 2 cores) or one (fewest processes)")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: run until Ctrl-C)")
    p.add_argument("--dry-run", action="store_true", help="print the nodes and their ROS arguments, start nothing")
    return p


def specs_from_args(args) -> list[NodeSpec]:
    return describe_graph(robots=args.robots, sim=args.sim, model=args.model, reward_model=args.reward_model,
                          episodes_dir=args.episodes_dir, seed=args.seed, first_robot=args.first_robot,
                          watch_dir=args.watch_dir)


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
    """One node in its own process, as ros2 launch starts it: ``python -m <module> --ros-args ...``."""
    env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
    module = spec.entry.partition(":")[0]
    return subprocess.Popen([sys.executable, "-m", module, *spec.ros_arguments(params_file)], env=env, **popen)


def run_per_node(specs: list[NodeSpec], params_file: str | Path, stop: threading.Event, duration: float) -> int:
    procs = [start_node_process(spec, params_file) for spec in specs]
    deadline = time.monotonic() + duration if duration > 0 else float("inf")
    rc = 0
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            dead = [(s, p.returncode) for s, p in zip(specs, procs) if p.poll() is not None]
            if dead:
                for s, code in dead:
                    print(f"efm-ros up: {s.fqn} exited with {code}", file=sys.stderr)
                rc = 1
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
    return rc


def use_large_image_transport(params_file: str | Path) -> None:
    """Camera frames over 512 KB need a bigger Fast DDS shared-memory segment (config/fastdds_shm_big.xml);
    set it for this process and its children unless the user chose a transport themselves."""
    if "FASTDDS_DEFAULT_PROFILES_FILE" in os.environ or "FASTDDS_BUILTIN_TRANSPORTS" in os.environ:
        return
    profile = Path(params_file).with_name("fastdds_shm_big.xml")
    if profile.exists():
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    params_file = args.params_file or str(default_params_file())
    use_large_image_transport(default_params_file())
    specs = specs_from_args(args)
    if args.dry_run:
        for s in specs:
            print(f"{s.fqn:28s} {s.executable:18s} {' '.join(s.ros_arguments(params_file))}")
        return 0
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if args.processes == "per-node":
        return run_per_node(specs, params_file, stop, args.duration)
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
