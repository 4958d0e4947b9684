"""``efm-ros bench soak``: run the live graph for minutes and print what a long run would show.

    efm-ros bench soak --minutes 5 --robots 1 --model models/efm_sft

Starts ``efm-ros up`` (one process per node, respawn on), samples every node process's resident
memory (RSS) every ``--sample-s`` seconds, stops the graph with SIGTERM, then reads every bag it
committed. Prints: episodes committed and how they ended; misaligned episodes (a bag that does not
read strictly: an action without its frame); messages lost or dropped (the logger's counters and
the reader's skipped messages); node restarts; and per node the RSS at the first sample after
warm-up, at the end, and the growth per minute (a leak shows as a steady positive slope).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np


def node_processes(up_pid: int) -> dict[str, int]:
    """The node processes of an ``efm-ros up`` (per-node layout), by fully qualified node name
    (``/robot_0/policy``), from their ROS arguments (``-r __node:=… -r __ns:=…``)."""
    import psutil

    out = {}
    for child in psutil.Process(up_pid).children(recursive=True):
        try:
            cmd = child.cmdline()
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:
            continue
        remaps = dict(a.split(":=", 1) for a in cmd if a.startswith(("__node:=", "__ns:=")))
        if "__node" in remaps:
            out[f"{remaps.get('__ns', '').rstrip('/')}/{remaps['__node']}"] = child.pid
    return out


def _rss_mb(pid: int) -> float:
    import psutil

    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.Error:
        return float("nan")


def read_bags(episodes_dir: Path) -> dict:
    """Episodes, how they ended, misaligned (strict read fails) and lost/dropped/skipped messages."""
    from efm_ros.data import list_episodes, read_episode
    from efm_ros.data.reader import EpisodeBagError

    ends, skipped, misaligned, unreadable, lost, dropped = Counter(), Counter(), 0, 0, 0, 0
    bags = list_episodes(episodes_dir)
    for bag in bags:
        try:
            ep = read_episode(bag, unmatched_actions="drop")
        except EpisodeBagError:
            unreadable += 1
            continue
        ends[ep.events[-1].event if ep.custom_data.get("terminated") == "true" and ep.events
             else f"not terminated ({ep.custom_data.get('termination_reason', '?')})"] += 1
        skipped.update(ep.dropped)
        lost += int(ep.custom_data.get("messages_lost", 0) or 0)
        dropped += int(ep.custom_data.get("messages_dropped", 0) or 0)
        try:
            read_episode(bag, unmatched_actions="error")
        except EpisodeBagError:
            misaligned += 1
    return {"episodes": len(bags), "ends": dict(ends), "misaligned": misaligned, "unreadable": unreadable,
            "lost": lost, "dropped": dropped, "skipped_by_reader": dict(skipped)}


def soak(minutes: float, robots: int, model: str, sample_s: float, warmup_s: float, episodes_dir: Path) -> dict:
    from tqdm import tqdm

    from efm_ros.bench.graph import stop_graph

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    up = subprocess.Popen([sys.executable, "-m", "efm_ros.cli", "up", "--robots", str(robots), "--model", model,
                           "--episodes-dir", str(episodes_dir)], env=env, stdout=log, stderr=subprocess.STDOUT)
    samples: dict[str, list[tuple[float, float]]] = {}
    pids_seen: dict[str, set[int]] = {}
    t0 = time.monotonic()
    total = warmup_s + 60.0 * minutes
    try:
        with tqdm(total=int(total), desc="soak", unit="s") as bar:
            while (elapsed := time.monotonic() - t0) < total:
                if up.poll() is not None:
                    raise RuntimeError(f"efm-ros up exited with {up.returncode}; log: {log.name}")
                for name, pid in node_processes(up.pid).items():
                    pids_seen.setdefault(name, set()).add(pid)
                    if elapsed >= warmup_s:
                        samples.setdefault(name, []).append((elapsed / 60.0, _rss_mb(pid)))
                time.sleep(sample_s)
                bar.update(int(time.monotonic() - t0) - bar.n)
    finally:
        stop_graph(up, signal.SIGTERM)
    rss = {}
    for name, xs in sorted(samples.items()):
        t, m = np.array([x[0] for x in xs]), np.array([x[1] for x in xs])
        ok = np.isfinite(m)
        slope = float(np.polyfit(t[ok], m[ok], 1)[0]) if ok.sum() >= 3 else float("nan")
        rss[name] = {"first_mb": float(m[ok][0]) if ok.any() else float("nan"),
                     "last_mb": float(m[ok][-1]) if ok.any() else float("nan"), "mb_per_min": slope,
                     "restarts": len(pids_seen.get(name, ())) - 1}
    return {"minutes": minutes, "robots": robots, "exit_code": up.returncode, "log": log.name, "rss": rss,
            **read_bags(episodes_dir)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="efm-ros bench soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=5.0, help="measured time after warm-up")
    p.add_argument("--robots", type=int, default=1)
    p.add_argument("--model", default="models/efm_sft")
    p.add_argument("--sample-s", type=float, default=5.0, help="RSS sampling period, s")
    p.add_argument("--warmup-s", type=float, default=20.0, help="start-up time before RSS sampling, s")
    p.add_argument("--episodes-dir", default="", help="keep the bags here (default: a temporary directory)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        episodes = Path(args.episodes_dir or Path(tmp) / "episodes")
        r = soak(args.minutes, args.robots, args.model, args.sample_s, args.warmup_s, episodes)
    print(f"efm-ros bench soak: {r['robots']} robot(s), {r['minutes']:g} min after {args.warmup_s:g} s warm-up, "
          f"{os.cpu_count()} CPUs; efm-ros up exit code {r['exit_code']}")
    print(f"episodes committed {r['episodes']} (ends: {r['ends']}), misaligned {r['misaligned']}, unreadable "
          f"{r['unreadable']}, messages lost {r['lost']}, dropped {r['dropped']}")
    print(f"left out by the reader (frames_unused: frames no action was computed from, e.g. skipped by a "
          f"busy policy, with their steps_to_go_unmatched; see efm_ros/data/reader.py): {r['skipped_by_reader']}")
    print(f"{'node':24s} {'RSS first MB':>12} {'last MB':>8} {'MB/min':>8} {'restarts':>8}")
    for name, v in r["rss"].items():
        print(f"{name:24s} {v['first_mb']:12.1f} {v['last_mb']:8.1f} {v['mb_per_min']:+8.2f} {v['restarts']:8d}")
    return 0 if r["exit_code"] == 0 and not r["unreadable"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
