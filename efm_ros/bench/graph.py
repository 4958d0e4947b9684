"""``efm-ros bench graph``: camera→action and camera→reward latency of the live graph, per robot.

    efm-ros bench graph --robots 1 4 8 --seconds 20 --model models/efm_sft

For each fleet size it starts ``efm-ros up`` (all nodes of all robots composed in one process, or
``--processes per-node``) and, from a separate observer process, subscribes to every robot's
``policy_action`` and ``steps_to_go``. Both carry the stamp of the camera frame they were computed
from, so receive time − header stamp = camera→action / camera→reward latency (including the hop
to the observer). Prints p50/p99 per robot and over the fleet, plus the rate achieved.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _observe(robots: int, seconds: float, warmup: float) -> dict:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from efm_ros.msg import PolicyAction, StepsToGo

    rclpy.init(args=["--ros-args", "--disable-external-lib-logs"])
    node = rclpy.create_node("bench_graph_observer")
    lat: dict[tuple[str, str], list[float]] = {}
    t_start = time.monotonic() + warmup

    def make_cb(robot: str, kind: str):
        def cb(msg):
            if time.monotonic() < t_start:
                return
            now = node.get_clock().now().nanoseconds
            stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            lat.setdefault((robot, kind), []).append((now - stamp) / 1e6)
        return cb

    for k in range(robots):
        node.create_subscription(PolicyAction, f"/robot_{k}/policy_action", make_cb(f"robot_{k}", "action"), 50)
        node.create_subscription(StepsToGo, f"/robot_{k}/steps_to_go", make_cb(f"robot_{k}", "reward"), 50)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    end = t_start + seconds
    while time.monotonic() < end:
        ex.spin_once(timeout_sec=0.05)
    ex.shutdown()
    node.destroy_node()
    rclpy.shutdown()
    return lat


def run(robots: int, seconds: float, model: str, processes: str, warmup: float) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    with tempfile.TemporaryDirectory() as tmp:
        graph = subprocess.Popen([sys.executable, "-m", "efm_ros.cli", "up", "--robots", str(robots), "--model", model,
                                  "--episodes-dir", str(Path(tmp) / "episodes"), "--processes", processes],
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            lat = _observe(robots, seconds, warmup)
        finally:
            stop_graph(graph, signal.SIGINT)
    return lat


def stop_graph(proc: subprocess.Popen, signum: int = signal.SIGTERM, timeout: float = 60.0) -> None:
    """Stop an ``efm-ros up`` subprocess the way a person would (its loggers close their bags), and
    kill it only if it has not exited within ``timeout`` s."""
    proc.send_signal(signum)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="efm-ros bench graph", description=__doc__.split("\n\n")[0])
    p.add_argument("--robots", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--seconds", type=float, default=20.0, help="measured time per fleet size")
    p.add_argument("--warmup", type=float, default=8.0, help="start-up time not measured")
    p.add_argument("--model", default="models/efm_sft")
    p.add_argument("--processes", choices=("one", "per-node"), default="one")
    args = p.parse_args(argv)
    os.environ.setdefault("ROS_DOMAIN_ID", str(40 + os.getpid() % 50))
    print(f"efm-ros bench graph: {args.processes} process layout, 10 Hz sim robots, 96x96, {os.cpu_count()} CPUs, "
          f"{args.seconds:g} s per row (after {args.warmup:g} s start-up)")
    print(f"{'robots':>6} {'robot':>9} {'actions/s':>9} {'cam->action p50/p99 ms':>23} {'cam->reward p50/p99 ms':>23}")
    for n in args.robots:
        lat = run(n, args.seconds, args.model, args.processes, args.warmup)
        allr = {"action": [], "reward": []}
        for k in range(n):
            r = f"robot_{k}"
            a, w = lat.get((r, "action"), []), lat.get((r, "reward"), [])
            allr["action"] += a
            allr["reward"] += w
            fmt = lambda xs: f"{np.percentile(xs, 50):8.1f} / {np.percentile(xs, 99):7.1f}" if xs else f"{'none':>18}"  # noqa: E731
            print(f"{n:6d} {r:>9} {len(a) / args.seconds:9.1f} {fmt(a):>23} {fmt(w):>23}")
        fmt = lambda xs: f"{np.percentile(xs, 50):8.1f} / {np.percentile(xs, 99):7.1f}" if xs else f"{'none':>18}"  # noqa: E731
        print(f"{n:6d} {'fleet':>9} {len(allr['action']) / args.seconds:9.1f} {fmt(allr['action']):>23} {fmt(allr['reward']):>23}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
