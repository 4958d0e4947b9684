"""``efm-ros collect-demos``: record scripted demonstrations on a simulated robot as episode bags.

How to::

    efm-ros collect-demos --episodes 1000 --out data/demos --seed 0            # 2 workers
    efm-ros collect-demos --episodes 8 --out /tmp/d --seed 1 --workers 1 --families block2block
    efm-ros collect-demos --episodes 50 --out /tmp/lift --seed 0 --robot efm_ros.sim.lift:LiftRobot
    efm-ros collect-demos ... --robot my_pkg.sim:ArmSim --robot-args '{"camera": "wrist"}' --expert my_pkg.sim:scripted
    efm-ros read-bag data/demos/demo_s0_e00000

Any robot backend (``--robot``, :mod:`efm_ros.robots`) with an expert (its ``expert()`` method, or
``--expert pkg.mod:factory`` called with the robot) can be demonstrated; the default is the embedded
table and its scripted demonstrator. ``--families`` is a shorthand for the backend's ``families``
argument.

Episode ``i`` (``demo_s<seed>_e<i:05d>``, i = 0..N-1) is attempted with episode seeds derived
from ``(seed, i, attempt)``; failed attempts (the demonstrator is imperfect on purpose) are
skipped and counted, and the next attempt of the same index uses the next derived seed, up to
``--max-attempts`` per index. Each index is independent of the others, so the bags are identical
for any ``--workers`` and the ids are contiguous. Only successful demonstrations are written (a
demonstration ends at its goal, so its steps-to-go labels are T - t). Stamps come from a synthetic
clock (:data:`efm_ros.data.episode.DEMO_CLOCK_BASE_NS` + i * 1000 s, tick = 1/control rate), so
a bag is reproducible byte for byte per seed.

Existing episodes are never overwritten: if any target id exists in ``--out`` the command refuses
before it starts (exit status 1). A leftover ``.staging/<id>`` of an interrupted run with the same
seed is replaced. Workers are separate processes (``spawn``), each writing its own bags; ROS is
not involved.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from efm_ros.data.bag import DEFAULT_CHUNK_BYTES, write_episode
from efm_ros.data.episode import DEMO_CLOCK_BASE_NS, DEMO_CLOCK_EPISODE_STRIDE_NS, Episode
from efm_ros.parallel import run_in_processes
from efm_ros.model.bins import T_MAX
from efm_ros.robots import DEFAULT_ROBOT, add_robot_arguments, parse_robot_args
from efm_ros.vision.preprocess import IMAGE_SIZE


@dataclass(frozen=True)
class CollectConfig:
    """One collection run; every worker gets a copy."""

    out: str
    """episodes directory"""
    episodes: int
    """number of successful demonstrations to write"""
    seed: int = 0
    """collection seed: episode i, attempt r runs with episode_seed(seed, i, r)"""
    namespace: str = "demo_0"
    """robot name = topic namespace in the bags"""
    backend: str = DEFAULT_ROBOT
    """robot backend, dotted path (:func:`efm_ros.robots.make_robot`)"""
    backend_args: dict = field(default_factory=dict)
    """constructor keyword arguments of the backend (image_size and families are added from the fields)"""
    expert: str | None = None
    """expert factory, dotted path, called with the robot (None: ``robot.expert()``)"""
    image_size: int = IMAGE_SIZE
    """camera frame side, pixels"""
    families: tuple[str, ...] | None = None
    """instruction families, passed to the backend as ``families`` (None: the backend's default)"""
    max_steps: int = T_MAX
    """step limit of one attempt"""
    max_attempts: int = 20
    """attempts per episode index before the index is given up"""
    compression: str | None = "zstd"
    """MCAP chunk compression ("zstd" or None); sim frames compress ~30x (1.19 -> 0.04 MB per episode)"""
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    fsync: bool = True
    """fsync every bag before it becomes visible"""

    def episode_id(self, index: int) -> str:
        return f"demo_s{self.seed}_e{index:05d}"


def episode_seed(seed: int, index: int, attempt: int) -> int:
    """Seed of attempt ``attempt`` of episode ``index``: a 63-bit hash of the three numbers."""
    state = np.random.SeedSequence([int(seed), int(index), int(attempt)]).generate_state(1, np.uint64)[0]
    return int(state) & (2**63 - 1)


@dataclass
class EpisodeResult:
    index: int
    attempts: int
    success: bool
    steps: int = 0
    bytes: int = 0


@dataclass
class CollectSummary:
    """What a run did (printed at the end of ``collect-demos``)."""

    episodes: int = 0
    attempts: int = 0
    given_up: list[int] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    bytes: int = 0
    seconds: float = 0.0
    workers: int = 1

    @property
    def success_rate(self) -> float:
        return self.episodes / self.attempts if self.attempts else float("nan")

    def lines(self) -> list[str]:
        steps = np.asarray(self.steps or [0])
        mb = self.bytes / 1e6
        per_min = 60 * self.episodes / max(self.seconds, 1e-9)
        out = [
            f"episodes written:   {self.episodes}",
            f"demonstrator:       {100 * self.success_rate:.1f} % successful ({self.attempts} attempts"
            + (f"; gave up on {len(self.given_up)} episode index(es): {self.given_up[:10]}" if self.given_up else "")
            + ")",
            f"episode length:     mean {steps.mean():.1f} steps (min {steps.min()}, max {steps.max()})",
            f"written:            {mb:.1f} MB ({mb / max(self.episodes, 1):.3f} MB/episode)",
            f"time:               {self.seconds:.1f} s ({per_min:.0f} episodes/min, "
            f"{self.workers} worker{'s' if self.workers != 1 else ''})",
        ]
        return out


# ------------------------------------------------------------------------------------ workers
_ROBOT = None
_EXPERT = None


def robot_kwargs(cfg: CollectConfig) -> dict:
    """The backend's constructor arguments: ``backend_args`` plus image_size and families."""
    kwargs = {"image_size": cfg.image_size, **cfg.backend_args}
    if cfg.families is not None:
        kwargs["families"] = tuple(cfg.families)
    return kwargs


def _init_worker(cfg: CollectConfig) -> None:
    """Build this process's robot and expert once."""
    global _ROBOT, _EXPERT
    from efm_ros.robots import make_expert, make_robot

    _ROBOT = make_robot(cfg.backend, **robot_kwargs(cfg))
    _EXPERT = make_expert(_ROBOT, cfg.expert)


def _init_pool_worker(cfg: CollectConfig) -> None:
    """Pool worker set-up: Ctrl-C is the parent's to handle (it cancels the queued episodes and
    waits for the running ones, each well under a second), so a worker never dies mid-bag."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _init_worker(cfg)


def collect_episode(cfg: CollectConfig, index: int) -> EpisodeResult:
    """Attempt episode ``index`` until a demonstration succeeds; write it. Runs in a worker."""
    import json

    from efm_ros.robots.rollout import run_expert_episode

    if _ROBOT is None:
        _init_worker(cfg)
    for attempt in range(cfg.max_attempts):
        seed = episode_seed(cfg.seed, index, attempt)
        rollout = run_expert_episode(_ROBOT, _EXPERT, seed=seed, max_steps=cfg.max_steps)
        if not rollout.success:
            continue
        episode = Episode.from_demonstration(
            robot=cfg.namespace,
            episode_id=cfg.episode_id(index),
            instruction=rollout.instruction,
            frames=rollout.frames,
            actions=rollout.actions,
            control_rate_hz=_ROBOT.control_rate_hz,
            start_ns=DEMO_CLOCK_BASE_NS + index * DEMO_CLOCK_EPISODE_STRIDE_NS,
            custom_data={
                "family": rollout.family,
                "seed": str(seed),
                "collect_seed": str(cfg.seed),
                "episode_index": str(index),
                "attempt": str(attempt),
                "robot_backend": cfg.backend,
                **({"robot_args": json.dumps(robot_kwargs(cfg), sort_keys=True, default=list)}
                   if cfg.backend != DEFAULT_ROBOT else {}),
                **({"expert": cfg.expert} if cfg.expert else {}),
                "max_steps": str(cfg.max_steps),
            },
        )
        path = write_episode(
            cfg.out, episode, chunk_bytes=cfg.chunk_bytes, compression=cfg.compression,
            fsync=cfg.fsync, replace_stale_staging=True,
        )
        size = sum(f.stat().st_size for f in path.iterdir())
        return EpisodeResult(index, attempt + 1, True, episode.num_steps, size)
    return EpisodeResult(index, cfg.max_attempts, False)


# ------------------------------------------------------------------------------------- driver
def existing_targets(cfg: CollectConfig) -> list[str]:
    """Target episode ids that already exist in ``cfg.out`` (they would be overwritten)."""
    out = Path(cfg.out)
    if not out.is_dir():
        return []
    present = {p.name for p in out.iterdir()}
    return [cfg.episode_id(i) for i in range(cfg.episodes) if cfg.episode_id(i) in present]


def collect_demos(cfg: CollectConfig, *, workers: int = 2, progress: bool = True) -> CollectSummary:
    """Write ``cfg.episodes`` demonstration bags into ``cfg.out``; see the module docstring.

    Raises:
        FileExistsError: some target episodes exist already (nothing is written).
        NotADirectoryError / EpisodeWriteError: unusable output directory, full disk.
    """
    if cfg.episodes < 0 or workers < 1 or cfg.max_attempts < 1:
        raise ValueError("episodes must be >= 0, workers >= 1, max_attempts >= 1")
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {str(out)!r} is a file, not a directory")
    clash = existing_targets(cfg)
    if clash:
        raise FileExistsError(
            f"{len(clash)} of the {cfg.episodes} target episodes already exist in {str(out)!r} "
            f"(e.g. {clash[0]}); refusing to overwrite. Use another --seed or --out."
        )
    summary = CollectSummary(workers=workers)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.episodes, desc="demos", unit="ep", dynamic_ncols=True,
                   mininterval=0.1 if sys.stderr.isatty() else 5.0)
    t0 = time.perf_counter()

    def account(r: EpisodeResult) -> None:
        summary.attempts += r.attempts
        if r.success:
            summary.episodes += 1
            summary.steps.append(r.steps)
            summary.bytes += r.bytes
        else:
            summary.given_up.append(r.index)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(
                success=f"{100 * summary.success_rate:.0f}%", MB=f"{summary.bytes / 1e6:.0f}", refresh=False
            )

    try:
        if workers == 1:
            _init_worker(cfg)
            for i in range(cfg.episodes):
                account(collect_episode(cfg, i))
        else:
            # on an error or Ctrl-C: the queued episodes are dropped, the running ones finish cleanly
            run_in_processes(collect_episode, ((cfg, i) for i in range(cfg.episodes)), account,
                             workers=workers, initializer=_init_pool_worker, initargs=(cfg,))
    finally:
        if bar is not None:
            bar.close()
        summary.seconds = time.perf_counter() - t0
    summary.given_up.sort()
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="efm-ros collect-demos",
        description="Record scripted demonstrations on a simulated robot (the embedded table unless --robot), "
                    "one rosbag2 (MCAP) per episode.",
    )
    add_robot_arguments(p, expert=True)
    p.add_argument("--episodes", type=int, required=True, help="successful demonstrations to write")
    p.add_argument("--out", required=True, help="episodes directory (created if missing)")
    p.add_argument("--seed", type=int, required=True, help="collection seed (bags are reproducible per seed)")
    p.add_argument("--namespace", default="demo_0", help="robot name / topic namespace in the bags (default: demo_0)")
    p.add_argument("--image-size", type=int, default=96, help="camera frame side in pixels (default: 96)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default: 2)")
    p.add_argument("--families", default=None,
                   help="comma-separated instruction families, the backend's 'families' argument "
                        "(default: the backend's own; the table's: block2block,block2location)")
    p.add_argument("--max-steps", type=int, default=T_MAX, help=f"step limit of one attempt (default: {T_MAX})")
    p.add_argument("--max-attempts", type=int, default=20,
                   help="attempts per episode before it is given up (default: 20)")
    p.add_argument("--compression", choices=("zstd", "none"), default="zstd",
                   help="MCAP chunk compression (default: zstd)")
    p.add_argument("--no-fsync", action="store_true", help="do not fsync bags (faster, not crash safe)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    families = tuple(f.strip() for f in args.families.split(",") if f.strip()) if args.families else None
    if args.episodes < 0 or args.workers < 1 or args.max_attempts < 1 or args.max_steps < 1:
        print("collect-demos: --episodes must be >= 0; --workers, --max-steps, --max-attempts >= 1", file=sys.stderr)
        return 2
    try:
        backend_args = parse_robot_args(args.robot_args)
    except ValueError as exc:
        print(f"collect-demos: {exc}", file=sys.stderr)
        return 2
    cfg = CollectConfig(
        out=args.out, episodes=args.episodes, seed=args.seed, namespace=args.namespace, image_size=args.image_size,
        backend=args.robot, backend_args=backend_args, expert=args.expert, families=families, max_steps=args.max_steps, max_attempts=args.max_attempts,
        compression=None if args.compression == "none" else args.compression, fsync=not args.no_fsync,
    )
    try:
        _init_worker(cfg)  # fail fast on a bad robot option, before any worker starts
    except (ValueError, TypeError) as exc:
        print(f"collect-demos: {exc}", file=sys.stderr)
        return 2
    try:
        summary = collect_demos(cfg, workers=min(args.workers, max(args.episodes, 1)),
                                progress=not args.no_progress)
    except (FileExistsError, NotADirectoryError, OSError) as exc:
        print(f"collect-demos: {exc}", file=sys.stderr)
        return 1
    except BrokenProcessPool as exc:
        print(f"collect-demos: a worker process died ({exc}); completed episodes are kept", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("collect-demos: interrupted; completed episodes are kept, none is half-written", file=sys.stderr)
        return 130
    print(f"collect-demos: {cfg.out} (seed {cfg.seed}, robot {cfg.namespace}: {cfg.backend}, {cfg.image_size}px)")
    for line in summary.lines():
        print("  " + line)
    if summary.given_up:
        print(f"collect-demos: only {summary.episodes} of {cfg.episodes} episodes; the demonstrator failed "
              f"{cfg.max_attempts} times on indices {summary.given_up[:10]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
