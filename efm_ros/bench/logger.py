"""Benchmark: episode logger under camera load — N robots x 30 Hz x 640x480 rgb8, one bag each.

How to::

    efm-ros bench logger                                 # 4 robots, 30 Hz, VGA, 10 s, both layouts
    python -m efm_ros.bench.logger --robots 2 --seconds 5 --layout processes
    efm-ros bench logger --transport large_data --image-qos reliable

Per robot one publisher process (namespace ``/bench_<k>``) sends ``camera/image`` (sensor-data
QoS, as the camera node does, or reliable) and a small ``policy_action`` per tick, between a
START and a SUCCESS ``episode_event``. Loggers run either one process per robot
(``processes``, what the launch file does) or all in one process on a MultiThreadedExecutor
(``one-process``, what the in-process runner does).

Transport (``--transport``): a 921.6 KB VGA frame does not fit Fast DDS's default 512 KiB
shared-memory segment. ``shm`` (default) gives every process the XML profile of
notes/ros-from-pip.md §3.2 (16 MiB segment): frames travel by shared memory. ``large_data``
sets ``FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA``, whose shared-memory segment is still 512 KiB,
so frames go over loopback TCP; measured here (2 shared cores): best-effort frames are mostly
lost, and reliable ones lag by up to seconds behind the episode events, so the tail of an episode
reaches the logger after its terminal event (counted as ``outside``, not in the bag).

Reported per robot: published vs recorded frames and actions (from each bag's metadata.yaml),
what the logger itself detected (``lost``: publisher sequence gaps, ``qdrop``: write-queue drops,
``outside``: received between episodes), publisher ticks that were late; overall: write
throughput (bag bytes / publishing time), how long after its last frame each bag was committed,
CPU of the loggers and publishers (% of one core) and of the whole machine. Exit status 1 when a
frame is missing from a bag.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EPISODE_SUFFIX = "_bench"


# ------------------------------------------------------------------------------ child: publisher
def publish(robot: str, rate_hz: float, seconds: float, height: int, width: int, image_qos: str) -> int:
    """One robot's publisher: READY once the logger subscribed, waits for GO on stdin, then streams."""
    import numpy as np
    import rclpy
    from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from efm_ros.msg import EpisodeEvent, PolicyAction
    from efm_ros.nodes.images import numpy_to_image

    rclpy.init(args=["--ros-args", "--disable-external-lib-logs"])
    node = rclpy.create_node("bench_publisher", namespace=f"/{robot}")
    events_qos = QoSProfile(depth=20, reliability=QoSReliabilityPolicy.RELIABLE,
                            durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)  # as the steps-to-go node
    image_pub = node.create_publisher(Image, "camera/image",
                                      qos_profile_sensor_data if image_qos == "sensor" else 10)
    action_pub = node.create_publisher(PolicyAction, "policy_action", 10)
    event_pub = node.create_publisher(EpisodeEvent, "episode_event", events_qos)
    rng = np.random.default_rng(sum(robot.encode()))  # a fixed pool per robot name
    pool = [numpy_to_image(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)) for _ in range(4)]
    deadline = time.monotonic() + 120
    while not all(p.get_subscription_count() for p in (image_pub, action_pub, event_pub)):
        if time.monotonic() > deadline:
            print(json.dumps({"error": f"{robot}: no logger subscribed within 120 s"}), flush=True)
            return 1
        time.sleep(0.05)
    print("READY", flush=True)
    sys.stdin.readline()  # GO

    episode_id = robot + EPISODE_SUFFIX

    def event(kind: int, **fields) -> None:
        msg = EpisodeEvent(robot=robot, episode_id=episode_id, event=kind, **fields)
        msg.header.stamp = node.get_clock().now().to_msg()
        event_pub.publish(msg)

    cpu0, n = time.process_time(), int(round(rate_hz * seconds))
    event(EpisodeEvent.START, instruction="benchmark", policy_version="bench")
    t0, late = time.monotonic(), 0
    for i in range(n):
        due = t0 + i / rate_hz
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -0.5 / rate_hz:
            late += 1
        stamp = node.get_clock().now().to_msg()
        frame = pool[i % len(pool)]
        frame.header.stamp = stamp
        image_pub.publish(frame)
        action = PolicyAction(episode_id=episode_id, step=i, action=[0.1, -0.1], tokens=[3, 4], log_prob=-1.0,
                              model_version="bench")
        action.header.stamp = stamp
        action_pub.publish(action)
    wall = time.monotonic() - t0
    cpu = time.process_time() - cpu0
    time.sleep(0.3)
    event(EpisodeEvent.SUCCESS, outcome=EpisodeEvent.OUTCOME_SUCCESS, termination_reason="benchmark done", steps=n,
          policy_version="bench")
    for pub in (event_pub, action_pub):
        pub.wait_for_all_acked(rclpy.duration.Duration(seconds=10))
    print(json.dumps({"robot": robot, "frames": n, "actions": n, "late": late, "wall_s": wall, "cpu_s": cpu}),
          flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


# --------------------------------------------------------------------------- child: logger host
def host_loggers(robots: list[str], episodes_dir: str) -> int:
    """All loggers in this process, one MultiThreadedExecutor; stops on SIGTERM/SIGINT."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
    from rclpy.parameter import Parameter

    from efm_ros.nodes.logger import LoggerNode

    rclpy.init(args=["--ros-args", "--disable-external-lib-logs"])
    nodes = [LoggerNode(namespace=f"/{r}", parameter_overrides=[
        Parameter("episodes_dir", value=episodes_dir), Parameter("min_free_mb", value=0.0)]) for r in robots]
    executor = MultiThreadedExecutor(num_threads=len(nodes))
    for n in nodes:
        executor.add_node(n)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        for n in nodes:
            n.destroy_node()  # closes its bag writer first
        rclpy.try_shutdown()
    return 0


# ----------------------------------------------------------------------------------- the bench
SHM_PROFILE = """<?xml version="1.0"?>
<dds xmlns="http://www.eprosima.com"><profiles>
  <transport_descriptors>
    <transport_descriptor><transport_id>shm_big</transport_id><type>SHM</type>
      <segment_size>16777216</segment_size></transport_descriptor>
    <transport_descriptor><transport_id>udp_big</transport_id><type>UDPv4</type>
      <sendBufferSize>4194304</sendBufferSize><receiveBufferSize>4194304</receiveBufferSize></transport_descriptor>
  </transport_descriptors>
  <participant profile_name="default_participant" is_default_profile="true"><rtps>
    <userTransports><transport_id>shm_big</transport_id><transport_id>udp_big</transport_id></userTransports>
    <useBuiltinTransports>false</useBuiltinTransports>
  </rtps></participant>
</profiles></dds>
"""
"""Fast DDS profile of notes/ros-from-pip.md §3.2: a 16 MiB shared-memory segment holds VGA frames"""


def _env(transport: str, root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(120, 200)))
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.pop("FASTDDS_BUILTIN_TRANSPORTS", None)
    env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    if transport == "large_data":
        env["FASTDDS_BUILTIN_TRANSPORTS"] = "LARGE_DATA"
    else:
        profile = root / "fastdds_shm_big.xml"
        profile.write_text(SHM_PROFILE)
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _readline(proc: subprocess.Popen, timeout: float) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else ""


def _cpu_s(procs) -> float:
    import psutil

    total = 0.0
    for p in procs:
        try:
            t = psutil.Process(p.pid).cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            pass
    return total


def _busy(t) -> float:
    """Non-idle CPU seconds of a psutil.cpu_times() sample."""
    return t.user + t.nice + t.system + t.irq + t.softirq + t.steal


def run_layout(layout: str, args, env: dict[str, str], root: Path) -> dict:
    import psutil

    from efm_ros.data import read_metadata

    robots = [f"bench_{k}" for k in range(args.robots)]
    out = Path(tempfile.mkdtemp(prefix=f"logger_{layout}_", dir=root))
    py = sys.executable
    if layout == "processes":
        loggers = [subprocess.Popen(
            [py, "-m", "efm_ros.cli", "logger", "--ros-args", "-r", f"__ns:=/{r}", "-p", f"episodes_dir:={out}",
             "-p", "min_free_mb:=0.0", "--disable-external-lib-logs"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in robots]
    else:
        loggers = [subprocess.Popen([py, "-m", "efm_ros.bench.logger", "--host-loggers", ",".join(robots),
                                     "--episodes-dir", str(out)],
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)]
    pubs = [subprocess.Popen([py, "-m", "efm_ros.bench.logger", "--publish", r, "--rate", str(args.rate),
                              "--seconds", str(args.seconds), "--height", str(args.height), "--width", str(args.width),
                              "--image-qos", args.image_qos],
                             env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for r in robots]
    try:
        for p in pubs:
            line = _readline(p, 180)
            if line.strip() != "READY":
                raise RuntimeError(f"publisher not ready: {line!r}")
        time.sleep(1.0)  # let every logger finish discovering (it subscribes topic by topic)
        cpu_log0, cpu_pub0, sys0 = _cpu_s(loggers), _cpu_s(pubs), psutil.cpu_times()
        t_go = time.monotonic()
        for p in pubs:
            p.stdin.write("GO\n")
            p.stdin.flush()
        done: dict[int, dict] = {}  # publisher pid -> its report
        committed: dict[str, float] = {}  # robot -> when its bag appeared
        deadline = t_go + args.seconds + 300
        while (len(done) < len(pubs) or len(committed) < len(robots)) and time.monotonic() < deadline:
            for p in pubs:
                line = "" if p.pid in done else _readline(p, 0)
                if line:
                    done[p.pid] = json.loads(line)
            for r in robots:
                if r not in committed and (out / (r + EPISODE_SUFFIX) / "metadata.yaml").is_file():
                    committed[r] = time.monotonic()
            time.sleep(0.02)
        t_committed = max(committed.values(), default=time.monotonic())
        if len(done) < len(pubs):
            raise RuntimeError(f"only {len(done)} of {len(pubs)} publishers finished")
        results = sorted(done.values(), key=lambda r: r["robot"])
        cpu_log, cpu_pub = _cpu_s(loggers) - cpu_log0, _cpu_s(pubs) - cpu_pub0
        sys1 = psutil.cpu_times()
    finally:
        for p in loggers:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        logs = []
        for p in loggers:
            try:
                logs.append(p.communicate(timeout=60)[0])
            except subprocess.TimeoutExpired:
                p.kill()
                logs.append(p.communicate()[0])
        for p in pubs:
            if p.poll() is None:
                p.kill()
            p.wait()

    outside = {m.group(1): int(m.group(2)) for log in logs for m in re.finditer(
        r"\[(bench_\d+)\.logger\]: stopped: .*?(\d+) outside episodes", log)}
    rows, total_bytes = [], 0
    for res in results:
        bag = out / (res["robot"] + EPISODE_SUFFIX)
        row = {"robot": res["robot"], "published_frames": res["frames"], "published_actions": res["actions"],
               "late_ticks": res["late"], "publisher_cpu_s": res["cpu_s"], "outside": outside.get(res["robot"], -1)}
        if bag.is_dir():
            info = read_metadata(bag)
            counts = {t["topic_metadata"]["name"].rsplit("/", 1)[-1]: int(t["message_count"])
                      for t in info["topics_with_message_count"]}
            custom = info.get("custom_data") or {}
            size = sum(f.stat().st_size for f in bag.iterdir())
            total_bytes += size
            row.update(recorded_frames=counts.get("image", 0), recorded_actions=counts.get("policy_action", 0),
                       lost=int(custom.get("messages_lost", 0)), dropped=int(custom.get("messages_dropped", 0)),
                       bag_mb=size / 1e6)
        else:
            row.update(recorded_frames=0, recorded_actions=0, lost=-1, dropped=-1, bag_mb=0.0)
        rows.append(row)
    publish_s = max(r["wall_s"] for r in results)
    window = t_committed - t_go
    summary = {
        "layout": layout, "transport": args.transport, "image_qos": args.image_qos, "robots": args.robots,
        "rate_hz": args.rate, "image": f"{args.height}x{args.width}", "publish_s": publish_s,
        "commit_after_last_frame_s": max(committed.get(r["robot"], t_committed) - (t_go + r["wall_s"])
                                         for r in results),
        "bytes": total_bytes, "write_mb_s": total_bytes / 1e6 / publish_s,
        "logger_cpu_pct": 100 * cpu_log / window, "publisher_cpu_pct": 100 * cpu_pub / window,
        "machine_busy_pct": 100 * (_busy(sys1) - _busy(sys0)) / max(sum(sys1) - sum(sys0), 1e-9),
        "cores": os.cpu_count(),
        "logger_errors": [line for log in logs for line in log.splitlines() if "ERROR" in line][:5],
    }
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    return {"summary": summary, "robots": rows}


def format_result(result: dict) -> str:
    s = result["summary"]
    head = f"{'robot':>8} {'frames pub/rec':>15} {'actions pub/rec':>16} {'drops':>6} {'lost':>5} {'qdrop':>6} " \
           f"{'outside':>7} {'late':>5} {'bag MB':>8}"
    lines = [f"layout {s['layout']}: {s['robots']} robots x {s['rate_hz']:g} Hz x {s['image']} rgb8, "
             f"{s['publish_s']:.1f} s, transport {s['transport']}, image QoS {s['image_qos']}", head, "-" * len(head)]
    for r in result["robots"]:
        drops = r["published_frames"] - r["recorded_frames"] + r["published_actions"] - r["recorded_actions"]
        lines.append(f"{r['robot']:>8} {r['published_frames']:>7}/{r['recorded_frames']:<7} "
                     f"{r['published_actions']:>8}/{r['recorded_actions']:<7} {drops:>6} {r['lost']:>5} "
                     f"{r['dropped']:>6} {r['outside']:>7} {r['late_ticks']:>5} {r['bag_mb']:>8.1f}")
    lines.append(
        f"write {s['bytes'] / 1e6:.0f} MB at {s['write_mb_s']:.1f} MB/s; bags committed {s['commit_after_last_frame_s']:.1f} s "
        f"after the last frame; CPU (% of one core): loggers {s['logger_cpu_pct']:.0f}, publishers "
        f"{s['publisher_cpu_pct']:.0f}; machine busy {s['machine_busy_pct']:.0f}% of {s['cores']} cores")
    for e in s["logger_errors"]:
        lines.append(f"  logger error: {e}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="efm-ros bench logger", description=__doc__.split("\n\n")[0])
    p.add_argument("--robots", type=int, default=4)
    p.add_argument("--rate", type=float, default=30.0, help="frames per second per robot")
    p.add_argument("--seconds", type=float, default=10.0, help="publishing time per layout")
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--layout", choices=("processes", "one-process", "both"), default="both")
    p.add_argument("--transport", choices=("large_data", "shm"), default="shm",
                   help="large_data: FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA; shm: an XML profile with a 16 MiB "
                        "shared-memory segment (notes/ros-from-pip.md §3.2)")
    p.add_argument("--image-qos", choices=("sensor", "reliable"), default="sensor",
                   help="camera/image QoS of the publishers: sensor data (best effort, as the camera node) or reliable")
    p.add_argument("--out", default=None, help="where the bags go (default: a temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep the bags")
    p.add_argument("--json", action="store_true", help="also print the raw results as JSON")
    p.add_argument("--publish", help=argparse.SUPPRESS)
    p.add_argument("--host-loggers", help=argparse.SUPPRESS)
    p.add_argument("--episodes-dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.publish:
        return publish(args.publish, args.rate, args.seconds, args.height, args.width, args.image_qos)
    if args.host_loggers:
        return host_loggers(args.host_loggers.split(","), args.episodes_dir)

    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="efm_bench_logger_"))
    root.mkdir(parents=True, exist_ok=True)
    env = _env(args.transport, root)
    layouts = ("processes", "one-process") if args.layout == "both" else (args.layout,)
    results = []
    try:
        for layout in layouts:
            result = run_layout(layout, args, env, root)
            results.append(result)
            print(format_result(result), flush=True)
            print(flush=True)
    finally:
        if not args.out and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=1))
    ok = all(r["published_frames"] == r["recorded_frames"] for res in results for r in res["robots"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
