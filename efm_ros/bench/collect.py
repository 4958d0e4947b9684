"""Benchmark: demonstration collection throughput and bag size.

How to::

    efm-ros bench collect                       # 200 episodes per row, 1 and 2 workers, zstd and raw
    python -m efm_ros.bench.collect --episodes 1000 --workers 2 --compression zstd

For each (workers, compression) row it runs :func:`efm_ros.data.collect.collect_demos` into a
fresh temporary directory (the same seed every row, so every row writes the same episodes) and
reports episodes/min (wall time, including worker start-up), the demonstrator's success rate,
mean episode length, MB per episode and how fast the bags read back (:func:`read_episode`,
one process). Target (DESIGN/issue 2): 1,000 demonstrations in < 5 min on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from efm_ros.data.collect import CollectConfig, collect_demos
from efm_ros.data.reader import iter_episodes


def run_row(root: str, episodes: int, workers: int, compression: str | None, image_size: int, seed: int) -> dict:
    out = tempfile.mkdtemp(prefix=f"w{workers}_{compression or 'raw'}_", dir=root)
    cfg = CollectConfig(out=out, episodes=episodes, seed=seed, image_size=image_size, compression=compression)
    s = collect_demos(cfg, workers=workers, progress=False)
    t0 = time.perf_counter()
    n_read = sum(1 for _ in iter_episodes(out))
    read_s = time.perf_counter() - t0
    return {
        "workers": workers,
        "compression": compression or "none",
        "episodes": s.episodes,
        "seconds": s.seconds,
        "eps_per_min": 60 * s.episodes / s.seconds,
        "success_rate": s.success_rate,
        "mean_steps": sum(s.steps) / max(len(s.steps), 1),
        "mb_per_episode": s.bytes / 1e6 / max(s.episodes, 1),
        "read_eps_per_s": n_read / read_s,
    }


def format_table(rows: list[dict]) -> str:
    head = (f"{'workers':>7} {'compression':>11} {'episodes':>8} {'time s':>7} {'eps/min':>8} "
            f"{'1000 eps':>9} {'success':>8} {'steps':>6} {'MB/ep':>7} {'read eps/s':>10}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['workers']:>7} {r['compression']:>11} {r['episodes']:>8} {r['seconds']:>7.1f} "
            f"{r['eps_per_min']:>8.0f} {1000 / r['eps_per_min']:>7.2f} m {100 * r['success_rate']:>7.1f}% "
            f"{r['mean_steps']:>6.1f} {r['mb_per_episode']:>7.3f} {r['read_eps_per_s']:>10.0f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="efm-ros bench collect", description=__doc__.split("\n\n")[0])
    p.add_argument("--episodes", type=int, default=200, help="episodes per row (default: 200)")
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts (default: 1,2)")
    p.add_argument("--compression", default="zstd,none", help="comma-separated: zstd, none (default: both)")
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dir", default=None, help="where the temporary episode directories go (default: system tmp)")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",")]
    comps = [None if c.strip() == "none" else c.strip() for c in args.compression.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="efm_bench_collect_", dir=args.dir) as root:
        for comp in comps:
            for w in workers:
                rows.append(run_row(root, args.episodes, w, comp, args.image_size, args.seed))
                print(format_table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    print(f"demo collection: {args.episodes} episodes per row, {args.image_size}px frames, "
          f"{os.cpu_count()} CPUs, wall time incl. worker start-up and fsync")
    print(format_table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"episodes_per_row": args.episodes, "image_size": args.image_size, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
