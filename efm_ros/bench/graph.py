"""``efm-ros bench graph``: camera→action and camera→reward latency of the live graph, as one table.

    efm-ros bench graph --robots 1 4 8 --seconds 20 --processes per-type per-node --executors events single

For each layout × executor × fleet size it starts ``efm-ros up`` (one process per node type
serving every namespace, one process per node, or every node of every robot composed in one
process; the node processes spin on rclpy's EventsExecutor or its SingleThreadedExecutor) and,
from a separate observer process, subscribes to every robot's ``policy_action`` and ``steps_to_go``. Both carry the stamp of the camera frame they were
computed from, so receive time − header stamp = camera→action / camera→reward latency (including
the hop to the observer). Per row: start-up time (``up`` started → every robot's first action),
p50/p99 of both latencies over the fleet, the action rate achieved against 10 Hz per robot, the
graph's CPU use (all its processes, % of the machine), and p99 over the *floor*: one control
tick's inference alone (``OnnxEFM.act`` + ``steps_to_go``, batch 1, 96 px), measured in the same
run. One table at the end, in markdown.
"""
from __future__ import annotations

import argparse
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from efm_ros.graph.description import LAYOUTS
from efm_ros.nodes.common import EXECUTORS


def _observe(robots: int, seconds: float, warmup: float, startup_timeout: float, graph_pid: int) -> dict:
    """Latencies per (robot, kind) in the measured window, the start-up time and the graph's CPU
    seconds over the window."""
    import psutil
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from efm_ros.msg import PolicyAction, StepsToGo

    rclpy.init(args=["--ros-args", "--disable-external-lib-logs"])
    node = rclpy.create_node("bench_graph_observer")
    lat: dict[tuple[str, str], list[float]] = {}
    first: dict[str, float] = {}
    t0 = time.monotonic()
    window = [None, None]   # measured window (monotonic start, end), fixed once every robot acts

    def make_cb(robot: str, kind: str):
        def cb(msg):
            t = time.monotonic()
            if kind == "action":
                first.setdefault(robot, t)
            if window[0] is None or not window[0] <= t < window[1]:
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

    def cpu_seconds() -> float:
        total = 0.0
        try:
            procs = [psutil.Process(graph_pid), *psutil.Process(graph_pid).children(recursive=True)]
        except psutil.Error:
            return float("nan")
        for proc in procs:
            try:
                c = proc.cpu_times()
                total += c.user + c.system
            except psutil.Error:
                pass
        return total

    startup = cpu0 = cpu1 = None
    while True:
        ex.spin_once(timeout_sec=0.05)
        now = time.monotonic()
        if window[0] is None:
            if len(first) == robots:
                startup = max(first.values()) - t0
                window[:] = [now + warmup, now + warmup + seconds]
            elif now - t0 > startup_timeout:
                break
        elif cpu0 is None and now >= window[0]:
            cpu0 = (now, cpu_seconds())
        elif now >= window[1]:
            cpu1 = (now, cpu_seconds())
            break
    ex.shutdown()
    node.destroy_node()
    rclpy.shutdown()
    cpu = ((cpu1[1] - cpu0[1]) / (cpu1[0] - cpu0[0]) / os.cpu_count() * 100.0) if cpu0 and cpu1 else float("nan")
    return {"latency": lat, "startup_s": startup, "started": len(first), "cpu_percent": cpu}


def floor_ms(model: str, seconds: float = 3.0) -> np.ndarray:
    """One control tick's inference alone (both heads, batch 1, one ORT thread): the physical floor.
    Each tick sees a new frame and the previous tick's frame, as on the robot (so a model with split
    graphs runs its backbone once a tick: the memo holds fewer frames than the ring cycles through)."""
    from efm_ros.bench.model import latency_ms
    from efm_ros.model.runtime import FeatureMemo, load_model

    memo = FeatureMemo()
    m = load_model(model, intra_op_threads=1, memo=memo)
    rng = np.random.default_rng(0)
    size = m.image_size
    frames = rng.integers(0, 256, (2 * memo.capacity, size, size, 3), dtype=np.uint8)
    text = next(iter(m.instructions))
    tick = itertools.count()

    def one_tick():
        t = next(tick)
        frame, prev = frames[t % len(frames)], frames[(t - 1) % len(frames)]
        m.act(frame, prev, text, rng)
        m.steps_to_go(frame, prev, text)
    return latency_ms(one_tick, seconds)


def run(robots: int, seconds: float, model: str, processes: str, warmup: float, startup_timeout: float = 60.0,
        executor: str = "events") -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", EFM_ROS_EXECUTOR=executor)
    with tempfile.TemporaryDirectory() as tmp:
        graph = subprocess.Popen([sys.executable, "-m", "efm_ros.cli", "up", "--robots", str(robots), "--model", model,
                                  "--episodes-dir", str(Path(tmp) / "episodes"), "--processes", processes],
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            res = _observe(robots, seconds, warmup, startup_timeout, graph.pid)
        finally:
            t = time.monotonic()
            stop_graph(graph, signal.SIGINT)
            res["stop_s"] = time.monotonic() - t
    return res


def stop_graph(proc: subprocess.Popen, signum: int = signal.SIGTERM, timeout: float = 60.0) -> None:
    """Stop an ``efm-ros up`` subprocess the way a person would (its loggers close their bags), and
    kill it only if it has not exited within ``timeout`` s."""
    proc.send_signal(signum)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()


def _row(layout: str, robots: int, seconds: float, res: dict, floor_p99: float, startup_timeout: float) -> str:
    if res["startup_s"] is None:
        return (f"| {layout} | {robots} | not started: {res['started']} of {robots} robots acted within "
                f"{startup_timeout:g} s | | | | | | |")
    a = [x for (r, k), xs in res["latency"].items() if k == "action" for x in xs]
    w = [x for (r, k), xs in res["latency"].items() if k == "reward" for x in xs]
    pct = lambda xs: f"{np.percentile(xs, 50):.1f} / {np.percentile(xs, 99):.1f}" if xs else "none"  # noqa: E731
    ratio = f"{np.percentile(a, 99) / floor_p99:.1f}×" if a else "—"
    return (f"| {layout} | {robots} | {res['startup_s']:.1f} | {len(a) / seconds:.1f} of {10 * robots} | {pct(a)} | "
            f"{pct(w)} | {res['cpu_percent']:.0f} % | {ratio} | {res['stop_s']:.1f} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="efm-ros bench graph", description=__doc__.split("\n\n")[0])
    p.add_argument("--robots", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--seconds", type=float, default=20.0, help="measured time per row")
    p.add_argument("--warmup", type=float, default=5.0, help="time after every robot's first action, not measured")
    p.add_argument("--startup-timeout", type=float, default=60.0, help="a row whose robots do not all act by then is reported as not started")
    p.add_argument("--model", default="models/efm_sft")
    p.add_argument("--processes", choices=LAYOUTS, nargs="+", default=["per-type", "per-node"],
                   help="layouts to measure: one process per node type, one per node, all nodes composed in one")
    p.add_argument("--executors", choices=EXECUTORS, nargs="+", default=["events"],
                   help="the node processes' executor (EFM_ROS_EXECUTOR; the logger always spins a wait-set "
                        "executor of its own)")
    args = p.parse_args(argv)
    os.environ.setdefault("ROS_DOMAIN_ID", str(40 + os.getpid() % 50))
    floor = floor_ms(args.model)
    f50, f99 = np.percentile(floor, 50), np.percentile(floor, 99)
    print(f"efm-ros bench graph: 10 Hz sim robots, 96x96, {os.cpu_count()} CPUs, {args.seconds:g} s per row "
          f"(after {args.warmup:g} s warm-up); floor = one tick's inference alone: {f50:.1f} / {f99:.1f} ms p50 / p99",
          flush=True)
    lines = ["| layout | robots | start-up s | actions/s | camera→action p50 / p99 ms | camera→reward p50 / p99 ms "
             "| CPU (of the machine) | action p99 / floor p99 | stop s |", "|---|---|---|---|---|---|---|---|---|"]
    names = {"per-type": "one process per node type", "per-node": "one process per node",
             "per-robot": "one process per robot", "one": "one process"}
    for layout in args.processes:
        for executor in args.executors:
            for n in args.robots:
                res = run(n, args.seconds, args.model, layout, args.warmup, args.startup_timeout, executor)
                lines.append(_row(f"{names[layout]}, {executor}", n, args.seconds, res, f99, args.startup_timeout))
                print(lines[-1], flush=True)
    print("\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
