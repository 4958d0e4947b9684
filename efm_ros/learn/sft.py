"""Stage 1, supervised fine-tuning (paper §1): behaviour cloning + steps-to-go on demonstrations.

    efm-ros collect-demos --episodes 100 --out data/demos_s0 --seed 0
    efm-ros train-sft --demos data/demos_s0 --out runs/sft --steps 3000
    efm-ros export runs/sft --out models/efm_sft

One network, two objectives, each batch split evenly between them (paper App. A.3):

    L = L_BC + L_stg
    L_BC  = -mean log p(a_t | o_t, o_{t-1}, g)          B/2 examples: frames t = 0..T-1, action tokens t
    L_stg = -mean log p_stg(bin(T - t) | o_t, o_{t-1}, g)  B/2 examples: frames t = 0..T incl. the goal frame

(``efm_ros.learn.objectives``; g = the episode's instruction, T - t = steps to the episode's end,
which for a demonstration is its goal.) The vision backbone is frozen, so its features are
computed once per frame by the exported ONNX backbone and cached (``efm_ros.learn.features``:
what is cached and why train and serve see the same numbers); only the head trains.

Validation is BY EPISODE (a held-out ``--val-fraction`` of the episodes, drawn with ``--seed``).
Checkpoints (paper §1): the best BC validation loss -> ``policy.safetensors``, the best steps-to-go
validation loss -> ``reward_model.safetensors``; they may be different steps. At the end the
success threshold s (success = d <= s for k ticks) is calibrated with the reward model on the
held-out demonstrations and on failed rollouts (``efm_ros.learn.calibrate``), and the run is
written in the layout ``efm-ros export`` reads (``efm_ros.model.export``):

    RUN/config.json  policy.safetensors  reward_model.safetensors  train_meta.json
        instructions.npz  metrics.csv  curves.png  features/ (the cache, unless --cache-dir)

``--random-init`` trains on a randomly initialised (frozen) backbone: the paper's "Scratch"
ablation (§4.2). Stage 1 trains on one CPU process; the head is ~0.4M parameters (keypoint trunk;
``--model-config`` overrides EFMConfig fields for head ablations, e.g. the old "flatten" trunk).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from efm_ros.learn.features import EpisodeFeatures, frame_pairs
from efm_ros.learn.symmetry import SYMMETRIES, SymmetryError, resolve_symmetries
from efm_ros.robots import parse_robot_args


@dataclass
class SFTConfig:
    """One Stage-1 run (every field is a ``train-sft`` option)."""

    demos: str = ""
    """directory of demonstration episode bags (``efm-ros collect-demos``)"""
    out: str = "runs/sft"
    """run directory to write (config, checkpoints, train_meta, metrics, curves)"""
    steps: int = 3000
    """optimizer steps (~30 epochs of 100 demos; past the best val BC loss, which is what we keep)"""
    epochs: float | None = None
    """if set, overrides steps: passes over the training BC examples (B/2 of them per step)"""
    batch_size: int = 128
    """examples per step, half BC and half steps-to-go (paper A.3: 128)"""
    lr: float = 1e-3
    """peak AdamW learning rate; the ~0.4M-parameter head starts from scratch, so 1e-3 (not a fine-tuning 1e-5)"""
    warmup_steps: int = 100
    """linear warm-up: Adam's early steps are noisy while its moment estimates settle"""
    min_lr_ratio: float = 0.1
    """cosine decay from lr to lr * min_lr_ratio at the last step (nanoGPT's schedule)"""
    weight_decay: float = 0.05
    """AdamW decoupled weight decay on the head's matrices (a little regularisation: demos are few)"""
    grad_clip: float = 1.0
    """max global gradient norm"""
    seed: int = 0
    """seed of the validation split, head initialisation, batch order (and a random backbone)"""
    val_fraction: float = 0.1
    """fraction of the episodes held out for validation (by episode)"""
    random_init: bool = False
    """randomly initialised backbone (the "Scratch" ablation); still frozen"""
    future_actions: int = 0
    """a departure (0 = the paper's): predict the demonstration's next K action tokens too, from the
    hidden layer the action head reads (``FutureActionsLoss``; training only, nothing is exported).
    Keypoint trunk only"""
    future_actions_weight: float = 1.0
    """weight of that auxiliary loss (with ``future_actions`` > 0)"""
    goal_frame_weight: float = 0.0
    """a departure (0 = the paper's L_BC + L_stg): weight of an auxiliary hindsight loss, L +=
    w * L_goal-frame, in which a 1x1 convolution of the keypoint head's instruction-conditioned map
    predicts how the episode's goal frame differs from the current frame (backbone features, final
    minus current, per-channel standardised; training only, nothing is exported). A demonstration's
    last frame shows where the instructed block ended, so the map must learn which block is the
    target and where the goal is, which BC alone barely teaches from few demos (docs/results.md,
    "What the camera features hold"). Keypoint trunk only."""
    shift_views: int = 0
    """a departure (0 = the paper's, which names augmentation as a lever, §5): also train on this many
    shifted copies of every demonstration, each episode translated by one random (dx, dy) of at most
    ``shift_pixels`` with its border repeated (DrQ's random shift, one shift per episode so a frame
    and its previous frame move together; ``features.shift_frames``). Each copy is a feature cache of
    its own (the backbone stays frozen): memory and caching time grow by that factor. Validation and
    calibration see the frames as recorded."""
    shift_pixels: int = 4
    """the largest shift of ``shift_views``, in pixels of the model's image"""
    symmetries: list[str] = dataclasses.field(default_factory=list)
    """a departure (none = the paper's): also train on every demonstration mirrored or turned by these
    symmetries of the view (names of ``efm_ros.learn.symmetry.SYMMETRIES``, or ["all"] for the seven, for a camera
    looking straight down on a square table): the frames transformed, the action's image-x / image-y
    components (``symmetry_axes``) with them, the instruction's spatial words by the robot's
    ``transformed_instruction`` or ``symmetry_phrases``. Declare only symmetries your scene has. Each is a
    feature cache of its own; validation and calibration see the recording."""
    symmetry_axes: tuple[int, int] = (0, 1)
    """the action dimensions that move the arm along image x (right) and image y (down)"""
    symmetry_phrases: dict[str, dict[str, str]] | None = None
    """per symmetry, the instruction's phrase substitutions ({"flip_lr": {"left": "right", "right":
    "left"}}; {} for instructions no mirror changes), for a robot without ``transformed_instruction``"""
    max_episodes: int | None = None
    """use only the first N episodes (sorted by id), e.g. the n of a data-scaling experiment"""
    eval_every: int = 100
    """steps between validations (and checkpoint selection)"""
    calibration_failures: int = 100
    """failed rollouts simulated for calibrating the success threshold (0: held-out demos only)"""
    cache_dir: str | None = None
    """feature cache directory (default RUN/features; share one across runs of the same demos)"""
    threads: int = 0
    """torch / ONNX Runtime threads (0: their defaults)"""
    progress: bool = True
    """tqdm progress bars"""
    model_config: dict = dataclasses.field(default_factory=dict)
    """EFMConfig overrides (e.g. {"trunk": "flatten"}) for head ablations; {} = the defaults
    (action_dims comes from the demonstrations)"""
    robot: str | None = None
    """simulated robot backend of the demos (instructions to embed, failed rollouts for calibration);
    None: the one recorded in the bags, if any"""
    robot_args: dict | None = None
    """its constructor arguments; None: the ones recorded in the bags"""
    topic_map: str | None = None
    """``demos`` are a lab's own rosbag2 recordings, read through this topic map (efm_ros.data.foreign)"""
    rollouts: list[str] | None = None
    """directories of recorded policy rollouts with an operator's marks (``efm-ros mark``; ``efm-ros eval
    --record`` in simulation): steps-to-go trains on them too, BC never does (paper §5: "train steps-to-go
    on labelled policy rollouts"). Only marked episodes are used, split by episode like the demos. A
    rollout marked reached at step N gives frames 0..N the labels N - t, as a demonstration does; one
    marked never reached gives every frame t the censored label "more than T - t" (a departure:
    ``objectives.censored_steps_to_go_loss``), the only place a failure can teach d that a state is not
    the goal. The held-out marked rollouts join the held-out demos in validation and in calibrating s."""


# ---------------------------------------------------------------------------------------- data
def split_episodes(num_episodes: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic split by episode: (train indices, val indices), both sorted.

    At least one validation episode when there are two or more episodes and val_fraction > 0.
    """
    n_val = int(round(val_fraction * num_episodes))
    if val_fraction > 0 and num_episodes >= 2:
        n_val = min(max(n_val, 1), num_episodes - 1)
    perm = np.random.default_rng([seed, 0x5F7]).permutation(num_episodes)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


@dataclass
class Examples:
    """Training examples of one objective: rows into the feature table and a target each."""

    cur: np.ndarray
    """int64 (M,): feature row of frame t"""
    prev: np.ndarray
    """int64 (M,): feature row of frame t-1 (frame 0 for t = 0)"""
    text: np.ndarray
    """int64 (M,): row of the episode's instruction in the embedding table"""
    target: np.ndarray
    """BC: int64 (M, D) action tokens of step t; steps-to-go: int64 (M,) bin of T - t"""
    label: np.ndarray
    """int64 (M,): BC: t; steps-to-go: the raw label T - t (for the d error)"""
    final: np.ndarray
    """int64 (M,): feature row of the episode's last (goal) frame"""
    future: np.ndarray | None = None
    """BC with ``future`` > 0 only: int64 (M, K, D) tokens of a_{t+1} .. a_{t+K}, -1 past the episode's end"""
    censored: np.ndarray | None = None
    """steps-to-go of marked failed rollouts only: bool (M,), True where ``target`` is the smallest bin the
    censored label "more than T - t steps" allows (None: every label is exact)"""

    def __len__(self) -> int:
        return len(self.cur)

    def moved(self, rows: int) -> Examples:
        """The same examples on the feature rows ``rows`` further on (another view of the same frames)."""
        return dataclasses.replace(self, cur=self.cur + rows, prev=self.prev + rows, final=self.final + rows)

    def __add__(self, other: Examples) -> Examples:
        """Both example sets, rows in order (the feature rows must index one table)."""
        def cat(a, b):
            return None if a is None and b is None else np.concatenate([a, b])
        if (self.future is None) != (other.future is None):
            raise ValueError("cannot join examples with and without future actions")
        cens = None if self.censored is None and other.censored is None else np.concatenate(
            [np.zeros(len(x), bool) if x.censored is None else x.censored for x in (self, other)])
        return Examples(*(np.concatenate([getattr(self, f), getattr(other, f)])
                          for f in ("cur", "prev", "text", "target", "label", "final")),
                        cat(self.future, other.future), cens)


def bc_examples(fs: EpisodeFeatures, episodes: np.ndarray, text_rows: np.ndarray, future: int = 0) -> Examples:
    """(o_t, o_{t-1}, g) -> a_t for t = 0..T-1 of the given episodes (the goal frame has no action);
    ``future`` > 0 also gives each example the tokens of a_{t+1} .. a_{t+future} (-1 where the episode has ended)."""
    episodes = np.asarray(episodes, np.int64)
    cur, prev, e, t = frame_pairs(fs.starts[episodes], fs.lengths[episodes], include_last=False)
    ep = episodes[e]
    ahead = None
    if future > 0:
        k = t[:, None] + np.arange(1, future + 1)[None, :]                          # (M, K) step indices
        exists = k < fs.lengths[ep][:, None]
        rows = np.where(exists, fs.token_starts[ep][:, None] + k, 0)
        ahead = np.where(exists[..., None], fs.tokens[rows], -1)                     # (M, K, D)
    return Examples(cur, prev, text_rows[ep], fs.tokens[fs.token_starts[ep] + t], t, fs.starts[ep] + fs.lengths[ep],
                    ahead)


def stg_examples(fs: EpisodeFeatures, episodes: np.ndarray, text_rows: np.ndarray, stg_bins) -> Examples:
    """(o_t, o_{t-1}, g) -> bin(T - t) for t = 0..T, the goal frame T included (label 0)."""
    episodes = np.asarray(episodes, np.int64)
    cur, prev, e, t = frame_pairs(fs.starts[episodes], fs.lengths[episodes], include_last=True)
    ep = episodes[e]
    steps_to_go = fs.lengths[ep] - t                         # label t' - t, t' = T (paper §1)
    return Examples(cur, prev, text_rows[ep], stg_bins.encode(steps_to_go), steps_to_go, fs.starts[ep] + fs.lengths[ep])


def mirrored_examples(bc: Examples, stg: Examples, name: str, mapped: dict[str, str], instructions: list[str],
                      config, cfg: SFTConfig) -> tuple[Examples, Examples]:
    """The BC and steps-to-go examples of a symmetric view (``SFTConfig.symmetries``): the action tokens
    (and future ones) mapped by the symmetry, each instruction row replaced by its transformed
    instruction's (``mapped``); steps-to-go labels are the same (a mirror does not change how far the goal is)."""
    from efm_ros.learn.symmetry import transform_tokens

    row_of = {t: i for i, t in enumerate(instructions)}
    rows = np.arange(len(instructions))
    for src, dst in mapped.items():
        rows[row_of[src]] = row_of[dst]
    axes = tuple(cfg.symmetry_axes)
    bc = dataclasses.replace(bc, text=rows[bc.text], target=transform_tokens(bc.target, name, config.action_spec, axes),
                             future=None if bc.future is None else transform_tokens(bc.future, name, config.action_spec, axes))
    return bc, dataclasses.replace(stg, text=rows[stg.text])


def rollout_stg_examples(fs: EpisodeFeatures, marks: list, episodes: np.ndarray, text_rows: np.ndarray, stg_bins,
                         row_offset: int = 0) -> Examples:
    """Steps-to-go examples of marked policy rollouts (``SFTConfig.rollouts``): a rollout marked reached
    at step N gives frames t = 0..N the exact labels N - t; one marked never reached gives frames
    t = 0..T the censored labels "more than T - t": target = the first bin wholly above T - t
    (``StepsToGoBins.first_bin_at_least(T - t + 1)``; with bins of 2 steps the last frame's bin 0,
    {0, 1} steps, is excluded, which is what keeps d above a small s there), ``censored`` True.
    ``row_offset`` is added to the feature rows (the rollouts' features follow the demos' in one table)."""
    episodes = np.asarray(episodes, np.int64)
    reached = np.array([marks[e].outcome == "success" for e in episodes], bool)
    last = np.array([marks[e].goal_step if r else fs.lengths[e] for e, r in zip(episodes, reached)], np.int64)
    if np.any(last > fs.lengths[episodes]):
        bad = int(np.flatnonzero(last > fs.lengths[episodes])[0])
        raise ValueError(f"rollout {fs.episode_ids[episodes[bad]]}: marked reached at step {last[bad]}, "
                         f"past its last frame {fs.lengths[episodes[bad]]}")
    cur, prev, e, t = frame_pairs(fs.starts[episodes], last, include_last=True)
    to_go = last[e] - t
    censored = ~reached[e]
    target = np.where(censored, stg_bins.first_bin_at_least(to_go + 1), stg_bins.encode(to_go))
    ep = episodes[e]
    return Examples(cur + row_offset, prev + row_offset, text_rows[ep], target, to_go,
                    fs.starts[ep] + last[e] + row_offset, None, censored)


def stg_objective(stg_logits, ex: Examples, idx: np.ndarray):
    """L_stg of examples ``idx`` (paper §1), exact labels and, for marked failed rollouts, censored ones
    (``censored_steps_to_go_loss``), averaged over all of them.  -> scalar tensor."""
    import torch

    from efm_ros.learn.objectives import censored_steps_to_go_loss, steps_to_go_loss

    target = torch.from_numpy(ex.target[idx])
    if ex.censored is None or not ex.censored[idx].any():
        return steps_to_go_loss(stg_logits, target)                                    # L_stg
    cens = torch.from_numpy(ex.censored[idx])
    n_cens = int(cens.sum())
    loss = censored_steps_to_go_loss(stg_logits[cens], target[cens]) * n_cens
    if n_cens < len(idx):
        loss = loss + steps_to_go_loss(stg_logits[~cens], target[~cens]) * (len(idx) - n_cens)
    return loss / len(idx)


class EpochSampler:
    """Indices into one objective's examples: shuffled passes, drawn without replacement."""

    def __init__(self, n: int, rng: np.random.Generator):
        self.n, self.rng, self.order, self.pos, self.epochs = n, rng, np.zeros(0, np.int64), 0, 0

    def __call__(self, k: int) -> np.ndarray:
        out = []
        while k > 0:
            if self.pos >= len(self.order):
                self.order, self.pos, self.epochs = self.rng.permutation(self.n), 0, self.epochs + 1
            take = self.order[self.pos:self.pos + k]
            self.pos += len(take)
            k -= len(take)
            out.append(take)
        return np.concatenate(out)


def split_batch(batch_size: int) -> tuple[int, int]:
    """(BC examples, steps-to-go examples) per batch: split evenly (paper A.3)."""
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 (half BC, half steps-to-go), got {batch_size}")
    return batch_size // 2, batch_size - batch_size // 2


def lr_at(step: int, total: int, cfg: SFTConfig) -> float:
    """Linear warm-up to cfg.lr over warmup_steps, then cosine decay to lr * min_lr_ratio."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


# ------------------------------------------------------------------------------------ training
def _gather(feats, text, ex: Examples, idx: np.ndarray):
    import torch

    return feats[torch.from_numpy(ex.cur[idx])], feats[torch.from_numpy(ex.prev[idx])], text[torch.from_numpy(ex.text[idx])]


def validate(model, feats, text, bc: Examples, stg: Examples, chunk: int = 1024) -> dict[str, float]:
    """Validation metrics over every held-out example (eval mode, no dropout)."""
    import torch

    from efm_ros.learn.objectives import bc_loss, expected_steps_to_go

    was_training = model.training
    model.eval()
    sums = {"bc": 0.0, "acc": 0.0, "stg": 0.0, "mae": 0.0, "goal_d": 0.0}
    exact = np.ones(len(stg), bool) if stg.censored is None else ~stg.censored
    goal = (stg.label == 0) & exact
    with torch.no_grad():
        for i in range(0, len(bc), chunk):
            idx = np.arange(i, min(i + chunk, len(bc)))
            logits, _ = model.head(*_gather(feats, text, bc, idx))
            tokens = torch.from_numpy(bc.target[idx])
            sums["bc"] += float(bc_loss(logits, tokens)) * len(idx)
            sums["acc"] += float((logits.argmax(-1) == tokens).float().mean(-1).sum())
        for i in range(0, len(stg), chunk):
            idx = np.arange(i, min(i + chunk, len(stg)))
            _, logits = model.head(*_gather(feats, text, stg, idx))
            sums["stg"] += float(stg_objective(logits, stg, idx)) * len(idx)
            d = expected_steps_to_go(logits, model.stg_values).numpy()      # d(o, g) = Σ p_k value_k
            sums["mae"] += float(np.abs(d - stg.label[idx])[exact[idx]].sum())
            sums["goal_d"] += float(d[goal[idx]].sum())
    model.train(was_training)
    return {"val_bc_loss": sums["bc"] / max(len(bc), 1), "val_token_acc": sums["acc"] / max(len(bc), 1),
            "val_stg_loss": sums["stg"] / max(len(stg), 1), "val_d_mae": sums["mae"] / max(int(exact.sum()), 1),
            "val_d_goal": sums["goal_d"] / max(int(goal.sum()), 1)}


def embed_instructions(instructions: list[str], cache: Path | None):
    """InstructionTable of exactly ``instructions`` (MiniLM embeddings), reusing and extending a
    cached table file so that MiniLM only runs for instructions never seen before."""
    from efm_ros.model.text import InstructionEncoder, InstructionTable

    table = InstructionTable.load(cache) if cache is not None and cache.is_file() else InstructionTable()
    new = [t for t in instructions if t not in table]
    embeddings = InstructionEncoder(table=table).encode(instructions)
    if cache is not None and new:
        cache.parent.mkdir(parents=True, exist_ok=True)
        table.save(cache)
    return InstructionTable(dict(zip(instructions, embeddings)))


def demonstrations(paths: list[Path]) -> tuple[list[Path], dict[str, int]]:
    """The bags that are demonstrations ending at their goal (Stage 1's steps-to-go labels are
    T - t): outcome "success", or no outcome recorded (a user's own bags). Returns (kept, skipped
    counts by outcome / termination reason): a live recording cut by a shutdown, a timeout or an
    operator stop is never trained on."""
    from efm_ros.data import read_metadata

    kept, skipped = [], {}
    for path in paths:
        custom = read_metadata(path).get("custom_data") or {}
        outcome = str(custom.get("outcome", "success"))
        if outcome == "success" and custom.get("terminated", "true") == "true":
            kept.append(path)
        else:
            why = str(custom.get("termination_reason") or outcome)
            skipped[why] = skipped.get(why, 0) + 1
    return kept, skipped


def demo_robot(paths: list[Path], robot: str | None = None, robot_args: dict | None = None) -> tuple[str, dict]:
    """The simulated robot backend the demos were recorded on and its constructor arguments, from the
    first bag's custom_data ("robot_backend", "robot_args"); ``robot`` / ``robot_args`` override them.
    ("", {}) for demonstrations without a simulated backend (a real arm, a user's own bags)."""
    from efm_ros.data import read_metadata

    custom = (read_metadata(paths[0]).get("custom_data") or {}) if paths else {}
    backend = robot if robot is not None else str(custom.get("robot_backend", ""))
    if robot_args is not None:
        kwargs = dict(robot_args)
    else:
        kwargs = json.loads(custom["robot_args"]) if custom.get("robot_args") and robot is None else {}
    return backend, kwargs


def robot_instruction_list(backend: str, kwargs: dict, image_size: int, instructions: list[str] = (),
                           symmetries: list[str] = (), phrases: dict | None = None) -> tuple[list[str], dict]:
    """Every instruction the backend can draw (:func:`efm_ros.robots.robot_instructions`; [] when there
    is no backend or it cannot list them), and, per symmetry of ``SFTConfig.symmetries``, what each of
    ``instructions`` becomes under it ({name: {instruction: transformed}}): by ``phrases[name]`` if given,
    else by the robot's ``transformed_instruction``. SymmetryError if neither can say."""
    from efm_ros.learn.symmetry import phrase_map, symmetry_matrix
    from efm_ros.robots import make_robot, robot_instructions, robot_transformed_instruction

    phrases = phrases or {}
    unknown = sorted(set(phrases) - set(symmetries))
    if unknown:
        raise SymmetryError(f"--symmetry-phrases for {unknown}, which are not among --symmetries {list(symmetries)}")
    sim = make_robot(backend, **{"image_size": image_size, **kwargs}) if backend else None
    try:
        listed = (robot_instructions(sim) or []) if sim is not None else []
        mapped = {}
        for name in symmetries:
            m = symmetry_matrix(name)
            if name in phrases:
                by_phrase = phrase_map(phrases[name])
                mapped[name] = {t: by_phrase(t) for t in instructions}
                continue
            cannot = SymmetryError(f"--symmetries {name}: the robot cannot say how its instructions change under "
                                   f"it; give --symmetry-phrases '{{\"{name}\": {{...}}}}' ({{}} if they do not change)")
            if sim is None:
                raise cannot
            try:
                mapped[name] = {t: robot_transformed_instruction(sim, t, m) for t in instructions}
            except ValueError as exc:
                raise SymmetryError(f"--symmetries {name}: {exc}") from exc
            if None in mapped[name].values():
                raise cannot
        return listed, mapped
    finally:
        close = getattr(sim, "close", None)
        if callable(close):
            close()


def serving_instructions(fs: EpisodeFeatures, robot_instructions: list[str]) -> list[str]:
    """The demos' instructions, plus every instruction of the robot the demos were recorded on (so
    the exported model can be asked any of them, e.g. in Stage 2) and of any marked rollouts; each
    once, in order of first appearance."""
    return list(dict.fromkeys([*fs.instructions, *robot_instructions]))


def demo_action_dims(path: Path) -> int:
    """Action dimensions of a demonstration bag (its tokens' width)."""
    from efm_ros.data import read_episode

    return int(read_episode(path).tokens.shape[1])


class GoalFrameLoss:
    """The auxiliary hindsight loss of ``SFTConfig.goal_frame_weight`` (a departure from the paper):
    MSE between a 1x1 convolution of the keypoint head's feature map and (features of the episode's
    goal frame − features of the current frame), each channel divided by its standard deviation
    over the training examples (so predicting "nothing changes" scores 1 per channel)."""

    def __init__(self, model, feats, examples: Examples, sample: int = 4096):
        import torch

        if not hasattr(model.trunk, "feature_map"):
            raise ValueError(f"goal_frame_weight needs the keypoint trunk, not {model.config.trunk!r}")
        self.feats = feats
        rows = np.random.default_rng(0).choice(len(examples), min(sample, len(examples)), replace=False)
        diff = feats[torch.from_numpy(examples.final[rows])] - feats[torch.from_numpy(examples.cur[rows])]
        self.scale = diff.transpose(0, 1).flatten(1).std(1).clamp_min(1e-6)[None, :, None, None]
        self.decoder = torch.nn.Conv2d(model.config.trunk_channels, feats.shape[1], 1)

    def parameters(self):
        return self.decoder.parameters()

    def __call__(self, h, cur, final_rows: np.ndarray):
        import torch

        target = (self.feats[torch.from_numpy(final_rows)] - cur) / self.scale
        return (self.decoder(h) - target).square().mean()


class FutureActionsLoss:
    """The auxiliary of ``SFTConfig.future_actions`` (a departure from the paper): from the same
    hidden layer z the action head reads, linear heads predict the demonstration's next
    ``future_actions`` action tokens a_{t+1} .. a_{t+K} (cross-entropy over those that exist; an
    action chunk as in ACT). The chunk says where the pusher is going, to the block and then with
    it towards the goal, which the one-step action says little about."""

    def __init__(self, model, examples: Examples):
        import torch

        if not hasattr(model.trunk, "hidden") or examples.future is None:
            raise ValueError(f"future_actions needs the keypoint trunk and future tokens, not {model.config.trunk!r}")
        self.k, self.d = examples.future.shape[1:]
        self.bins = model.config.action_bins
        self.decoder = torch.nn.Linear(model.config.hidden, self.k * self.d * self.bins)

    def parameters(self):
        return self.decoder.parameters()

    def __call__(self, z, future_tokens: np.ndarray):
        import torch

        logits = self.decoder(z).view(len(z), self.k * self.d, self.bins)
        target = torch.from_numpy(future_tokens.reshape(len(z), self.k * self.d))
        return torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, ignore_index=-1)


def fit_heads(model, feats, text, train_examples: tuple[Examples, Examples], val_examples: tuple[Examples, Examples],
              cfg: SFTConfig, steps: int, out: Path, t_start: float | None = None) -> tuple[list[dict], dict, float]:
    """The Stage-1 optimisation loop, for any observation kind (camera features or states):
    L = L_BC + L_stg on batches split evenly between the objectives, AdamW with warm-up + cosine,
    validation every ``cfg.eval_every`` steps, best-BC -> ``policy.safetensors`` and best-stg ->
    ``reward_model.safetensors`` in ``out`` (paper §1). ``feats`` (rows, ...) and ``text`` (rows, E)
    are tensors indexed by the Examples. Returns (validation rows, best rows by key, train seconds)."""
    import torch

    from efm_ros.learn.objectives import bc_loss
    from efm_ros.model.network import save_checkpoint

    t_start = time.perf_counter() if t_start is None else t_start
    (bc_tr, stg_tr), (bc_va, stg_va) = train_examples, val_examples
    n_bc, n_stg = split_batch(cfg.batch_size)
    # -- optimizer: AdamW, weight decay on matrices/kernels only (not biases, norms) --------------
    params = model.trainable_parameters()
    goal_frame = GoalFrameLoss(model, feats, bc_tr) if cfg.goal_frame_weight > 0 else None
    future = FutureActionsLoss(model, bc_tr) if cfg.future_actions > 0 and cfg.future_actions_weight > 0 else None
    for aux in (goal_frame, future):
        if aux is not None:
            params = params + list(aux.parameters())         # trained with the head, never exported
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    rng = np.random.default_rng([cfg.seed, 0xB47C])
    sample_bc, sample_stg = EpochSampler(len(bc_tr), rng), EpochSampler(len(stg_tr), rng)

    # -- loop ---------------------------------------------------------------------------------------
    rows, best = [], {"val_bc_loss": math.inf, "val_stg_loss": math.inf}
    best_metrics: dict[str, dict] = {}
    acc = {"loss": 0.0, "bc": 0.0, "stg": 0.0, "goal": 0.0, "future": 0.0, "n": 0}
    bar = None
    if cfg.progress:
        from tqdm import tqdm
        bar = tqdm(total=steps, desc="train-sft", unit="step", dynamic_ncols=True,
                   mininterval=0.5 if sys.stderr.isatty() else 30.0)
    model.train()
    t_train, train_time = time.perf_counter(), 0.0
    for step in range(1, steps + 1):
        lr = lr_at(step - 1, steps, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        i_bc, i_stg = sample_bc(n_bc), sample_stg(n_stg)
        c1, p1, g1 = _gather(feats, text, bc_tr, i_bc)
        c2, p2, g2 = _gather(feats, text, stg_tr, i_stg)
        cur, prev, g = torch.cat([c1, c2]), torch.cat([p1, p2]), torch.cat([g1, g2])
        if goal_frame is None and future is None:
            action_logits, stg_logits = model.head(cur, prev, g)
        else:                                               # the auxiliaries read the head's insides
            h = model.trunk.feature_map(cur, prev, g)
            z = model.trunk.hidden(h, g)
            action_logits, stg_logits = model.trunk.outputs(z)
        l_bc = bc_loss(action_logits[:n_bc], torch.from_numpy(bc_tr.target[i_bc]))           # L_BC
        l_stg = stg_objective(stg_logits[n_bc:], stg_tr, i_stg)                              # L_stg
        loss = l_bc + l_stg                                                                   # L = L_BC + L_stg
        if goal_frame is not None:                          # + w * L_goal-frame (a departure; SFTConfig)
            l_goal = goal_frame(h, cur, np.concatenate([bc_tr.final[i_bc], stg_tr.final[i_stg]]))
            loss = loss + cfg.goal_frame_weight * l_goal
            acc["goal"] += l_goal.item()
        if future is not None:                              # + w * L_future-actions (a departure; SFTConfig)
            l_future = future(z[:n_bc], bc_tr.future[i_bc])
            loss = loss + cfg.future_actions_weight * l_future
            acc["future"] += l_future.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        acc["loss"] += loss.item()
        acc["bc"] += l_bc.item()
        acc["stg"] += l_stg.item()
        acc["n"] += 1
        if bar is not None:
            bar.update(1)
        if step % cfg.eval_every == 0 or step == steps:
            train_time += time.perf_counter() - t_train
            m = validate(model, feats, text, bc_va, stg_va)
            row = {"step": step, "epoch": round(step * n_bc / len(bc_tr), 3), "lr": lr,
                   "train_loss": acc["loss"] / acc["n"], "train_bc_loss": acc["bc"] / acc["n"],
                   "train_stg_loss": acc["stg"] / acc["n"],
                   **({"train_goal_frame_loss": acc["goal"] / acc["n"]} if goal_frame is not None else {}),
                   **({"train_future_actions_loss": acc["future"] / acc["n"]} if future is not None else {}), **m,
                   "samples_per_s": step * cfg.batch_size / train_time, "elapsed_s": time.perf_counter() - t_start}
            acc = {"loss": 0.0, "bc": 0.0, "stg": 0.0, "goal": 0.0, "future": 0.0, "n": 0}
            for key, file in (("val_bc_loss", "policy.safetensors"), ("val_stg_loss", "reward_model.safetensors")):
                if m[key] < best[key]:                # paper §1: best BC val -> policy, best stg val -> RM
                    best[key] = m[key]
                    best_metrics[key] = dict(row)
                    save_checkpoint(model, out / file, {"step": str(step), "selected_by": key})
            rows.append(row)
            write_metrics_csv(rows, out / "metrics.csv")
            if bar is not None:
                bar.set_postfix(bc=f"{m['val_bc_loss']:.3f}", stg=f"{m['val_stg_loss']:.3f}",
                                acc=f"{m['val_token_acc']:.2f}", mae=f"{m['val_d_mae']:.1f}", refresh=False)
            t_train = time.perf_counter()
    if bar is not None:
        bar.close()

    return rows, best_metrics, train_time


def train(cfg: SFTConfig) -> dict:
    """Run Stage 1 as configured; returns train_meta (also written to RUN/train_meta.json)."""
    import torch

    from efm_ros.data import list_episodes
    from efm_ros.learn.features import ShiftedView, SymmetricView, cached_episode_features
    from efm_ros.model.network import EFM, EFMConfig

    t_start = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)                  # head init (and a random backbone's weights)

    # -- model and data -------------------------------------------------------------------------
    base = EFMConfig.from_dict({**EFMConfig().to_dict(), **cfg.model_config})   # a typo fails before any work
    demos = Path(cfg.demos)
    if cfg.topic_map:   # a lab's own recordings: convert them into episode bags first
        from efm_ros.data.foreign import TopicMap, import_recordings

        tm = dataclasses.replace(TopicMap.load(cfg.topic_map), image_size=base.image_size)
        imported = import_recordings(demos, tm, out / "imported", progress=cfg.progress)
        print(f"train-sft: {len(imported)} demonstrations from the recordings in {demos} -> {out / 'imported'}",
              flush=True)
        demos = out / "imported"
    paths, skipped = demonstrations(list_episodes(demos))
    if skipped:
        print(f"train-sft: skipped {sum(skipped.values())} episode(s) that did not end at their goal: "
              + ", ".join(f"{n} {why}" for why, n in sorted(skipped.items())), flush=True)
    if cfg.max_episodes is not None:
        paths = paths[:cfg.max_episodes]
    if len(paths) < 2:
        raise ValueError(f"{demos}: need at least 2 episodes (train + validation), found {len(paths)}")
    marked = None
    if cfg.rollouts:
        from efm_ros.data.marks import MarkError, marked_rollouts

        if cfg.goal_frame_weight > 0:
            raise ValueError("--rollouts with --goal-frame-weight: a rollout marked failed has no goal frame")
        marked = marked_rollouts(cfg.rollouts)
        if not marked.paths:
            raise MarkError(f"{', '.join(cfg.rollouts)}: no marked rollouts ({marked.unmarked} unmarked; efm-ros mark)")
    overrides = {"action_dims": demo_action_dims(paths[0]), **cfg.model_config}   # the robot's action size
    config = EFMConfig.from_dict({**EFMConfig().to_dict(), **overrides, "pretrained": not cfg.random_init})
    model = EFM(config)
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else out / "features"
    t0 = time.perf_counter()
    fs = cached_episode_features(paths, model, cache_dir, threads=cfg.threads, progress=cfg.progress)
    feature_seconds = time.perf_counter() - t0
    backend, backend_args = demo_robot(paths, cfg.robot, cfg.robot_args)
    if marked is not None:
        rfs = cached_episode_features(marked.paths, model, cache_dir, threads=cfg.threads, progress=cfg.progress)
        if rfs.episode_ids != [p.name for p in marked.paths]:
            raise MarkError("rollout bags whose episode id is not their directory name: cannot match their marks")
    symmetries = resolve_symmetries(cfg.symmetries)
    listed, mirrored = robot_instruction_list(backend, backend_args, config.image_size, list(dict.fromkeys(fs.instructions)),
                                              symmetries, cfg.symmetry_phrases)
    instructions = serving_instructions(fs, [*listed, *(rfs.instructions if marked is not None else []),
                                             *(t for m in mirrored.values() for t in m.values())])
    table = embed_instructions(instructions, cache_dir / "instructions.npz")
    table.save(out / "instructions.npz")
    row_of = {t: i for i, t in enumerate(instructions)}
    text_rows = np.array([row_of[t] for t in fs.instructions], np.int64)
    text = torch.from_numpy(table.lookup(instructions))
    train_eps, val_eps = split_episodes(len(fs), cfg.val_fraction, cfg.seed)
    bins = config.stg_spec
    bc_tr, stg_tr = bc_examples(fs, train_eps, text_rows, cfg.future_actions), stg_examples(fs, train_eps, text_rows, bins)
    bc_va, stg_va = bc_examples(fs, val_eps, text_rows), stg_examples(fs, val_eps, text_rows, bins)
    bc_tr_0, stg_tr_0 = bc_tr, stg_tr
    rollout_meta, rollouts_val = None, []
    tables = [fs.features]
    views = [ShiftedView(v, cfg.shift_pixels) for v in range(1, cfg.shift_views + 1)]   # SFTConfig.shift_views
    views += [SymmetricView(name) for name in symmetries]                                 # SFTConfig.symmetries
    for view in views:   # transformed copies of the training demos, each on the rows of a table of its own
        t0 = time.perf_counter()
        vs = cached_episode_features(paths, model, cache_dir, threads=cfg.threads, progress=cfg.progress, view=view)
        feature_seconds += time.perf_counter() - t0
        if vs.episode_ids != fs.episode_ids or not np.array_equal(vs.starts, fs.starts):
            raise RuntimeError(f"{view.label}'s feature cache does not match the demonstrations' rows")
        bc_v, stg_v = bc_tr_0.moved(len(tables) * len(fs.features)), stg_tr_0.moved(len(tables) * len(fs.features))
        if isinstance(view, SymmetricView):
            bc_v, stg_v = mirrored_examples(bc_v, stg_v, view.name, mirrored[view.name], instructions, config, cfg)
        bc_tr, stg_tr = bc_tr + bc_v, stg_tr + stg_v
        tables.append(vs.features)
    if marked is not None:   # steps-to-go also on the marked rollouts (SFTConfig.rollouts); their rows follow the demos'
        r_text = np.array([row_of[t] for t in rfs.instructions], np.int64)
        r_train, r_val = split_episodes(len(rfs), cfg.val_fraction, cfg.seed)
        offset = sum(len(t) for t in tables)
        r_tr = rollout_stg_examples(rfs, marked.marks, r_train, r_text, bins, offset)
        r_va = rollout_stg_examples(rfs, marked.marks, r_val, r_text, bins, offset)
        stg_tr, stg_va = stg_tr + r_tr, stg_va + r_va
        tables.append(rfs.features)
        rfs.features = None
        rollouts_val = [(marked.paths[i], marked.marks[i]) for i in r_val]
        rollout_meta = {**marked.counts(), "train": len(r_train), "val": len(r_val),
                        "stg_train_examples": len(r_tr), "censored_train_examples": int(r_tr.censored.sum()),
                        "dirs": list(cfg.rollouts)}
        print(f"train-sft: steps-to-go also on {len(marked.paths)} marked rollouts ({rollout_meta['success']} reached, "
              f"{rollout_meta['failure']} not; marked by " + ", ".join(f"{k}: {v}" for k, v in
                                                                      rollout_meta["marked_by"].items())
              + f"; {marked.unmarked} unmarked skipped): {len(r_tr)} train examples", flush=True)
    feats = torch.from_numpy(np.concatenate(tables) if len(tables) > 1 else tables[0])
    if len(tables) > 1:
        fs.features = None                                     # one copy of the table in memory
    del tables
    n_bc, n_stg = split_batch(cfg.batch_size)
    steps = cfg.steps if cfg.epochs is None else max(1, math.ceil(cfg.epochs * len(bc_tr) / n_bc))
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=1))
    print(f"train-sft: {len(train_eps)} train / {len(val_eps)} val episodes, {len(bc_tr)} BC + {len(stg_tr)} "
          f"steps-to-go train examples, {steps} steps of {n_bc}+{n_stg}, features {tuple(feats.shape)} "
          f"({feature_seconds:.0f} s)", flush=True)

    rows, best_metrics, train_time = fit_heads(model, feats, text, (bc_tr, stg_tr), (bc_va, stg_va), cfg, steps, out,
                                               t_start)

    from efm_ros.learn.plots import plot_sft_curves
    plot_sft_curves(rows, out / "curves.png", best_metrics)

    # -- success threshold: reward model on held-out demos + failed rollouts ---------------------
    calibration = calibrate_run(out, paths, val_eps, table, cfg, (backend, backend_args), config.image_size,
                                rollouts_val)
    cal = calibration["success_calibration"]

    pol, rm = best_metrics["val_bc_loss"], best_metrics["val_stg_loss"]
    metrics = {"val_bc_loss": pol["val_bc_loss"], "val_token_acc": pol["val_token_acc"], "policy_step": pol["step"],
               "val_stg_loss": rm["val_stg_loss"], "val_d_mae": rm["val_d_mae"], "val_d_goal": rm["val_d_goal"],
               "reward_model_step": rm["step"], "success_episode_precision": cal["episode_precision"],
               "success_episode_recall": cal["episode_recall"], "success_frame_precision": cal["frame_precision"],
               "success_frame_recall": cal["frame_recall"], "success_roc_auc": cal["roc_auc"], "train_samples_per_s": rows[-1]["samples_per_s"],
               "train_seconds": round(train_time, 1), "feature_seconds": round(feature_seconds, 1),
               "total_seconds": round(time.perf_counter() - t_start, 1)}
    meta = {"data_hash": fs.meta["data_hash"], "metrics": metrics,
            "success_threshold": calibration["success_threshold"], "success_k": calibration["success_k"],
            "control_rate_hz": fs.meta["control_rate_hz"] or 10.0, "instructions": instructions,
            "stage": "sft", "sft_config": dataclasses.asdict(cfg), "steps": steps,
            "episodes": {"train": len(train_eps), "val": len(val_eps),
                         "val_ids": [fs.episode_ids[i] for i in val_eps],
                         "frames": int(fs.lengths.sum() + len(fs)), "mean_steps": float(fs.lengths.mean())},
            "success_calibration": cal, "calibration_seconds": calibration["seconds"], "backbone_key": fs.meta["backbone_key"],
            **({"rollouts": rollout_meta} if rollout_meta is not None else {})}
    (out / "train_meta.json").write_text(json.dumps(meta, indent=1))
    return meta


def write_metrics_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


# --------------------------------------------------------------------------------- calibration
def features_d_fn(reward_model, extractor, table):
    """d_fn(frames, prev_frames, instruction) -> d (B,) for ``calibrate_model``: the ONNX backbone
    (the served one) + the reward model's head in torch, d = Σ_k p_k value_k (§2.1). When
    prev_frames is frames shifted by one (an episode), each frame's features are computed once."""
    import torch

    from efm_ros.learn.features import extract_features
    from efm_ros.learn.objectives import expected_steps_to_go

    def d_fn(frames, prev_frames, instruction):
        cur = extract_features(extractor, frames)
        if len(frames) > 1 and np.array_equal(prev_frames[1:], frames[:-1]):
            prev = np.concatenate([extract_features(extractor, prev_frames[:1]), cur[:-1]])
        else:
            prev = extract_features(extractor, prev_frames)
        text = torch.from_numpy(table.lookup([instruction] * len(frames)))
        with torch.no_grad():
            _, logits = reward_model.head(torch.from_numpy(cur), torch.from_numpy(prev), text)
            return expected_steps_to_go(logits, reward_model.stg_values).numpy()
    return d_fn


def calibrate_run(out: Path, paths: list[Path], val_eps: np.ndarray, table, cfg: SFTConfig,
                  robot: tuple[str, dict], image_size: int, rollouts_val: list | None = None) -> dict:
    """Calibrate (s, k) of the success detector (``efm_ros.learn.calibrate``) with the selected
    reward model on the held-out demonstrations and, for demos of a simulated robot (``robot`` =
    (backend, kwargs); ("", {}) for none), on failed rollouts of that robot; ``rollouts_val`` (path,
    mark) pairs of held-out marked policy rollouts join them: reached ones cut at their goal step
    as positives, the others as negatives."""
    from efm_ros.data import read_episode
    from efm_ros.learn.calibrate import calibrate_model, plot_roc, sim_failure_rollouts
    from efm_ros.model.export import OnnxFeatureExtractor
    from efm_ros.model.network import load_checkpoint

    t0 = time.perf_counter()
    reward_model = load_checkpoint(out / "reward_model.safetensors")
    extractor = OnnxFeatureExtractor(reward_model, threads=cfg.threads)
    demos = [read_episode(paths[i]) for i in val_eps]
    backend, backend_args = robot
    n_fail = cfg.calibration_failures if backend else 0
    failures = sim_failure_rollouts(n_fail, seed=cfg.seed, image_size=image_size, robot=backend,
                                    robot_kwargs=backend_args) if n_fail else []
    for path, mark in rollouts_val or []:
        ep = read_episode(path)
        if mark.outcome == "success":
            demos.append((ep.frames[:mark.goal_step + 1], ep.instruction))
        else:
            failures.append((ep.frames, ep.instruction))
    cal = calibrate_model(features_d_fn(reward_model, extractor, table), demos, failures, progress=cfg.progress)
    plot_roc(cal, out / "success_roc.png")
    result = cal.train_meta()
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def build_parser() -> argparse.ArgumentParser:
    d = SFTConfig()
    p = argparse.ArgumentParser(prog="efm-ros train-sft", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demos", required=True, help="directory of demonstration bags")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--steps", type=int, default=d.steps, help=f"optimizer steps (default {d.steps})")
    p.add_argument("--epochs", type=float, default=None, help="passes over the BC examples (overrides --steps)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"half BC, half steps-to-go (default {d.batch_size})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate (default {d.lr})")
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps, help=f"(default {d.warmup_steps})")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help=f"(default {d.weight_decay})")
    p.add_argument("--seed", type=int, default=d.seed, help="split, init and batch-order seed (default 0)")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction, help=f"(default {d.val_fraction})")
    p.add_argument("--random-init", action="store_true", help="randomly initialised backbone (ablation)")
    p.add_argument("--max-episodes", type=int, default=None, help="use the first N episodes only")
    p.add_argument("--future-actions", type=int, default=d.future_actions,
                   help="also predict the demo's next K action tokens from the policy's hidden layer "
                        "(an auxiliary, a departure from the paper; default 0 = off)")
    p.add_argument("--future-actions-weight", type=float, default=d.future_actions_weight,
                   help=f"weight of that auxiliary (default {d.future_actions_weight})")
    p.add_argument("--goal-frame-weight", type=float, default=d.goal_frame_weight,
                   help="weight of the auxiliary hindsight loss: the keypoint map predicts how the demo's goal frame "
                        "differs from the current one (a departure from the paper; default 0 = off)")
    p.add_argument("--shift-views", type=int, default=d.shift_views,
                   help="also train on this many randomly shifted copies of every demo, one shift per episode "
                        "(augmentation, a departure from the paper; each copy is a feature cache; default 0 = off)")
    p.add_argument("--shift-pixels", type=int, default=d.shift_pixels,
                   help=f"the largest shift of --shift-views, in pixels (default {d.shift_pixels})")
    p.add_argument("--symmetries", nargs="+", default=[], metavar="NAME",
                   help="also train on every demo mirrored / turned by these symmetries of the view, for a camera "
                        "looking straight down on a scene that looks the same so (augmentation, a departure from the "
                        "paper; names: " + ", ".join(sorted(SYMMETRIES)) + ", or all; default none)")
    p.add_argument("--symmetry-axes", type=int, nargs=2, default=list(d.symmetry_axes), metavar=("X", "Y"),
                   help="the action dimensions that move the arm along image x (right) and y (down) (default 0 1)")
    p.add_argument("--symmetry-phrases", default=None, metavar="JSON",
                   help='per symmetry, how instruction words change, e.g. \'{"flip_lr": {"left": "right", "right": '
                        '"left"}}\' ({} for none); needed for a robot without transformed_instruction')
    p.add_argument("--eval-every", type=int, default=d.eval_every, help=f"steps between validations (default {d.eval_every})")
    p.add_argument("--calibration-failures", type=int, default=d.calibration_failures,
                   help=f"failed rollouts for calibrating s (default {d.calibration_failures})")
    p.add_argument("--cache-dir", default=None, help="feature cache directory (default RUN/features)")
    p.add_argument("--threads", type=int, default=d.threads, help="torch/ORT threads (default: theirs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--topic-map", default=None, metavar="YAML",
                   help="--demos are your own rosbag2 recordings: where their camera, commands, instruction and "
                        "episode boundaries are (efm_ros/data/foreign.py; `efm-ros import-bags --help`)")
    p.add_argument("--robot", default=None, metavar="PKG.MOD:CLASS",
                   help="simulated robot backend the demos come from (default: the one recorded in the bags; "
                        "none for real-arm bags): its instructions are embedded, its failed rollouts calibrate s")
    p.add_argument("--robot-args", default=None, metavar="JSON",
                   help="constructor arguments of --robot, a JSON object (default: the ones recorded in the bags)")
    p.add_argument("--rollouts", nargs="+", default=None, metavar="DIR",
                   help="recorded policy rollouts with marks (efm-ros mark; eval --record in simulation): steps-to-go "
                        "trains on the marked ones too, BC never (default: none)")
    p.add_argument("--model-config", default="{}",
                   help='EFMConfig overrides as JSON, e.g. \'{"trunk": "flatten"}\' (default: none)')
    p.epilog = __doc__[__doc__.index("One network"):]
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        robot_args = None if args.robot_args is None else parse_robot_args(args.robot_args)
    except ValueError as exc:
        print(f"train-sft: {exc}", file=sys.stderr)
        return 2
    cfg = SFTConfig(demos=args.demos, out=args.out, steps=args.steps, epochs=args.epochs, batch_size=args.batch_size,
                    lr=args.lr, warmup_steps=args.warmup_steps, weight_decay=args.weight_decay, seed=args.seed,
                    val_fraction=args.val_fraction, random_init=args.random_init, max_episodes=args.max_episodes,
                    goal_frame_weight=args.goal_frame_weight, future_actions=args.future_actions,
                    future_actions_weight=args.future_actions_weight, shift_views=args.shift_views,
                    shift_pixels=args.shift_pixels,
                    symmetries=list(args.symmetries),
                    symmetry_axes=tuple(args.symmetry_axes),
                    symmetry_phrases=None if args.symmetry_phrases is None else json.loads(args.symmetry_phrases),
                    eval_every=args.eval_every, calibration_failures=args.calibration_failures,
                    cache_dir=args.cache_dir, threads=args.threads, progress=not args.no_progress,
                    model_config=json.loads(args.model_config), robot=args.robot,
                    robot_args=robot_args, topic_map=args.topic_map, rollouts=args.rollouts)
    if cfg.steps < 1 or cfg.eval_every < 1 or not 0 < cfg.val_fraction < 1 or cfg.batch_size < 2:
        print("train-sft: --steps, --eval-every >= 1, --batch-size >= 2, --val-fraction in (0, 1)", file=sys.stderr)
        return 2
    if cfg.shift_views < 0 or (cfg.shift_views and cfg.shift_pixels < 1):
        print("train-sft: --shift-views >= 0, and --shift-pixels >= 1 with it", file=sys.stderr)
        return 2
    try:
        resolve_symmetries(cfg.symmetries)
    except SymmetryError as exc:
        print(f"train-sft: --symmetries: {exc}", file=sys.stderr)
        return 2
    if cfg.rollouts and cfg.goal_frame_weight > 0:
        print("train-sft: --rollouts with --goal-frame-weight: a rollout marked failed has no goal frame", file=sys.stderr)
        return 2
    from efm_ros.data.foreign import ForeignBagError
    from efm_ros.data.marks import MarkError

    try:
        meta = train(cfg)
    except (ForeignBagError, FileNotFoundError, MarkError, SymmetryError) as exc:
        print(f"train-sft: {exc}", file=sys.stderr)
        return 2
    m = meta["metrics"]
    print(f"train-sft: {cfg.out}: policy step {m['policy_step']} (val BC {m['val_bc_loss']:.3f}, token acc "
          f"{m['val_token_acc']:.3f}), reward model step {m['reward_model_step']} (val stg {m['val_stg_loss']:.3f}, "
          f"d MAE {m['val_d_mae']:.2f}); s = {meta['success_threshold']:.2f}, k = {meta['success_k']} (episode precision "
          f"{_fmt(m['success_episode_precision'])}, recall {_fmt(m['success_episode_recall'])}); {m['train_samples_per_s']:.0f} samples/s, "
          f"{m['total_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
