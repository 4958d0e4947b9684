"""Calibrate the model's success detector: the threshold s and the confirmation length k (§2.1).

    success(o, g) = 1[d(o, g) <= s]          d = expected steps-to-go of the frozen reward model
    episode ends  when success held k consecutive ticks    (objectives.consecutive_success)

The paper says only that s is "a very small number of timesteps" and reports neither s nor the
detector's precision/recall (PAPER.md §4.6). We choose both by ROC analysis on held-out data and
report what we chose and how well it works:

1. s, per frame (:func:`roc_curve`, :func:`choose_threshold`): the s with the highest recall of
   goal frames subject to precision >= ``min_precision`` (fallback when no s reaches it: max F1;
   the result says which). Any s between two neighbouring d values gives the same counts, so s
   is placed halfway to the next larger d value (the largest margin on both sides).
2. k, per episode (:func:`episode_level_detection`, :func:`choose_k`): the smallest k in
   1..k_max whose k-tick detector, at that s, reaches episode precision >= ``min_episode_precision``
   (fallback: max episode F1). Larger k suppresses single-tick false positives but confirms later.

What the labels are. Recorded demonstrations END at the first frame where the ground-truth goal
holds (``efm_ros.sim.demonstrator.run_demo_episode``; steps-to-go label T - t). So in a demo only
the LAST frame is a goal frame (positive). Every earlier frame is a negative, and the frames a few
steps before the goal are the HARD negatives: they look almost like the goal and a steps-to-go
model rightly gives them d of 1-3 steps, so s must fall between the goal frames' d and theirs.
Every frame of a failed rollout (the goal never held) is a negative too; those come from
:func:`sim_failure_rollouts` (random and very noisy scripted pushing on the simulator) and teach the
calibration what the detector does in states that demonstrations never show (paper §5: OOD
failure states). Per-frame false positives are broken down into near-goal demo frames
(<= ``near_goal_steps`` from the goal), other demo frames, and failure frames.

Steps-to-go bins. With the paper's bins (0..100 in 50 bins of width 2) the labels 0 (goal) and 1
(one step before it) share the first bin, so no model can tell the goal frame from the frame
before it: per-frame precision at any useful s is then about 1/2 and ``choose_threshold`` falls
back to max F1. Two remedies, both available: ``ignore_near_goal=bin_width - 1`` leaves those
frames out of the per-frame ROC (neither goal nor non-goal; they still count as early firings at
the episode level), and k = 2 needs d(o_{T-2}) <= s to fire one step early, which the bins do
separate, so the episode-level choice of k handles them.

Holding the goal. A k-tick detector fires k - 1 ticks after the goal at the earliest, but demos
stop at the goal. For the episode-level analysis each demo is therefore continued by k_max - 1
ticks of the robot holding still at the goal: frame = previous frame = the goal frame, whose d is
computed once (``d(o_T, o_T)``). These padded ticks are goal ticks; they are not used for the
per-frame ROC, which sees recorded frames only. (``efm_ros.learn.evaluate`` measures the same
detector on live rollouts, where the policy keeps acting after the goal.)

Frame pairs. The model sees (frame, previous frame) (paper: current + previous image). For frame
0 there is no previous frame, so prev_frame(0) = frame 0 itself (:func:`previous_frames`); the
evaluator uses the same rule, and so must the trainer and the policy/reward nodes on an episode's
first tick, so that a d value means the same thing everywhere.

Typical use (the trainer, after Stage 1, with any steps-to-go predictor)::

    cal = calibrate_model(d_fn, held_out_demos, sim_failure_rollouts(100, seed=1))
    train_meta.update(cal.train_meta())     # success_threshold, success_k, success_calibration
    plot_roc(cal, run_dir / "success_roc.png")

with ``d_fn(frames (B,H,W,3) uint8, prev_frames (B,H,W,3) uint8, instruction: str) -> (B,) d``;
for an exported model ``onnx_d_fn(load_model(dir))``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from efm_ros.learn.objectives import consecutive_success
from efm_ros.model.bins import T_MAX
from efm_ros.robots import DEFAULT_ROBOT
from efm_ros.vision.preprocess import IMAGE_SIZE

DFn = Callable[[np.ndarray, np.ndarray, str], Any]
"""d_fn(frames (B,H,W,3) uint8, prev_frames (B,H,W,3) uint8, instruction) -> (B,) d (numpy or torch)"""

OUTCOMES = ("hit", "early", "false_alarm", "missed", "correct_reject")
"""Episode-level outcomes of the k-tick detector (see :func:`classify_episode`)."""

FAILURE_SEED_TAG = 0xFA11
"""mixed into the episode seeds of :func:`sim_failure_rollouts` (apart from demo/eval seeds)"""


# ---------------------------------------------------------------------------------------------
# Frames


def previous_frames(frames: np.ndarray) -> np.ndarray:
    """The model's previous-frame input for each frame of an episode: prev[t] = frames[t - 1],
    and prev[0] = frames[0] (no earlier frame exists; the robot is taken to have been still).

    frames (T+1, H, W, 3) -> (T+1, H, W, 3), a new array.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or len(frames) == 0:
        raise ValueError(f"frames must be (T+1, H, W, 3) with T+1 >= 1, got {frames.shape}")
    return np.concatenate([frames[:1], frames[:-1]], axis=0)


# ---------------------------------------------------------------------------------------------
# Per-frame ROC (choosing s)


def _ratio(num: float, den: float) -> float | None:
    """num / den, or None when den == 0 (undefined: reported as null, never as a made-up 0 or 1)."""
    return float(num) / float(den) if den else None


def _check_scores(d_values, is_goal) -> tuple[np.ndarray, np.ndarray]:
    d = np.asarray(d_values, dtype=np.float64).reshape(-1)
    y = np.asarray(is_goal).reshape(-1)
    if y.dtype != bool:
        if not np.isin(y, (0, 1)).all():
            raise ValueError("is_goal must be booleans (or 0/1)")
        y = y.astype(bool)
    if d.shape != y.shape:
        raise ValueError(f"{d.size} d values but {y.size} is_goal labels")
    if not np.isfinite(d).all():
        raise ValueError("d values must be finite")
    return d, y


@dataclass(frozen=True)
class FrameStats:
    """The one-tick detector 1[d <= s] against per-frame goal labels."""

    s: float
    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def precision(self) -> float | None:
        """TP / (TP + FP); None when the detector never fires"""
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float | None:
        """TP / (TP + FN); None without goal frames"""
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def fpr(self) -> float | None:
        """FP / (FP + TN); None without non-goal frames"""
        return _ratio(self.fp, self.fp + self.tn)

    def to_dict(self) -> dict:
        return {"s": float(self.s), "precision": self.precision, "recall": self.recall, "fpr": self.fpr,
                "tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn}


def threshold_stats(d_values, is_goal, s: float) -> FrameStats:
    """Counts of the one-tick detector d <= s on frames labelled ``is_goal`` (any class may be empty)."""
    d, y = _check_scores(d_values, is_goal)
    fire = d <= s
    return FrameStats(float(s), tp=int((fire & y).sum()), fp=int((fire & ~y).sum()),
                      fn=int((~fire & y).sum()), tn=int((~fire & ~y).sum()))


@dataclass(frozen=True)
class RocCurve:
    """The detector d <= threshold at every distinct d value (ascending): one operating point each.

    At the smallest threshold only the frames with the smallest d fire; at the largest every frame
    fires (recall 1, FPR 1). The point "nothing fires" (0, 0) is implied (see :meth:`auc`).
    """

    thresholds: np.ndarray
    """(M,) ascending distinct d values"""
    tp: np.ndarray
    """(M,) goal frames with d <= threshold"""
    fp: np.ndarray
    """(M,) non-goal frames with d <= threshold"""
    n_pos: int
    """number of goal frames"""
    n_neg: int
    """number of non-goal frames"""
    d_values: np.ndarray = field(repr=False)
    """(n,) the scored d values (for plots)"""
    is_goal: np.ndarray = field(repr=False)
    """(n,) their labels"""

    @property
    def precision(self) -> np.ndarray:
        return self.tp / (self.tp + self.fp)   # >= 1 frame fires at every threshold

    @property
    def recall(self) -> np.ndarray:
        return self.tp / self.n_pos

    @property
    def fpr(self) -> np.ndarray:
        return self.fp / self.n_neg

    @property
    def f1(self) -> np.ndarray:
        p, r = self.precision, self.recall
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(p + r > 0, 2 * p * r / (p + r), 0.0)

    def auc(self) -> float:
        """Area under the ROC curve (FPR, recall) from (0, 0) to (1, 1), trapezoidal: the
        probability that a random goal frame has a smaller d than a random non-goal frame
        (ties count one half)."""
        x = np.concatenate([[0.0], self.fpr])
        y = np.concatenate([[0.0], self.recall])
        return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def roc_curve(d_values, is_goal) -> RocCurve:
    """ROC of the success detector 1[d <= s] over frames (goal frames = positives).

    d_values (n,) expected steps-to-go of each frame; is_goal (n,) bool, True where the goal holds
    (in demos: the last frame of each episode; see the module docstring). Needs at least one
    frame of each class. Returns a :class:`RocCurve` (thresholds, tp, fp; precision, recall, fpr).
    """
    d, y = _check_scores(d_values, is_goal)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"a ROC needs goal and non-goal frames, got {n_pos} goal and {n_neg} non-goal")
    order = np.argsort(d, kind="stable")
    ds, ys = d[order], y[order]
    last = np.r_[np.nonzero(np.diff(ds))[0], ds.size - 1]   # last index of each distinct d value
    tp = np.cumsum(ys)[last]
    fp = np.cumsum(~ys)[last]
    return RocCurve(thresholds=ds[last], tp=tp.astype(np.int64), fp=fp.astype(np.int64), n_pos=n_pos,
                    n_neg=n_neg, d_values=d, is_goal=y)


@dataclass(frozen=True)
class ThresholdChoice:
    """The chosen s and the per-frame statistics at it."""

    s: float
    precision: float
    recall: float
    fpr: float
    f1: float
    method: str
    """"max_recall_at_precision" (the constraint was met) or "max_f1" (fallback)"""
    min_precision: float


def choose_threshold(d_values, is_goal, min_precision: float = 0.95) -> ThresholdChoice:
    """s = the threshold with the highest frame recall subject to precision >= ``min_precision``.

    Among thresholds of equal recall the smallest is taken (a larger one only adds false
    positives); s is then placed halfway to the next larger d value, which changes no count.
    If no threshold reaches ``min_precision``, the threshold of maximal F1 is used instead and
    ``method`` says "max_f1".
    """
    if not 0.0 <= min_precision <= 1.0:
        raise ValueError(f"min_precision must be in [0, 1], got {min_precision}")
    curve = roc_curve(d_values, is_goal)
    precision, recall = curve.precision, curve.recall
    feasible = precision >= min_precision
    if feasible.any():
        best = recall[feasible].max()
        i = int(np.flatnonzero(feasible & (recall == best))[0])
        method = "max_recall_at_precision"
    else:
        i = int(np.argmax(curve.f1))
        method = "max_f1"
    s = float(curve.thresholds[i])
    if i + 1 < curve.thresholds.size:
        mid = 0.5 * (s + float(curve.thresholds[i + 1]))
        s = mid if mid < curve.thresholds[i + 1] else s
    return ThresholdChoice(s=s, precision=float(precision[i]), recall=float(recall[i]), fpr=float(curve.fpr[i]),
                           f1=float(curve.f1[i]), method=method, min_precision=float(min_precision))


# ---------------------------------------------------------------------------------------------
# Episode-level detection (choosing k)


def goal_mask(goal, length: int) -> np.ndarray:
    """Per-tick ground truth of an episode of ``length`` ticks from ``goal``: None (the goal never
    held), an int g (the goal holds from tick g on, as in a demo held at its goal), or a bool
    array of length ``length`` (the goal held at exactly those ticks, as in a live rollout)."""
    if goal is None:
        return np.zeros(length, dtype=bool)
    if isinstance(goal, (int, np.integer)) and not isinstance(goal, (bool, np.bool_)):
        if not 0 <= goal < length:
            raise ValueError(f"goal index {goal} outside the episode's {length} ticks")
        return np.arange(length) >= goal
    mask = np.asarray(goal)
    if mask.dtype != bool or mask.shape != (length,):
        raise ValueError(f"goal must be None, an int or a bool array of shape ({length},), "
                         f"got {mask.dtype} {mask.shape}")
    return mask


@dataclass(frozen=True)
class EpisodeDetection:
    """What the k-tick detector did in one episode, against the ground truth."""

    fire_tick: int | None
    """first tick where d <= s had held k consecutive ticks; None if it never fired"""
    goal_tick: int | None
    """first tick where the goal held; None if it never did"""
    outcome: str
    """"hit" (fired at a goal tick), "early" (fired before the goal was reached: false positive),
    "false_alarm" (fired in an episode that never reached its goal, or after it was lost again:
    false positive), "missed" (goal reached, never fired: false negative), "correct_reject"""

    @property
    def false_positive(self) -> bool:
        return self.outcome in ("early", "false_alarm")

    @property
    def false_negative(self) -> bool:
        return self.outcome == "missed"

    @property
    def early_by(self) -> int | None:
        """ticks between an early firing and the goal"""
        return self.goal_tick - self.fire_tick if self.outcome == "early" else None


def classify_episode(fired: np.ndarray, goal) -> EpisodeDetection:
    """Classify one episode from the detector's per-tick ``fired`` (bool (L,)) and ``goal``
    (None | int | bool (L,), see :func:`goal_mask`). Judged at the first firing, where a deployed
    robot would end the episode: a hit iff the goal holds at that tick."""
    fired = np.asarray(fired, dtype=bool)
    mask = goal_mask(goal, fired.size)
    fire_tick = int(np.argmax(fired)) if fired.any() else None
    goal_tick = int(np.argmax(mask)) if mask.any() else None
    if fire_tick is None:
        outcome = "correct_reject" if goal_tick is None else "missed"
    elif mask[fire_tick]:
        outcome = "hit"
    elif goal_tick is not None and fire_tick < goal_tick:
        outcome = "early"
    else:
        outcome = "false_alarm"
    return EpisodeDetection(fire_tick, goal_tick, outcome)


@dataclass(frozen=True)
class DetectionSummary:
    """Episode-level precision/recall of the k-tick detector at threshold s."""

    s: float
    k: int
    episodes: tuple[EpisodeDetection, ...] = field(repr=False)

    def count(self, outcome: str) -> int:
        return sum(e.outcome == outcome for e in self.episodes)

    @property
    def counts(self) -> dict[str, int]:
        return {o: self.count(o) for o in OUTCOMES}

    @property
    def n_goal(self) -> int:
        """episodes in which the goal held at some tick"""
        return sum(e.goal_tick is not None for e in self.episodes)

    @property
    def fired(self) -> int:
        return sum(e.fire_tick is not None for e in self.episodes)

    @property
    def precision(self) -> float | None:
        """hits / firings; None when the detector never fired"""
        return _ratio(self.count("hit"), self.fired)

    @property
    def recall(self) -> float | None:
        """hits / episodes that reached their goal; None when none did"""
        return _ratio(self.count("hit"), self.n_goal)

    @property
    def f1(self) -> float:
        p, r = self.precision or 0.0, self.recall or 0.0
        return 2 * p * r / (p + r) if p + r > 0 else 0.0

    def to_dict(self) -> dict:
        early = [e.early_by for e in self.episodes if e.outcome == "early"]
        return {"s": float(self.s), "k": int(self.k), "precision": self.precision, "recall": self.recall,
                "episodes": len(self.episodes), "goal_episodes": self.n_goal, "fired": self.fired,
                **self.counts, "mean_early_by": float(np.mean(early)) if early else None}


def episode_level_detection(d_sequences: Sequence, goals: Sequence, s: float, k: int) -> DetectionSummary:
    """Run the k-consecutive detector (``objectives.consecutive_success``) over every episode.

    d_sequences: per episode the d value of each tick, (L_i,); goals: per episode None (a failed
    rollout: the goal never held), the goal tick g (goal holds from g on; demos: their last tick,
    possibly followed by held ticks) or a bool mask (L_i,) of ticks where the goal held.
    Per episode: whether and at which tick it fires, and whether that is a hit, early (fired
    before the goal: false positive), a false alarm (fired in a failed rollout: false positive),
    a miss (false negative) or a correct reject (:class:`EpisodeDetection`).
    """
    if len(d_sequences) != len(goals):
        raise ValueError(f"{len(d_sequences)} d sequences but {len(goals)} goals")
    out = []
    for d, goal in zip(d_sequences, goals):
        d = np.asarray(d, dtype=np.float64).reshape(-1)
        out.append(classify_episode(consecutive_success(d, s, k), goal))
    return DetectionSummary(float(s), int(k), tuple(out))


@dataclass(frozen=True)
class KChoice:
    """The chosen k and the detector at every k tried."""

    k: int
    method: str
    """"smallest_k_at_precision" (the target was met) or "max_f1" (fallback)"""
    detection: DetectionSummary
    """the detector at the chosen k"""
    per_k: tuple[dict, ...]
    """``DetectionSummary.to_dict()`` for k = 1..k_max"""


def choose_k(d_sequences: Sequence, goals: Sequence, s: float, k_max: int = 5,
             min_precision: float = 0.95) -> KChoice:
    """The smallest k in 1..k_max whose k-tick detector has episode precision >= ``min_precision``
    (it also has the best recall among those, as recall only falls with k). If none does: the k of
    maximal episode F1 (ties: the smaller k), ``method`` "max_f1". A detector that never fires
    has no precision and does not meet the target."""
    if k_max < 1:
        raise ValueError(f"k_max must be >= 1, got {k_max}")
    results = [episode_level_detection(d_sequences, goals, s, k) for k in range(1, k_max + 1)]
    for r in results:
        if r.precision is not None and r.precision >= min_precision:
            best, method = r, "smallest_k_at_precision"
            break
    else:
        best = max(results, key=lambda r: (r.f1, -r.k))
        method = "max_f1"
    return KChoice(best.k, method, best, tuple(r.to_dict() for r in results))


# ---------------------------------------------------------------------------------------------
# Calibration: both choices together


@dataclass
class Calibration:
    """The detector's calibrated (s, k) and how well it separates goal from non-goal data."""

    s: float
    """success threshold in steps: success = 1[d <= s]"""
    k: int
    """consecutive ticks d <= s must hold"""
    frame_precision: float
    """per-frame precision of d <= s on the calibration frames"""
    frame_recall: float
    """per-frame recall of goal frames"""
    frame_fpr: float
    """per-frame false-positive rate"""
    episode_precision: float | None
    """episode precision of the k-tick detector (hits / firings; None if it never fired)"""
    episode_recall: float | None
    """episode recall (hits / demos; None without demos)"""
    n_positive_frames: int
    """goal frames (one per demo)"""
    n_negative_frames: int
    """non-goal frames (demo frames before the goal + failure frames)"""
    n_goal_episodes: int
    """demos"""
    n_failure_episodes: int
    """failed rollouts"""
    threshold_method: str
    """how s was chosen (:class:`ThresholdChoice`.method)"""
    k_method: str
    """how k was chosen (:class:`KChoice`.method)"""
    min_precision: float
    """per-frame precision target for s"""
    min_episode_precision: float
    """episode precision target for k"""
    roc_auc: float
    """area under the per-frame ROC curve"""
    frame_false_positives: dict[str, int]
    """per-frame false positives at s by source: near_goal (demo frames <= near_goal_steps before
    the goal, ignored ones included), demo (earlier demo frames), failure (failed rollouts)"""
    episode_outcomes: dict[str, int]
    """episode counts of hit / early / false_alarm / missed / correct_reject at (s, k)"""
    ignored_near_goal: int = 0
    """demo frames 1..ignored_near_goal steps before the goal were left out of the per-frame ROC"""
    per_k: list[dict] = field(default_factory=list)
    """the episode-level detector at every k tried"""
    curve: RocCurve | None = field(default=None, repr=False, compare=False)
    """the per-frame ROC (not serialised)"""

    @property
    def method(self) -> str:
        return f"s: {self.threshold_method}; k: {self.k_method}"

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "curve"}
        d["method"] = self.method
        return d

    def train_meta(self) -> dict:
        """Keys for the trainer's ``train_meta.json`` (``efm_ros.model.export`` copies s and k into
        the manifest's ``success`` and the rest into its ``training`` section)."""
        return {"success_threshold": float(self.s), "success_k": int(self.k), "success_calibration": self.to_dict()}


def calibrate(demo_d: Sequence, failure_d: Sequence, *, demo_hold_d: Sequence[float] | None = None,
              k_max: int = 5, min_precision: float = 0.95, min_episode_precision: float = 0.95,
              near_goal_steps: int = 2, ignore_near_goal: int = 0) -> Calibration:
    """Choose (s, k) from d values already computed (pure numpy).

    demo_d: per held-out demo, d of its frames 0..T (T+1,); its last frame is the goal frame.
    failure_d: per failed rollout, d of its frames (all negatives). demo_hold_d: per demo,
    d(o_T, o_T) of the robot holding still at the goal, used for the k_max - 1 padded goal ticks
    of the episode-level analysis (default: the demo's last d). ignore_near_goal: leave demo frames
    1..ignore_near_goal steps before the goal out of the per-frame ROC (module docstring, bins).
    """
    if ignore_near_goal < 0:
        raise ValueError(f"ignore_near_goal must be >= 0, got {ignore_near_goal}")
    demo_d = [np.asarray(d, dtype=np.float64).reshape(-1) for d in demo_d]
    failure_d = [np.asarray(d, dtype=np.float64).reshape(-1) for d in failure_d]
    if not demo_d:
        raise ValueError("calibration needs at least one held-out demonstration (goal frames)")
    if any(d.size == 0 for d in demo_d + failure_d):
        raise ValueError("every episode needs at least one frame")
    if demo_hold_d is None:
        demo_hold_d = [float(d[-1]) for d in demo_d]
    if len(demo_hold_d) != len(demo_d):
        raise ValueError(f"{len(demo_hold_d)} hold values for {len(demo_d)} demos")
    # per-frame: demo frames (goal = last) and failure frames
    steps_left = np.concatenate([np.arange(d.size - 1, -1, -1) for d in demo_d]      # T - t; -1: failure
                                + [np.full(d.size, -1) for d in failure_d])
    d_all = np.concatenate(demo_d + failure_d)
    is_goal = steps_left == 0
    used = ~((steps_left >= 1) & (steps_left <= ignore_near_goal))
    choice = choose_threshold(d_all[used], is_goal[used], min_precision)
    curve = roc_curve(d_all[used], is_goal[used])
    fp = (d_all <= choice.s) & ~is_goal
    fp_sources = {"near_goal": int((fp & (steps_left >= 1) & (steps_left <= near_goal_steps)).sum()),
                  "demo": int((fp & (steps_left > near_goal_steps)).sum()),
                  "failure": int((fp & (steps_left < 0)).sum())}
    # per-episode: demos held at their goal for k_max - 1 more ticks; failures as recorded
    pad = k_max - 1
    sequences = [np.concatenate([d, np.full(pad, hold)]) for d, hold in zip(demo_d, demo_hold_d)] + failure_d
    goals: list = [d.size - 1 for d in demo_d] + [None] * len(failure_d)
    kc = choose_k(sequences, goals, choice.s, k_max, min_episode_precision)
    return Calibration(
        s=choice.s, k=kc.k, frame_precision=choice.precision, frame_recall=choice.recall, frame_fpr=choice.fpr,
        episode_precision=kc.detection.precision, episode_recall=kc.detection.recall,
        n_positive_frames=curve.n_pos, n_negative_frames=curve.n_neg, n_goal_episodes=len(demo_d),
        n_failure_episodes=len(failure_d), threshold_method=choice.method, k_method=kc.method,
        min_precision=float(min_precision), min_episode_precision=float(min_episode_precision),
        roc_auc=curve.auc(), frame_false_positives=fp_sources, episode_outcomes=kc.detection.counts,
        ignored_near_goal=int(ignore_near_goal), per_k=list(kc.per_k), curve=curve)


def _frames_and_instruction(episode) -> tuple[np.ndarray, str]:
    """(frames, instruction) of an Episode / EpisodeRollout / (frames, instruction) pair."""
    if isinstance(episode, tuple):
        frames, instruction = episode
    else:
        frames, instruction = episode.frames, episode.instruction
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.dtype != np.uint8:
        raise ValueError(f"episode frames must be uint8 (T+1, H, W, 3), got {frames.dtype} {frames.shape}")
    return frames, str(instruction)


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):   # a torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64).reshape(-1)


def episode_steps_to_go(d_fn: DFn, frames: np.ndarray, instruction: str, *, hold: bool = False,
                        batch_size: int = 256) -> tuple[np.ndarray, float | None]:
    """d of every frame of one episode, with prev_frame(0) = frame 0 (:func:`previous_frames`).

    With ``hold`` also d(o_T, o_T), the last frame seen while the robot holds still. Returns
    (d (T+1,) float64, hold d or None); ``d_fn`` is called on at most ``batch_size`` pairs at a time.
    """
    frames = np.asarray(frames)
    prev = previous_frames(frames)
    if hold:
        frames = np.concatenate([frames, frames[-1:]])
        prev = np.concatenate([prev, frames[-1:]])
    d = np.concatenate([_as_numpy(d_fn(frames[i:i + batch_size], prev[i:i + batch_size], instruction))
                        for i in range(0, len(frames), batch_size)])
    if d.shape != (len(frames),):
        raise ValueError(f"d_fn returned {d.shape[0]} values for {len(frames)} frames")
    return (d[:-1], float(d[-1])) if hold else (d, None)


def calibrate_model(d_fn: DFn, demo_episodes: Iterable, failure_rollouts: Iterable, *, k_max: int = 5,
                    min_precision: float = 0.95, min_episode_precision: float = 0.95, near_goal_steps: int = 2,
                    ignore_near_goal: int = 0, batch_size: int = 256, progress: bool = False) -> Calibration:
    """Calibrate (s, k) of any steps-to-go predictor on held-out demos and failed rollouts.

    d_fn(frames, prev_frames, instruction) -> d: e.g. ``onnx_d_fn(model)``, or the trainer's torch
    model on cached features. demo_episodes: held-out SUCCESSFUL demonstrations ending at their
    goal (``efm_ros.data.Episode``, ``EpisodeRollout``, or (frames, instruction) pairs).
    failure_rollouts: rollouts whose goal never held (e.g. :func:`sim_failure_rollouts`), same
    types. See :func:`calibrate` for the rest.
    """
    demos, failures = list(demo_episodes), list(failure_rollouts)
    for ep in demos:
        if getattr(ep, "success", True) is False or getattr(ep, "outcome", "success") == "failure":
            raise ValueError(f"demo {getattr(ep, 'episode_id', getattr(ep, 'seed', '?'))} did not reach its goal; "
                             "pass failed episodes as failure_rollouts")
    for ep in failures:
        if getattr(ep, "success", False) is True or getattr(ep, "outcome", "failure") == "success":
            raise ValueError("a failure rollout reached its goal; only rollouts whose goal never held are negatives")
    items = [(ep, True) for ep in demos] + [(ep, False) for ep in failures]
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc="steps-to-go", unit="ep", dynamic_ncols=True)
    demo_d, hold_d, failure_d = [], [], []
    for ep, is_demo in items:
        frames, instruction = _frames_and_instruction(ep)
        d, hold = episode_steps_to_go(d_fn, frames, instruction, hold=is_demo, batch_size=batch_size)
        if is_demo:
            demo_d.append(d)
            hold_d.append(hold)
        else:
            failure_d.append(d)
    return calibrate(demo_d, failure_d, demo_hold_d=hold_d, k_max=k_max, min_precision=min_precision,
                     min_episode_precision=min_episode_precision, near_goal_steps=near_goal_steps,
                     ignore_near_goal=ignore_near_goal)


def onnx_d_fn(model) -> DFn:
    """d_fn of an exported model (``efm_ros.model.runtime.OnnxEFM``): its reward graph's d."""
    def d_fn(frames, prev_frames, instruction):
        return model.steps_to_go(frames, prev_frames, instruction)[0]
    return d_fn


# ---------------------------------------------------------------------------------------------
# Failed rollouts from the simulator


def sim_failure_rollouts(n: int, seed: int = 0, image_size: int = IMAGE_SIZE, max_steps: int = T_MAX, *,
                         families: Sequence[str] | None = None, variant: str | None = None,
                         policy: str = "mixed", max_attempts: int | None = None, progress: bool = False,
                         robot: str = DEFAULT_ROBOT, robot_kwargs: dict | None = None) -> list:
    """``n`` rollouts on a simulated robot whose ground-truth goal NEVER held (all negatives).

    policy: "random" (smooth random actions, :class:`~efm_ros.robots.rollout.RandomExpert`),
    "noisy" (a very noisy expert, :func:`~efm_ros.robots.rollout.noisy_expert`: near misses, the
    hardest negatives) or "mixed" (alternating; "random" only on a robot without an expert, e.g. the
    novel_bar table). Attempt i uses the episode seed SeedSequence([seed, i, FAILURE_SEED_TAG]);
    rollouts that reach their goal (ground truth, checked every step) are dropped. Returns
    :class:`~efm_ros.robots.rollout.EpisodeRollout` objects of max_steps actions each.
    robot / robot_kwargs: the backend (:func:`efm_ros.robots.make_robot`); families and variant are
    passed to it when given.
    """
    from efm_ros.robots import make_robot
    from efm_ros.robots.rollout import RandomExpert, noisy_expert, run_expert_episode

    if policy not in ("random", "noisy", "mixed"):
        raise ValueError(f"policy must be 'random', 'noisy' or 'mixed', got {policy!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    kwargs = {"image_size": image_size, **(robot_kwargs or {})}
    kwargs.update({k: v for k, v in (("families", families), ("variant", variant)) if v is not None})
    sim = make_robot(robot, **kwargs)
    random_expert = RandomExpert(sim)
    policies = [random_expert]
    noisy = noisy_expert(sim) if policy != "random" else None
    if noisy is not None:
        policies = [noisy] if policy == "noisy" else [random_expert, noisy]
    max_attempts = 20 * n + 20 if max_attempts is None else max_attempts
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, desc="failure rollouts", unit="ep", dynamic_ncols=True)
    out = []
    try:
        for i in range(max_attempts):
            if len(out) == n:
                break
            ep_seed = int(np.random.SeedSequence([int(seed), i, FAILURE_SEED_TAG]).generate_state(1, np.uint64)[0] >> 1)
            rollout = run_expert_episode(sim, policies[i % len(policies)], ep_seed, max_steps, stop_on_success=True)
            if not rollout.success:   # stop_on_success: success never held at any step
                out.append(rollout)
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if len(out) < n:
        raise RuntimeError(f"only {len(out)} of {n} rollouts failed within {max_attempts} attempts")
    return out


# ---------------------------------------------------------------------------------------------
# The operating point on the policy's own rollouts (``efm-ros calibrate``)

S_GRID = tuple(float(x) for x in np.round(np.arange(0.25, 15.01, 0.25), 2))
"""thresholds s (steps) tried on rollouts: every quarter step up to 15"""


def sweep_operating_points(d_sequences: Sequence, goals: Sequence, *, s_grid: Sequence[float] = S_GRID,
                           k_max: int = 6) -> list[DetectionSummary]:
    """The k-tick detector (:func:`episode_level_detection`) at every (s, k) of s_grid x 1..k_max,
    on the same episodes (``goals`` as there: None, a goal tick, or a per-tick mask)."""
    if k_max < 1 or not len(s_grid):
        raise ValueError(f"need k_max >= 1 and at least one s, got k_max {k_max}, {len(s_grid)} s values")
    return [episode_level_detection(d_sequences, goals, float(s), k) for k in range(1, k_max + 1) for s in s_grid]


def choose_operating_point(points: Sequence[DetectionSummary],
                           min_precision: float | None = None) -> tuple[DetectionSummary, str]:
    """(point, method). Without ``min_precision``: the point of maximal episode F1, "max_f1" (ties:
    the more precise, then the smaller k, then the smaller s). With it: the highest recall among
    the points whose episode precision reaches it, "recall_at_precision" (same ties), else max F1.

    Why F1 by default: on the policy's own rollouts no point of any model we trained reaches
    precision 0.9 at a useful recall (docs/results.md, the detector), and a detector that hardly
    ever fires leaves practice episodes running to T_max past the goal; the point of best F1
    chosen on marked rollouts let the oracle-reward rung lift as much as oracle termination did."""
    if not points:
        raise ValueError("no operating points to choose from")

    def tie(p: DetectionSummary):
        return (p.precision or 0.0, -p.k, -p.s)

    if min_precision is not None:
        ok = [p for p in points if p.precision is not None and p.precision >= min_precision]
        if ok:
            return max(ok, key=lambda p: ((p.recall or 0.0), *tie(p))), "recall_at_precision"
    return max(points, key=lambda p: (p.f1, *tie(p))), "max_f1"


def uninformative(point: DetectionSummary) -> str | None:
    """Why a detector at ``point`` tells nothing about these episodes, or None. It must detect some
    episode that reached its goal, and its firings must be right more often than a firing at a random
    tick would be: that is at most the share of episodes that reach their goal at all, so a precision
    at or below that share is no better than chance. Such a detector ends practice episodes far from
    the goal (docs/results.md, figure3 with marked rollouts: SFT(n)'s best point fired in 65 % of its
    rollouts at precision 0.05, where 29 % reached the goal, and practice did not lift)."""
    if point.count("hit") == 0:
        return (f"no operating point detects any of the {point.n_goal} rollouts marked reached "
                f"(s up to {max(S_GRID):g} steps, k up to the largest tried)")
    share = point.n_goal / len(point.episodes)
    if (point.precision or 0.0) <= share:
        return (f"the best point (s {point.s:g}, k {point.k}) is right at {point.precision:.2f} of its firings, no more "
                f"often than the {point.n_goal} of {len(point.episodes)} rollouts reach their goal ({share:.2f}): "
                "no better than chance")
    return None


def marked_rollout_d(d_fn: DFn, dirs: Sequence[str | Path], *, progress: bool = False):
    """d of every frame of every marked rollout of ``dirs`` (``efm-ros mark``; ``eval --record``),
    their goals for :func:`episode_level_detection` (a success's goal step, None for a failure) and
    the :class:`~efm_ros.data.marks.MarkedRollouts` (counts, who marked them)."""
    from efm_ros.data import read_episode
    from efm_ros.data.marks import MarkError, marked_rollouts

    marked = marked_rollouts(dirs)
    if not marked.paths:
        raise MarkError(f"{', '.join(map(str, dirs))}: no marked rollouts ({marked.unmarked} unmarked; efm-ros mark)")
    items = zip(marked.paths, marked.marks)
    if progress:
        from tqdm import tqdm

        items = tqdm(items, total=len(marked.paths), desc="steps-to-go", unit="ep", dynamic_ncols=True)
    d_sequences, goals = [], []
    for path, mark in items:
        ep = read_episode(path)
        if mark.goal_step is not None and mark.goal_step >= len(ep.frames):
            raise MarkError(f"{path.name}: marked reached at frame {mark.goal_step} of {len(ep.frames)}")
        d_sequences.append(episode_steps_to_go(d_fn, ep.frames, ep.instruction)[0])
        goals.append(mark.goal_step)
    return d_sequences, goals, marked


def calibrate_on_rollouts(model_dir: str | Path, rollout_dirs: Sequence[str | Path], out: str | Path, *,
                          min_precision: float | None = None, k_max: int = 6, version: str | None = None,
                          force: bool = False, signing_key: str | Path | None = None, progress: bool = False) -> dict:
    """The detector's operating point chosen on the policy's own marked rollouts (``efm-ros calibrate``):
    d of every marked rollout of ``rollout_dirs`` under ``model_dir``'s reward model, the k-tick detector
    swept over (s, k) (:func:`sweep_operating_points`) and the point chosen (:func:`choose_operating_point`);
    ``model_dir`` is exported again as ``out`` with that point, the calibrated one and these rollouts'
    counts on record (manifest ``training.success_override``). Returns {"before": the model's point on
    these rollouts, "chosen": the new one (DetectionSummary), "method", "counts", "version"}.
    Raises MarkError without marks and ValueError (nothing exported) when the chosen point is
    :func:`uninformative`."""
    from efm_ros.model.export import export_dir
    from efm_ros.model.runtime import load_model

    model = load_model(model_dir)
    d_seqs, goals, marked = marked_rollout_d(onnx_d_fn(model), rollout_dirs, progress=progress)
    chosen, method = choose_operating_point(sweep_operating_points(d_seqs, goals, k_max=k_max), min_precision)
    why = uninformative(chosen)
    if why:
        raise ValueError(f"{why}: mark more rollouts, or the reward model cannot tell this policy's goal states; "
                         "nothing exported")
    before = episode_level_detection(d_seqs, goals, model.success_threshold, model.success_k)
    counts = marked.counts()
    facts = {"chosen_on": {"rollouts": [str(d) for d in rollout_dirs], **counts, "method": method,
                           "min_precision": min_precision, **chosen.to_dict()}}
    out = Path(out)
    manifest = export_dir(model_dir, out, version=version or out.name, force=force, signing_key=signing_key,
                          success=(chosen.s, chosen.k), success_facts=facts)
    return {"before": before, "chosen": chosen, "method": method, "counts": counts, "version": manifest["model_version"]}


def main(argv: list[str] | None = None) -> int:
    """``efm-ros calibrate MODEL --rollouts DIR [DIR ...] --out NEW``: the detector's operating point
    chosen on the policy's own marked rollouts, exported with the model."""
    import argparse
    import sys

    from efm_ros.data.marks import MarkError
    from efm_ros.model.manifest import ManifestError

    ap = argparse.ArgumentParser(
        prog="efm-ros calibrate",
        description="Choose the success detector's operating point (d <= s for k ticks) on the policy's own marked "
                    "rollouts (efm-ros eval --record, efm-ros mark) and export MODEL with it as --out: the same "
                    "graphs and weights, the new (s, k), and the calibrated point and these rollouts' counts on "
                    "record (manifest training.success_override).")
    ap.add_argument("model", type=Path, help="exported model directory whose reward model judges success")
    ap.add_argument("--rollouts", nargs="+", required=True, help="directories of recorded episodes with marks.csv")
    ap.add_argument("--out", type=Path, required=True, help="model directory to write")
    ap.add_argument("--min-precision", type=float, default=None,
                    help="choose the best recall among the points with this episode precision (default: best F1)")
    ap.add_argument("--k-max", type=int, default=6, help="longest confirmation tried, ticks (default 6)")
    ap.add_argument("--version", help="model version of --out (default: the --out directory name)")
    ap.add_argument("--force", action="store_true", help="replace --out if it exists")
    ap.add_argument("--signing-key", type=Path, help="Ed25519 private key that signs the manifest")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    try:
        r = calibrate_on_rollouts(args.model, args.rollouts, args.out, min_precision=args.min_precision,
                                  k_max=args.k_max, version=args.version, force=args.force,
                                  signing_key=args.signing_key, progress=not args.no_progress)
    except (MarkError, ManifestError, FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"efm-ros calibrate: {exc}", file=sys.stderr)
        return 2
    counts, chosen = r["counts"], r["chosen"]
    print(f"{counts['marked']} marked rollouts ({counts['success']} reached, {counts['failure']} not; "
          f"marked by {counts['marked_by']}; {counts['unmarked']} unmarked, not used)")
    for name, x in (("the model's point", r["before"]), (f"chosen ({r['method']})", chosen)):
        print(f"  {name}: s {x.s:g}, k {x.k}: episode precision {x.precision or 0:.2f}, recall {x.recall or 0:.2f}, "
              f"F1 {x.f1:.2f}, fires in {x.fired} of {counts['marked']}: {x.counts}")
    print(f"exported {r['version']} -> {args.out} with success d <= {chosen.s:g} for {chosen.k} ticks")
    return 0


# ---------------------------------------------------------------------------------------------
# Plot


def plot_roc(curve: RocCurve | Calibration, path: str | Path, *, s: float | None = None,
             title: str | None = None) -> Path:
    """Save a PNG: per-frame ROC (log FPR), precision-recall, and the d histograms of goal and
    non-goal frames, with the operating point / threshold s marked (a Calibration supplies s)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if isinstance(curve, Calibration):
        s = curve.s if s is None else s
        title = title or (f"success detector: s = {curve.s:.2f} steps, k = {curve.k}  "
                          f"(frame P {curve.frame_precision:.2f} / R {curve.frame_recall:.2f}, "
                          f"AUC {curve.roc_auc:.3f})")
        if curve.curve is None:
            raise ValueError("this Calibration carries no ROC curve (it was not made by calibrate())")
        curve = curve.curve
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    fpr, rec, prec = curve.fpr, curve.recall, curve.precision
    floor = 0.5 / curve.n_neg
    ax = axes[0]
    ax.step(np.r_[floor, np.maximum(fpr, floor)], np.r_[0.0, rec], where="post")
    ax.set_xscale("log")
    ax.set_xlabel("false-positive rate (frames)")
    ax.set_ylabel("recall of goal frames")
    ax.set_title(f"ROC, AUC {curve.auc():.3f}")
    ax = axes[1]
    ax.plot(rec, prec, ".-", ms=3)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"precision-recall ({curve.n_pos} goal / {curve.n_neg} other frames)")
    ax = axes[2]
    bins = np.linspace(curve.d_values.min(), curve.d_values.max(), 60)
    ax.hist(curve.d_values[~curve.is_goal], bins=bins, alpha=0.6, label="non-goal frames", log=True)
    ax.hist(curve.d_values[curve.is_goal], bins=bins, alpha=0.6, label="goal frames", log=True)
    ax.set_xlabel("d(o, g), expected steps-to-go")
    ax.set_ylabel("frames")
    if s is not None:
        st = threshold_stats(curve.d_values, curve.is_goal, s)
        axes[0].plot([max(st.fpr or 0.0, floor)], [st.recall], "ro", label=f"s = {s:.2f}")
        axes[0].legend()
        if st.precision is not None:
            axes[1].plot([st.recall], [st.precision], "ro", label=f"s = {s:.2f}")
            axes[1].legend()
        ax.axvline(s, color="r", ls="--", label=f"s = {s:.2f}")
    ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


__all__ = [
    "Calibration", "DetectionSummary", "EpisodeDetection", "FrameStats", "KChoice", "OUTCOMES", "RocCurve",
    "S_GRID", "ThresholdChoice", "calibrate", "calibrate_model", "choose_k", "choose_operating_point",
    "choose_threshold", "classify_episode", "episode_level_detection", "episode_steps_to_go", "goal_mask",
    "marked_rollout_d", "onnx_d_fn", "plot_roc", "previous_frames", "roc_curve", "sim_failure_rollouts",
    "sweep_operating_points", "threshold_stats",
]
