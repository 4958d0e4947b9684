"""Benchmark: the embedded robot's speed on one core, and the scripted demonstrator's quality.

How to::

    efm-ros bench sim                          # 3 s per rate row, 200 demonstration episodes
    python -m efm_ros.bench.sim --episodes 1000 --seconds 5 --json sim.json

The process pins itself to one CPU core (``os.sched_setaffinity``, where the OS has it; ``--no-pin``
to skip) and measures, at ``--image-size`` (96): control steps with a rendered observation per
second under random actions (resets every 100 steps included), steps alone, renders alone, and the
demonstrator's success rate, episode length and throughput over ``--episodes`` seeded episodes
(seeds 0..N-1, step limit 100). Target (DESIGN.md §4): >= 2,000 step+render/s on one core.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from efm_ros.sim.demonstrator import DEFAULT_MAX_STEPS, ScriptedDemonstrator, run_demo_episode
from efm_ros.sim.tabletop import TabletopRobot

EPISODE_STEPS = 100
"""rate rows reset the robot every this many steps, as episodes would"""


def pin_to_one_core() -> str:
    """Pin this process to its lowest allowed CPU; returns a description for the header."""
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity on this OS)"
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return f"pinned to CPU {cpu}"


def rate(fn, seconds: float) -> float:
    """Calls of ``fn(i)`` per second over about ``seconds`` of wall time (after a short warm-up)."""
    for i in range(20):
        fn(i)
    n, t0 = 0, time.perf_counter()
    deadline = t0 + seconds
    while True:
        for _ in range(100):
            fn(n)
            n += 1
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="efm-ros bench sim", description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=200, help="demonstration episodes to run")
    ap.add_argument("--seconds", type=float, default=3.0, help="measuring time per rate row")
    ap.add_argument("--image-size", type=int, default=96, help="observation side, pixels")
    ap.add_argument("--no-pin", action="store_true", help="do not pin the process to one core")
    ap.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    args = ap.parse_args(argv)
    if args.episodes < 1 or args.seconds <= 0:
        ap.error("--episodes must be >= 1 and --seconds > 0")

    where = "not pinned (--no-pin)" if args.no_pin else pin_to_one_core()
    robot = TabletopRobot(image_size=args.image_size, seed=0)
    actions = np.random.default_rng(0).uniform(-1.0, 1.0, (4096, 2))

    def step(i: int) -> None:
        if i % EPISODE_STEPS == 0:
            robot.reset(seed=i)
        robot.step(actions[i % len(actions)])

    def step_render(i: int) -> None:
        step(i)
        robot.observe()

    results = {
        "image_size": args.image_size,
        "substeps": robot.config.substeps,
        "step_render_per_s": rate(step_render, args.seconds),
        "step_per_s": rate(step, args.seconds),
        "render_per_s": rate(lambda i: robot.render(), args.seconds),
    }

    demonstrator = ScriptedDemonstrator()
    lengths, successes, steps = [], 0, 0
    t0 = time.perf_counter()
    for seed in range(args.episodes):
        rollout = run_demo_episode(robot, demonstrator, seed=seed, max_steps=DEFAULT_MAX_STEPS)
        steps += rollout.steps
        if rollout.success:
            successes += 1
            lengths.append(rollout.steps)
    seconds = time.perf_counter() - t0
    lengths = np.asarray(lengths or [0])
    results.update({
        "episodes": args.episodes,
        "demo_success_rate": successes / args.episodes,
        "demo_mean_length": float(lengths.mean()),
        "demo_length_p10_p50_p90": [float(np.percentile(lengths, q)) for q in (10, 50, 90)],
        "demo_steps_per_s": steps / seconds,
    })

    print(f"efm-ros bench sim: image {args.image_size}x{args.image_size}, {robot.control_rate_hz:g} Hz, "
          f"{robot.config.substeps} physics substeps/step, {where}, {args.seconds:g} s per rate row")
    rows = [
        ("step + render (random actions)", f"{results['step_render_per_s']:,.0f} steps/s"),
        ("step only", f"{results['step_per_s']:,.0f} steps/s"),
        (f"render only ({args.image_size}x{args.image_size})", f"{results['render_per_s']:,.0f} frames/s"),
        (f"demonstrator success ({args.episodes} episodes)", f"{100 * results['demo_success_rate']:.1f} %"),
        ("demo length, successful (mean; p10/p50/p90)",
         f"{results['demo_mean_length']:.1f}; " + "/".join(f"{v:.0f}" for v in results["demo_length_p10_p50_p90"])),
        ("demonstrator + step + render", f"{results['demo_steps_per_s']:,.0f} steps/s"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"{'measurement'.ljust(width)}  value")
    print(f"{'-' * width}  {'-' * 24}")
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")
    target = 2000.0
    verdict = "meets" if results["step_render_per_s"] >= target else "MISSES"
    print(f"step + render {verdict} the target of {target:,.0f}/s on one core")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
