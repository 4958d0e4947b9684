"""Evaluate an exported model on the embedded robot: ``efm-ros eval --model models/NAME``.

    efm-ros eval --model models/v001 --episodes 100 --seed 0 --out eval/v001
    efm-ros eval --model models/v008 --reward-model models/v001 --episodes 200 --workers 2 \\
                 --demos data/demos_heldout --families block2block

The policy runs through ONNX Runtime (``efm_ros.model.runtime.load_model``), the same path the
robot's policy node uses; actions are SAMPLED from it (``--greedy`` takes the most likely token).
Episode i resets the robot with seed SeedSequence([seed, i, EVAL_SEED_TAG]) (apart from the
demonstration seeds) and samples actions from a generator seeded by (seed, i): results are
identical for the same seed (and ``--threads``), whatever ``--workers``.

Each episode runs until GROUND-TRUTH success or ``--max-steps`` (an evaluation-only stop; ground
truth is never a reward, DESIGN §3). The model's own detector, success = d <= s held k ticks with
s and k from the REWARD model's manifest (default: the evaluated model's), is evaluated alongside
but does not stop the episode; to give a k-tick detector its chance to confirm a success, the
policy keeps acting for k - 1 ticks after the ground-truth success (as it would on a deployed
robot, where only the detector ends the episode). d is computed for every frame after the
episode (the paper's post-episode labelling) with prev_frame(0) = frame 0
(``efm_ros.learn.calibrate.previous_frames``).

Reported (``summary.json``; ground truth and detector in separate sections):
- ground_truth: success rate with a 95 % Wilson interval, mean/median length of successful episodes;
- detector: episode-level precision/recall (hit / early / false_alarm / missed / correct_reject,
  judged at the first firing, see ``calibrate.classify_episode``) and frame-level precision/recall
  of the one-tick test d <= s against per-frame ground truth, and reported_success_rate, the
  fraction of episodes in which it fired within max_steps (what a deployed robot would log);
- policy: mean entropy and log-probability of the sampled actions;
- steps_to_go (with ``--demos``): Spearman rank correlation of d with the true remaining steps
  T - t on held-out demonstration bags, and the detector's per-frame statistics there.
Also ``episodes.csv`` (one row per episode), ``traces.npz`` (d and ground truth per frame) and
plots. ``--record DIR`` also writes every episode as an episode bag into DIR with marks from the
simulator's ground truth (``efm_ros.data.marks``; data for ``train-sft --rollouts``). The core is :func:`evaluate_policy` (no files); :func:`write_report` writes them.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections.abc import Iterable, Sequence
from efm_ros.parallel import run_in_processes
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from efm_ros.learn.calibrate import (
    episode_level_detection,
    episode_steps_to_go,
    onnx_d_fn,
    previous_frames,
    threshold_stats,
)
from efm_ros.model.bins import T_MAX
from efm_ros.robots import (DEFAULT_ROBOT, add_robot_arguments, make_robot, parse_robot_args,
                            practice_robot_kwargs, robot_family, robot_instructions)

SCHEMA = "efm_ros.eval/1"
EVAL_SEED_TAG = 0xE7A1
"""mixed into evaluation episode seeds, so they never coincide with demonstration seeds"""
SUMMARY_KEYS = ("schema", "model", "config", "ground_truth", "detector", "policy", "steps_to_go", "timing")
"""the parts of :func:`evaluate_policy`'s result written to summary.json"""
CSV_FIELDS = ("index", "seed", "family", "instruction", "success", "steps", "success_tick", "detector_tick",
              "detector_outcome", "detector_early_by", "mean_entropy", "mean_log_prob", "d_start", "d_end", "d_min",
              "frames")


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95 % for z = 1.96); (0, 1) when n = 0.

    centre = (p + z²/2n) / (1 + z²/n),  half = z / (1 + z²/n) · sqrt(p(1-p)/n + z²/4n²),  p = successes/n.
    """
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    p, z2 = successes / n, z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def episode_seed(seed: int, index: int) -> int:
    """Robot seed of evaluation episode ``index`` (a non-negative int below 2**63)."""
    return int(np.random.SeedSequence([int(seed), int(index), EVAL_SEED_TAG]).generate_state(1, np.uint64)[0] >> 1)


@dataclass(frozen=True)
class EvalConfig:
    """What one evaluation runs (picklable: it is sent to every worker)."""

    model_dir: str
    """exported model whose POLICY graph acts"""
    reward_model_dir: str | None = None
    """exported model whose REWARD graph gives d and whose manifest gives s and k (None: model_dir)"""
    seed: int = 0
    """evaluation seed: episode layouts and action sampling"""
    max_steps: int = T_MAX
    """ground-truth evaluation stop"""
    variant: str | None = None
    """the backend's ``variant`` argument (the embedded table: "blocks" or "novel_bar"); None: its default"""
    families: tuple[str, ...] | None = None
    """the backend's ``families`` argument; None: its practice task (``practice_kwargs``)"""
    greedy: bool = False
    """most likely action tokens instead of sampling"""
    robot: str = DEFAULT_ROBOT
    """robot backend by dotted path (``efm_ros.robots.make_robot``)"""
    robot_kwargs: dict = field(default_factory=dict)
    """extra keyword arguments of the robot backend"""
    threads: int = 1
    """ONNX Runtime intra-op threads per worker (1 keeps results identical across --workers)"""
    providers: tuple[str, ...] | None = None
    """ONNX Runtime execution providers (None: best available)"""
    success_threshold: float | None = None
    """override s (default: the reward model's manifest)"""
    success_k: int | None = None
    """override k (default: the reward model's manifest)"""
    record_dir: str | None = None
    """write each episode as an episode bag here (``--record``; marks from ground truth: ``record_marks``)"""


def evaluation_robot_kwargs(cfg: EvalConfig, image_size: int) -> dict:
    """The backend's constructor arguments: the model's frame size, variant and families when given,
    ``robot_kwargs``, completed by the backend's practice task (:func:`practice_robot_kwargs`)."""
    kwargs = {"image_size": image_size, **{k: v for k, v in (("variant", cfg.variant), ("families", cfg.families))
                                           if v is not None}, **cfg.robot_kwargs}
    return practice_robot_kwargs(cfg.robot, kwargs)


def _jsonable(kwargs: dict) -> dict:
    """Constructor arguments as JSON values (tuples become lists; anything else its repr)."""
    import json

    return json.loads(json.dumps(kwargs, default=lambda v: list(v) if isinstance(v, (tuple, set)) else repr(v)))


class _Evaluator:
    """Models and robot of one process; runs episodes by index."""

    def __init__(self, cfg: EvalConfig):
        from efm_ros.model.runtime import load_model

        self.cfg = cfg
        kw = dict(providers=list(cfg.providers) if cfg.providers else None, intra_op_threads=cfg.threads)
        self.policy = load_model(cfg.model_dir, **kw)
        same = cfg.reward_model_dir is None or Path(cfg.reward_model_dir).resolve() == Path(cfg.model_dir).resolve()
        self.reward = self.policy if same else load_model(cfg.reward_model_dir, **kw)
        if self.reward.image_size != self.policy.image_size:
            raise ValueError(f"policy takes {self.policy.image_size}px frames, "
                             f"the reward model {self.reward.image_size}px")
        self.s = float(self.reward.success_threshold if cfg.success_threshold is None else cfg.success_threshold)
        self.k = int(self.reward.success_k if cfg.success_k is None else cfg.success_k)
        if self.k < 1:
            raise ValueError(f"success_k must be >= 1, got {self.k}")
        self.robot_kwargs = evaluation_robot_kwargs(cfg, self.policy.image_size)
        self.robot = make_robot(cfg.robot, **self.robot_kwargs)
        if int(self.robot.action_dim) != self.policy.action_bins.dims:
            raise ValueError(f"the model acts in {self.policy.action_bins.dims} dimensions, the robot {cfg.robot} "
                             f"in {self.robot.action_dim}")
        self._check_instructions()

    def _check_instructions(self) -> None:
        """Every instruction the robot can draw must have an embedding (or a text encoder)."""
        drawn = robot_instructions(self.robot)
        if drawn is None:
            return
        for name, model in (("model", self.policy), ("reward model", self.reward)):
            if model.encoder is not None:
                continue
            missing = [t for t in drawn if t not in model.instructions]
            if missing:
                raise ValueError(f"the {name} {model.model_dir} has no embedding for {len(missing)} of the "
                                 f"{len(drawn)} instructions the robot draws (e.g. {missing[0]!r}); train it on "
                                 "demonstrations of this robot, or choose other --families / --robot-args")

    def run(self, index: int) -> dict:
        """One episode: act until ground-truth success (+ k - 1 confirmation ticks) or max_steps."""
        cfg, robot = self.cfg, self.robot
        seed = episode_seed(cfg.seed, index)
        rng = np.random.default_rng([int(cfg.seed), int(index)])
        instruction = robot.reset(seed=seed)
        frames = [np.array(robot.observe())]
        truth = [bool(robot.success())]
        entropies, log_probs, taken = [], [], []
        success_tick, limit, t = None, cfg.max_steps, 0
        while t < limit:
            prev = frames[-2] if len(frames) > 1 else frames[-1]       # prev_frame(0) = frame 0
            action, tokens, log_prob, entropy = self.policy.act(frames[-1], prev, instruction, rng, greedy=cfg.greedy)
            taken.append((action, tokens, log_prob, entropy))
            robot.step(action)
            t += 1
            frames.append(np.array(robot.observe()))
            truth.append(bool(robot.success()))
            if success_tick is None:
                entropies.append(entropy)
                log_probs.append(log_prob)
                if truth[-1]:                    # evaluation-only stop, after k - 1 confirmation ticks
                    success_tick, limit = t, t + self.k - 1
        stack = np.stack(frames)
        d, _ = self.reward.steps_to_go(stack, previous_frames(stack), instruction)
        d = np.asarray(d, dtype=np.float64)
        steps = success_tick if success_tick is not None else cfg.max_steps
        detection = episode_level_detection([d], [np.asarray(truth)], self.s, self.k).episodes[0]
        if cfg.record_dir:
            self._record(index, seed, instruction, stack, taken, success_tick)
        return {
            "index": int(index), "seed": seed, "family": robot_family(robot), "instruction": instruction,
            "success": success_tick is not None, "steps": int(steps), "success_tick": success_tick,
            "detector_tick": detection.fire_tick, "detector_outcome": detection.outcome,
            "detector_early_by": detection.early_by,
            "mean_entropy": float(np.mean(entropies)), "mean_log_prob": float(np.mean(log_probs)),
            "d_start": float(d[0]), "d_end": float(d[steps]), "d_min": float(d.min()), "frames": int(len(d)),
            "d": d.tolist(), "ground_truth_frames": truth, "entropies": [float(e) for e in entropies],
        }


    def _record(self, index: int, seed: int, instruction: str, frames: np.ndarray, taken: list, success_tick) -> Path:
        """Write the episode as a bag in ``record_dir`` (id :func:`recorded_episode_id`); the ground
        truth goes into its marks (``record_marks``), never into the bag's outcome."""
        from efm_ros.data.bag import write_episode
        from efm_ros.data.episode import Episode

        cfg = self.cfg
        action, tokens, log_prob, entropy = (np.array([x[i] for x in taken]) for i in range(4))
        episode = Episode.from_rollout(
            robot="eval_0", episode_id=recorded_episode_id(cfg.seed, index), instruction=instruction, frames=frames,
            actions=action, tokens=tokens, log_probs=log_prob, entropies=entropy,
            control_rate_hz=float(getattr(self.robot, "control_rate_hz", 10.0)),
            start_ns=RECORD_CLOCK_BASE_NS + index * RECORD_CLOCK_EPISODE_STRIDE_NS,
            policy_version=self.policy.version, end_event="timeout", outcome="unknown",
            custom_data={"source": "efm-ros eval", "family": robot_family(self.robot), "seed": str(seed),
                         "eval_seed": str(cfg.seed), "episode_index": str(index), "robot_backend": cfg.robot,
                         "termination_reason": "evaluation stop (ground truth + confirmation ticks, or max_steps)"})
        return write_episode(cfg.record_dir, episode, compression="zstd", fsync=False, replace_stale_staging=True)


RECORD_CLOCK_BASE_NS = 1_900_000_000 * 10**9
"""synthetic clock of recorded evaluation episodes (2030-03-17), apart from the demonstrations'"""
RECORD_CLOCK_EPISODE_STRIDE_NS = 1000 * 10**9


def recorded_episode_id(seed: int, index: int) -> str:
    """Bag name of evaluation episode ``index`` of ``seed`` under ``--record``."""
    return f"eval_s{int(seed)}_e{int(index):05d}"


def record_marks(result: dict, record_dir: str | Path) -> int:
    """Marks of the recorded episodes from the simulator's ground truth (``marked_by`` =
    ``efm_ros.data.marks.SIMULATOR``): experiment data standing in for an operator's marks
    (``efm-ros mark``), for ``train-sft --rollouts``. Success at the first ground-truth success tick."""
    from efm_ros.data.marks import SIMULATOR, Mark, append_marks

    seed = result["config"]["seed"]
    marks = [Mark(recorded_episode_id(seed, r["index"]), "success" if r["success"] else "failure",
                  r["success_tick"] if r["success"] else None, SIMULATOR) for r in result["episodes"]]
    return append_marks(record_dir, marks)


_WORKER: _Evaluator | None = None


def _init_worker(cfg: EvalConfig) -> None:
    import signal

    global _WORKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the parent's to handle
    _WORKER = _Evaluator(cfg)


def _run_in_worker(index: int) -> dict:
    return _WORKER.run(index)


def _median(xs: Sequence[float]) -> float | None:
    return float(np.median(xs)) if len(xs) else None


def _mean(xs: Sequence[float]) -> float | None:
    return float(np.mean(xs)) if len(xs) else None


def summarize(records: Sequence[dict], s: float, k: int, max_steps: int) -> dict:
    """ground_truth / detector / policy sections from per-episode records (see ``_Evaluator.run``)."""
    n = len(records)
    wins = [r for r in records if r["success"]]
    lo, hi = wilson_interval(len(wins), n)
    lengths = [r["steps"] for r in wins]
    ground_truth = {
        "success_rate": len(wins) / n if n else None, "ci95": [lo, hi], "successes": len(wins), "episodes": n,
        "mean_length": _mean(lengths), "median_length": _median(lengths),
        "mean_steps_all": _mean([r["steps"] for r in records]),
    }
    d_seqs = [np.asarray(r["d"]) for r in records]
    truths = [np.asarray(r["ground_truth_frames"], dtype=bool) for r in records]
    episode = episode_level_detection(d_seqs, truths, s, k).to_dict() if n else None
    reported = [r for r in records if r["detector_tick"] is not None and r["detector_tick"] <= max_steps]
    frame = threshold_stats(np.concatenate(d_seqs), np.concatenate(truths), s).to_dict() if n else None
    if frame is not None:
        frame["note"] = "one-tick test d <= s against per-frame ground truth, all recorded frames"
    detector = {"s": s, "k": k, "episode": episode, "frame": frame,
                "reported_success_rate": len(reported) / n if n else None}
    entropies = [e for r in records for e in r["entropies"]]
    policy = {"mean_entropy": _mean(entropies),
              "mean_log_prob": _mean([r["mean_log_prob"] for r in records]), "actions": len(entropies)}
    return {"ground_truth": ground_truth, "detector": detector, "policy": policy}


def steps_to_go_quality(reward_model, demos: str | Path | Iterable, *, s: float, max_demos: int | None = None,
                        progress: bool = False) -> tuple[dict, dict]:
    """Steps-to-go quality of ``reward_model`` (an ``OnnxEFM``) on held-out demonstrations.

    demos: a directory of episode bags (``efm_ros.data``) or an iterable of episodes / rollouts
    ending at their goal. Returns (summary, points): Spearman rank correlation of d with the true
    remaining steps T - t (all frames pooled, and the mean over episodes), mean absolute error
    against the labels clipped to the model's t_max, and ``threshold_stats`` of d <= s with the
    goal (last) frames as positives; points = {"d", "true_steps", "episode"} lists for plots.
    """
    from scipy.stats import spearmanr

    if isinstance(demos, (str, Path)):
        from efm_ros.data import list_episodes, read_episode

        source = str(demos)
        paths = list_episodes(demos)[:max_demos]
        episodes: Iterable = (read_episode(p) for p in paths)
        total = len(paths)
    else:
        source = "in-memory episodes"
        episodes = list(demos)[:max_demos]
        total = len(episodes)
    if progress:
        from tqdm import tqdm

        episodes = tqdm(episodes, total=total, desc="demos d(o,g)", unit="ep", dynamic_ncols=True)
    d_fn = onnx_d_fn(reward_model)
    ds, labels, ids, per_episode = [], [], [], []
    for i, ep in enumerate(episodes):
        d, _ = episode_steps_to_go(d_fn, ep.frames, ep.instruction)
        y = np.arange(len(d) - 1, -1, -1)
        ds.append(d)
        labels.append(y)
        ids.append(np.full(len(d), i))
        if len(d) >= 3 and np.ptp(d) > 0:
            per_episode.append(float(spearmanr(d, y).statistic))
    if not ds:
        raise ValueError(f"no demonstrations in {source}")
    d_all, y_all = np.concatenate(ds), np.concatenate(labels)
    rho = spearmanr(d_all, y_all).statistic if np.ptp(d_all) > 0 else float("nan")
    t_max = reward_model.stg_bins.t_max
    summary = {
        "source": source, "episodes": len(ds), "frames": int(d_all.size),
        "spearman": None if math.isnan(rho) else float(rho),
        "spearman_per_episode_mean": _mean(per_episode),
        "mae": float(np.mean(np.abs(d_all - np.minimum(y_all, t_max)))),
        "goal_frames_at_s": threshold_stats(d_all, y_all == 0, s).to_dict(),
    }
    points = {"d": d_all.tolist(), "true_steps": y_all.tolist(), "episode": np.concatenate(ids).tolist()}
    return summary, points


def evaluate_policy(model_dir: str | Path, episodes: int, seed: int = 0, *,
                    reward_model_dir: str | Path | None = None, max_steps: int = T_MAX, variant: str | None = None,
                    families: Sequence[str] | None = None, demos: str | Path | Iterable | None = None,
                    max_demos: int | None = 200, workers: int = 1, threads: int = 1, greedy: bool = False,
                    robot: str = DEFAULT_ROBOT, robot_kwargs: dict | None = None,
                    providers: Sequence[str] | None = None, success_threshold: float | None = None,
                    success_k: int | None = None, record_dir: str | Path | None = None, progress: bool = True) -> dict:
    """Run ``episodes`` evaluation episodes of the exported model and summarise them (no files).

    Returns a dict: SUMMARY_KEYS (schema, model, config, ground_truth, detector, policy,
    steps_to_go (None without ``demos``), timing) plus "episodes" (per-episode records, with the
    per-frame "d" and "ground_truth_frames") and "demo_points" (d vs true steps, or None).
    Everything but "timing" (and config.workers) is identical for the same arguments, whatever
    ``workers``. robot_kwargs are extra keyword arguments of the robot backend (for the embedded
    table: TabletopConfig fields); success_threshold / success_k override the reward manifest's.
    """
    if episodes < 1 or max_steps < 1 or workers < 1:
        raise ValueError("episodes, max_steps and workers must be >= 1")
    cfg = EvalConfig(model_dir=str(model_dir),
                     reward_model_dir=None if reward_model_dir is None else str(reward_model_dir),
                     seed=int(seed), max_steps=int(max_steps), variant=variant,
                     families=None if families is None else tuple(families), greedy=greedy, robot=robot,
                     robot_kwargs=dict(robot_kwargs or {}), threads=threads,
                     providers=None if providers is None else tuple(providers),
                     success_threshold=success_threshold, success_k=success_k,
                     record_dir=None if record_dir is None else str(record_dir))
    if record_dir is not None:
        taken = [recorded_episode_id(seed, i) for i in range(episodes) if (Path(record_dir) / recorded_episode_id(seed, i)).exists()]
        if taken:
            raise ValueError(f"{record_dir} already holds {len(taken)} of these episodes (e.g. {taken[0]}); record elsewhere")
    t0 = time.perf_counter()
    local = _Evaluator(cfg)   # also validates models, robot and instructions before any worker starts
    records: dict[int, dict] = {}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=episodes, desc="eval", unit="ep", dynamic_ncols=True,
                   mininterval=0.1 if sys.stderr.isatty() else 5.0)

    def account(r: dict) -> None:
        records[r["index"]] = r
        if bar is not None:
            bar.update(1)
            wins = sum(x["success"] for x in records.values())
            bar.set_postfix(success=f"{100 * wins / len(records):.0f}%", refresh=False)

    try:
        if workers == 1:
            for i in range(episodes):
                account(local.run(i))
        else:
            run_in_processes(_run_in_worker, ((i,) for i in range(episodes)), account,
                             workers=min(workers, episodes), initializer=_init_worker, initargs=(cfg,))
    finally:
        if bar is not None:
            bar.close()
    eval_s = time.perf_counter() - t0
    ordered = [records[i] for i in range(episodes)]
    result = {
        "schema": SCHEMA,
        "model": {"dir": str(model_dir), "version": local.policy.version,
                  "reward_dir": str(reward_model_dir or model_dir), "reward_version": local.reward.version,
                  "s": local.s, "k": local.k, "providers": local.policy.providers},
        "config": {"episodes": episodes, "seed": int(seed), "max_steps": int(max_steps), "variant": variant,
                   "families": (list(local.robot_kwargs["families"]) if local.robot_kwargs.get("families") is not None
                                else None), "robot_kwargs": _jsonable(local.robot_kwargs),
                   "greedy": greedy, "robot": robot, "workers": workers, "image_size": local.policy.image_size,
                   "confirmation_ticks": local.k - 1},
        **summarize(ordered, local.s, local.k, max_steps),
        "steps_to_go": None,
        "episodes": ordered,
        "demo_points": None,
    }
    if demos is not None:
        result["steps_to_go"], result["demo_points"] = steps_to_go_quality(
            local.reward, demos, s=local.s, max_demos=max_demos, progress=progress)
    steps = sum(len(r["d"]) - 1 for r in ordered)
    result["timing"] = {"seconds": round(time.perf_counter() - t0, 3), "episode_seconds": round(eval_s, 3),
                        "robot_steps_per_s": round(steps / eval_s, 1) if eval_s > 0 else None}
    return result


# ---------------------------------------------------------------------------------------------
# Report: files and plots


COMPARISON_SEED = 77_000
"""first seed of the fixed evaluation episodes of every before/after comparison (the experiments,
the Stage-2 ladder, ``make demo``): disjoint from the demonstration, practice and calibration seeds"""


MARKED_ROLLOUT_SEED = 5
"""seed of the policy rollouts an experiment records and marks to choose the detector's operating point
on (``efm-ros experiment figure3 --mark-rollouts``; the sixth session's 400 marked rollouts): apart
from the comparison episodes and from practice"""


def success_on_fixed_episodes(model_dir: str | Path, episodes: int, workers: int = 1, progress: bool = False,
                              **robot) -> dict:
    """The one evaluation protocol of every before/after comparison: ground-truth success on
    ``episodes`` fixed episodes from :data:`COMPARISON_SEED`, sampled actions, Wilson 95 % CI.
    robot: the robot's keyword arguments (families, variant)."""
    r = evaluate_policy(model_dir, episodes, seed=COMPARISON_SEED, workers=workers, progress=progress, **robot)
    gt = r["ground_truth"]
    return {"success": gt["success_rate"], "ci95": gt["ci95"], "episodes": gt["episodes"],
            "mean_length": gt["mean_length"], "model": str(model_dir)}


def write_report(result: dict, out_dir: str | Path, *, plots: bool = True) -> list[Path]:
    """Write summary.json, episodes.csv, traces.npz and (``plots``) PNGs into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    summary = {k: result[k] for k in SUMMARY_KEYS}
    p = out / "summary.json"
    p.write_text(json.dumps(summary, indent=2) + "\n")
    written.append(p)
    p = out / "episodes.csv"
    with p.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in result["episodes"]:
            w.writerow({k: "" if r[k] is None else r[k] for k in CSV_FIELDS})
    written.append(p)
    eps = result["episodes"]
    p = out / "traces.npz"
    np.savez_compressed(p, d=np.concatenate([r["d"] for r in eps]),
                        ground_truth=np.concatenate([r["ground_truth_frames"] for r in eps]),
                        offsets=np.cumsum([0] + [len(r["d"]) for r in eps]),
                        s=result["model"]["s"], k=result["model"]["k"])
    written.append(p)
    if plots:
        written += plot_report(result, out)
    return written


def plot_report(result: dict, out_dir: str | Path, max_traces: int = 6) -> list[Path]:
    """success_length.png, d_traces.png and (with demos) d_vs_true_steps.png into ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    gt, det, eps = result["ground_truth"], result["detector"], result["episodes"]
    s, k = result["model"]["s"], result["model"]["k"]
    paths = []

    fig, (a0, a1) = plt.subplots(1, 2, figsize=(11, 4))
    rate, (lo, hi) = gt["success_rate"], gt["ci95"]
    a0.bar([0], [rate], yerr=[[rate - lo], [hi - rate]], capsize=8, color="tab:green", label="ground truth (95 % CI)")
    a0.bar([1], [det["reported_success_rate"]], color="tab:gray", label=f"model detector (s={s:.2f}, k={k})")
    a0.set_xticks([0, 1], ["ground truth", "detector"])
    a0.set_ylim(0, 1)
    a0.set_ylabel("success rate")
    a0.set_title(f"{result['model']['version']}: {gt['successes']}/{gt['episodes']} episodes succeeded")
    a0.legend(loc="upper right", fontsize=8)
    lengths = [r["steps"] for r in eps if r["success"]]
    if lengths:
        a1.hist(lengths, bins=np.arange(0, result["config"]["max_steps"] + 6, 5), color="tab:green")
        a1.axvline(gt["mean_length"], color="k", ls="--", label=f"mean {gt['mean_length']:.1f}")
        a1.legend()
    else:
        a1.text(0.5, 0.5, "no successful episodes", ha="center", va="center", transform=a1.transAxes)
    a1.set_xlabel("steps to ground-truth success")
    a1.set_ylabel("episodes")
    fig.tight_layout()
    paths.append(out / "success_length.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    chosen = ([r for r in eps if r["success"]][: max_traces // 2] + [r for r in eps if not r["success"]])[:max_traces]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for i, r in enumerate(sorted(chosen, key=lambda r: r["index"])):
        color = f"C{i % 10}"
        ax.plot(r["d"], color=color, lw=1.2, label=f"ep {r['index']} ({'success' if r['success'] else 'failure'})")
        if r["success_tick"] is not None:
            ax.axvline(r["success_tick"], color=color, ls=":", lw=1)
        if r["detector_tick"] is not None:
            ax.plot([r["detector_tick"]], [r["d"][r["detector_tick"]]], "x", color=color, ms=9, mew=2)
    ax.axhline(s, color="r", ls="--", label=f"s = {s:.2f}")
    ax.set_xlabel("tick t (dotted: ground-truth success; x: detector fires)")
    ax.set_ylabel("d(o_t, g), expected steps-to-go")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    paths.append(out / "d_traces.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    pts = result.get("demo_points")
    if pts:
        stg = result["steps_to_go"]
        fig, ax = plt.subplots(figsize=(5.5, 5))
        y, d = np.asarray(pts["true_steps"]), np.asarray(pts["d"])
        ax.scatter(y, d, s=4, alpha=0.3)
        top = max(float(y.max()), float(d.max()), 1.0)
        ax.plot([0, top], [0, top], "k--", lw=1, label="d = true steps")
        ax.axhline(s, color="r", ls="--", lw=1, label=f"s = {s:.2f}")
        ax.set_xlabel("true steps to go T - t (held-out demos)")
        ax.set_ylabel("d(o_t, g)")
        rho = stg["spearman"]
        ax.set_title(f"{stg['episodes']} demos, Spearman {rho:.3f}" if rho is not None else f"{stg['episodes']} demos")
        ax.legend()
        fig.tight_layout()
        paths.append(out / "d_vs_true_steps.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths


def format_summary(result: dict) -> str:
    """A few human-readable lines."""
    gt, det, pol = result["ground_truth"], result["detector"], result["policy"]

    def f(x, spec=".3f"):
        return "n/a" if x is None else format(x, spec)

    lo, hi = gt["ci95"]
    ep, fr = det["episode"], det["frame"]
    lines = [
        f"model {result['model']['version']} (reward {result['model']['reward_version']}), "
        f"{gt['episodes']} episodes, seed {result['config']['seed']}",
        f"ground truth: success {f(gt['success_rate'])} [95% CI {lo:.3f}, {hi:.3f}], "
        f"length mean {f(gt['mean_length'], '.1f')} / median {f(gt['median_length'], '.1f')} steps",
        f"detector (s={det['s']:.2f}, k={det['k']}): episode precision {f(ep['precision'])} recall {f(ep['recall'])} "
        f"(hit {ep['hit']}, early {ep['early']}, false alarm {ep['false_alarm']}, missed {ep['missed']}); "
        f"frame precision {f(fr['precision'])} recall {f(fr['recall'])}",
        f"policy: mean entropy {f(pol['mean_entropy'])} nats",
    ]
    if result["steps_to_go"]:
        stg = result["steps_to_go"]
        lines.append(f"steps-to-go on {stg['episodes']} held-out demos: Spearman {f(stg['spearman'])}, "
                     f"MAE {stg['mae']:.2f} steps")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="efm-ros eval", description="\n\n".join(__doc__.split("\n\n")[:2]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="exported model directory (its policy acts)")
    p.add_argument("--episodes", type=int, default=100, help="evaluation episodes (default 100)")
    p.add_argument("--seed", type=int, default=0, help="evaluation seed (layouts and action sampling)")
    p.add_argument("--out", help="report directory (default eval/<model name>-s<seed>)")
    p.add_argument("--reward-model", help="model whose reward graph and s/k judge success (default --model)")
    p.add_argument("--families", nargs="+",
                   help="the backend's instruction families (default: its practice task; the table's: block2block, "
                        "bar2location on novel_bar)")
    p.add_argument("--variant", default=None, help="the backend's variant (the table: blocks (default) or novel_bar)")
    p.add_argument("--max-steps", type=int, default=T_MAX, help=f"ground-truth evaluation stop (default {T_MAX})")
    p.add_argument("--demos", help="held-out demonstration bags for steps-to-go quality")
    p.add_argument("--max-demos", type=int, default=200, help="use at most this many demo bags (default 200)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per process (default 1)")
    p.add_argument("--greedy", action="store_true", help="take the most likely action tokens instead of sampling")
    p.add_argument("--record", metavar="DIR", help="also write every episode as an episode bag into DIR, marked from "
                   "the simulator's ground truth (DIR/marks.csv; for train-sft --rollouts)")
    add_robot_arguments(p)
    p.add_argument("--no-plots", action="store_true", help="write no PNGs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    families = None if a.families is None else tuple(x for f in a.families for x in f.split(",") if x)
    out = Path(a.out) if a.out else Path("eval") / f"{Path(a.model).resolve().name}-s{a.seed}"
    try:
        robot_kwargs = parse_robot_args(a.robot_args)
        result = evaluate_policy(a.model, a.episodes, a.seed, reward_model_dir=a.reward_model, max_steps=a.max_steps,
                                 variant=a.variant, families=families, demos=a.demos, max_demos=a.max_demos,
                                 workers=a.workers, threads=a.threads, greedy=a.greedy, robot=a.robot,
                                 robot_kwargs=robot_kwargs, record_dir=a.record, progress=not a.quiet)
    except (ValueError, FileNotFoundError) as e:
        print(f"efm-ros eval: {e}", file=sys.stderr)
        return 2
    write_report(result, out, plots=not a.no_plots)
    print(format_summary(result))
    if a.record:
        print(f"recorded {record_marks(result, a.record)} episodes into {a.record} (marks: simulator ground truth)")
    print(f"report: {out}/summary.json, episodes.csv, traces.npz" + ("" if a.no_plots else ", *.png"))
    return 0


__all__ = ["EvalConfig", "evaluate_policy", "episode_seed", "format_summary", "main", "plot_report",
           "steps_to_go_quality", "summarize", "wilson_interval", "write_report"]

if __name__ == "__main__":
    sys.exit(main())
