"""Rung 0 of the Stage-2 ladder: the authors' pointmass notebook with OUR Stage-1 and Stage-2 code.

    efm-ros experiment ladder --rung pointmass --out runs/ladder/pointmass

What is ours and shared with the camera robots (nothing here re-implements a loss or an update):
* the network: :class:`~efm_ros.model.network.EFM` with the "state" backbone (standardised
  [pos, vel, goal]) and the "mlp" trunk (3 × 256 ReLU, the notebook's tower size), one network with
  both heads, actions tokenised per dimension (RT-2 style) instead of the notebook's Gaussian;
* Stage 1: :func:`efm_ros.learn.sft.fit_heads` (L_BC + L_stg, batches split evenly, best-BC
  checkpoint = policy, best-steps-to-go checkpoint = reward model);
* Stage 2: :class:`efm_ros.learn.improve.ReinforceLearner` (the update ``efm-ros improve`` runs) on an
  :class:`~efm_ros.learn.buffer.OnPolicyBuffer`, rewards and returns from
  :func:`~efm_ros.learn.objectives.episode_returns` with the frozen reward model's d.

As in the notebook, rollouts end on ground-truth success or after 140 steps (oracle termination:
this rung tests the learner, not the detector), and the reward is the learned d's drop.
The target (PAPER.md §4.7): SFT ≈ 92 % → SI ≈ 100 %, episode length ≈ 69 → 13 steps.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from efm_ros.learn.improve import ImproveConfig
from efm_ros.sim import pointmass as pm

ACTION_LIMIT = 5e-4
"""action bins span ±ACTION_LIMIT per dimension (the PD demonstrator's largest action is 4.9e-4)"""


@dataclass(frozen=True)
class StateTask:
    """A task with PRIVILEGED state observations for the state rungs of the ladder.

    ``make_env(n, seed)`` returns ``n`` copies stepped together: ``reset(rows=None) -> obs``,
    ``observe() -> (n, state_dim) float32``, ``step(actions (n, D))``, ``success() -> (n,) bool``
    and, optionally, ``oracle_d() -> (n,)`` (a privileged steps-to-go, the oracle reward).
    ``demonstrations(num, seed)`` returns successful :class:`~efm_ros.sim.pointmass.StateEpisode`.
    """

    name: str
    state_dim: int
    action_limit: float
    max_steps: int
    make_env: Callable[[int, int], Any]
    demonstrations: Callable[[int, int], list]


def pointmass_task(waypoints: int = 5) -> StateTask:
    """The authors' pointmass (rung 0)."""
    return StateTask("pointmass", pm.STATE_DIM, ACTION_LIMIT, pm.MAX_STEPS, pm.PointMass,
                     lambda num, seed: pm.demonstrations(num, seed=seed, waypoints=waypoints))


@dataclass
class PointmassConfig:
    """Rung 0 at the notebook's scale by default; the CI test runs a smaller one."""

    demos: int = 10_000
    """PD demonstrations (notebook: 10,000)"""
    waypoints: int = 5
    """random waypoints each demonstration visits before its goal (notebook: 5)"""
    sft_steps: int = 20_000
    """Stage-1 optimizer steps (notebook: 32,768 at batch 256)"""
    sft_batch: int = 256
    """Stage-1 batch, split evenly between BC and steps-to-go"""
    sft_lr: float = 3e-4
    """Stage-1 AdamW learning rate (notebook: Adam 3e-4)"""
    action_bins: int = 41
    """tokens per action dimension over ±ACTION_LIMIT"""
    hidden: int = 256
    mlp_layers: int = 3
    si_transitions: int = 131_072
    """Stage-2 practice budget in transitions (notebook: 64 iterations of 2048 = 131,072)"""
    improve: ImproveConfig = field(default_factory=ImproveConfig)
    """the Stage-2 learner's hyper-parameters (the paper's by default: γ 0.9, c 0.05, B 64, N 16)"""
    envs: int = 64
    """pointmasses stepped together in a rollout"""
    eval_episodes: int = 500
    seed: int = 0
    threads: int = 0
    progress: bool = True
    stage1_cache: str = ""
    """a directory where Stage-1 results are kept by their inputs (task, demonstrations, Stage-1
    hyper-parameters, seed): learner variants from the same start then skip Stage 1. "" = none"""


def _model_config(cfg: PointmassConfig, states: np.ndarray, task: StateTask | None = None):
    from efm_ros.model.network import EFMConfig

    task = task or pointmass_task(cfg.waypoints)
    return EFMConfig(backbone="state", state_dim=task.state_dim, state_mean=tuple(map(float, states.mean(0))),
                     state_std=tuple(map(float, states.std(0) + 1e-8)), trunk="mlp", mlp_layers=cfg.mlp_layers,
                     hidden=cfg.hidden, history=False, text_dim=1, dropout=0.0, pretrained=False,
                     action_dims=2, action_bins=cfg.action_bins, action_low=-task.action_limit,
                     action_high=task.action_limit, stg_bins=50, stg_t_max=task.max_steps)


STAGE1_FIELDS = ("demos", "waypoints", "sft_steps", "sft_batch", "sft_lr", "action_bins", "hidden", "mlp_layers",
                 "seed")
"""the PointmassConfig fields that determine Stage 1 (the key of ``stage1_cache``)"""


def stage1_key(cfg: PointmassConfig, task: StateTask) -> str:
    """What a Stage-1 result depends on, hashed: the task and :data:`STAGE1_FIELDS`."""
    import hashlib

    what = {"task": task.name, "state_dim": task.state_dim, "action_limit": task.action_limit,
            "max_steps": task.max_steps, **{f: getattr(cfg, f) for f in STAGE1_FIELDS}}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


STAGE1_FILES = ("policy.safetensors", "reward_model.safetensors", "summary.json")


def stage1(cfg: PointmassConfig, out: Path, task: StateTask | None = None):
    """Demonstrations -> our Stage 1 -> (policy EFM, frozen reward EFM, train summary).

    With ``cfg.stage1_cache`` a result trained before from the same inputs is reused (copied into
    ``out``), and a new one is kept there (written whole, then renamed into place)."""
    import os
    import shutil
    import tempfile

    from efm_ros.model.network import load_checkpoint

    task = task or pointmass_task(cfg.waypoints)
    out.mkdir(parents=True, exist_ok=True)
    cached = Path(cfg.stage1_cache) / f"{task.name}-{stage1_key(cfg, task)}" if cfg.stage1_cache else None
    if cached is not None and all((cached / f).exists() for f in STAGE1_FILES):
        for f in STAGE1_FILES:
            shutil.copy2(cached / f, out / f)
        summary = {**json.loads((out / "summary.json").read_text()), "from_cache": str(cached)}
        print(f"{task.name} Stage 1: reused {cached}", flush=True)
        return load_checkpoint(out / "policy.safetensors"), load_checkpoint(out / "reward_model.safetensors"), summary
    policy, reward, summary = _train_stage1(cfg, out, task)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=cached.parent, prefix=f".{cached.name}."))
        for f in STAGE1_FILES:
            shutil.copy2(out / f, tmp / f)
        try:
            os.rename(tmp, cached)
        except OSError:            # another run kept the same result first
            shutil.rmtree(tmp, ignore_errors=True)
    return policy, reward, summary


def _train_stage1(cfg: PointmassConfig, out: Path, task: StateTask):
    import torch

    from efm_ros.learn.features import EpisodeFeatures
    from efm_ros.learn.sft import SFTConfig, bc_examples, fit_heads, split_episodes, stg_examples
    from efm_ros.model.network import EFM, load_checkpoint

    torch.manual_seed(cfg.seed)
    demos = task.demonstrations(cfg.demos, cfg.seed)
    states = np.concatenate([e.states for e in demos])
    lengths = np.array([len(e.actions) for e in demos], np.int64)
    model = EFM(_model_config(cfg, states, task))
    bins = model.config.action_spec
    tokens = bins.encode(np.concatenate([e.actions for e in demos]))
    starts = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]]).astype(np.int64)
    fs = EpisodeFeatures(features=states, episode_ids=[f"{task.name}_{i:05d}" for i in range(len(demos))],
                         instructions=[task.name] * len(demos), starts=starts, lengths=lengths, tokens=tokens,
                         token_starts=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64), meta={})
    text_rows = np.zeros(len(demos), np.int64)
    train_eps, val_eps = split_episodes(len(fs), 0.05, cfg.seed)
    sb = model.config.stg_spec
    scfg = SFTConfig(out=str(out), steps=cfg.sft_steps, batch_size=cfg.sft_batch, lr=cfg.sft_lr, weight_decay=0.0,
                     seed=cfg.seed, eval_every=max(1, cfg.sft_steps // 20), threads=cfg.threads, progress=cfg.progress)
    with torch.no_grad():
        feats = model.backbone_features(torch.from_numpy(states))       # the state backbone: standardised
    rows, best, seconds = fit_heads(model, feats, torch.ones(1, 1),
                                    (bc_examples(fs, train_eps, text_rows), stg_examples(fs, train_eps, text_rows, sb)),
                                    (bc_examples(fs, val_eps, text_rows), stg_examples(fs, val_eps, text_rows, sb)),
                                    scfg, cfg.sft_steps, out)
    policy, reward = load_checkpoint(out / "policy.safetensors"), load_checkpoint(out / "reward_model.safetensors")
    summary = {"demos": len(demos), "demo_mean_steps": float(lengths.mean()), "train_seconds": seconds,
               "policy_step": best["val_bc_loss"]["step"], "val_bc_loss": best["val_bc_loss"]["val_bc_loss"],
               "reward_model_step": best["val_stg_loss"]["step"], "val_d_mae": best["val_stg_loss"]["val_d_mae"]}
    return policy, reward, summary


def rollouts(policy, reward, episodes: int, seed: int, envs: int = 64, greedy: bool = False,
             task: StateTask | None = None) -> list[dict]:
    """``episodes`` episodes of ``policy`` (ground-truth termination or the task's step limit), each
    with its states, tokens, the frozen reward model's d on every frame (and the task's oracle d
    where it has one), and ground-truth success."""
    import torch

    from efm_ros.learn.actors import ACTION_STREAM
    from efm_ros.learn.objectives import expected_steps_to_go

    rng = np.random.default_rng([seed, ACTION_STREAM])  # action sampling: its own stream
    task = task or pointmass_task()
    env = task.make_env(envs, seed)                       # layouts: the env's stream
    oracle = getattr(env, "oracle_d", None)
    bins = policy.config.action_spec
    values = torch.from_numpy(reward.config.stg_spec.values)
    text = torch.ones(envs, 1)
    out: list[dict] = []
    obs = env.reset()
    live = np.ones(envs, bool)
    started = envs
    od = oracle() if oracle else None
    traj = [{"states": [obs[i]], "tokens": [], "oracle_d": [od[i]] if oracle else []} for i in range(envs)]
    steps = np.zeros(envs, np.int64)
    with torch.no_grad():
        while len(out) < episodes:
            f = policy.backbone_features(torch.from_numpy(obs))
            logits = policy.head(f, f, text)[0]                                      # (E, 2, K)
            if greedy:
                tok = logits.argmax(-1).numpy()
            else:
                p = logits.softmax(-1).numpy().astype(np.float64)
                u = rng.random(p.shape[:2] + (1,))
                tok = (p.cumsum(-1) < u).sum(-1).clip(max=bins.num_bins - 1)
            env.step(bins.decode(tok))
            obs = env.observe()
            od = oracle() if oracle else None
            steps += 1
            success = env.success()
            ended = (success | (steps >= task.max_steps)) & live
            for i in range(envs):
                if not live[i]:
                    continue
                traj[i]["tokens"].append(tok[i])
                traj[i]["states"].append(obs[i])
                if oracle:
                    traj[i]["oracle_d"].append(od[i])
                if ended[i]:
                    s = np.stack(traj[i]["states"])
                    f = reward.backbone_features(torch.from_numpy(s))
                    d = expected_steps_to_go(reward.head(f, f, torch.ones(len(s), 1))[1], values)   # d(o, g)
                    out.append({"states": s, "tokens": np.stack(traj[i]["tokens"]).astype(np.int64),
                                "d": d.numpy().astype(np.float64), "success": bool(success[i]), "steps": int(steps[i])})
                    if oracle:
                        out[-1]["oracle_d"] = np.asarray(traj[i]["oracle_d"], np.float64)
                    if started < episodes:
                        env.reset([i])
                        obs[i] = env.observe()[i]
                        traj[i] = {"states": [obs[i]], "tokens": [], "oracle_d": [oracle()[i]] if oracle else []}
                        steps[i] = 0
                        started += 1
                    else:
                        live[i] = False
    return out[:episodes]


def summarise(eps: list[dict]) -> dict:
    from efm_ros.learn.evaluate import wilson_interval

    wins = sum(e["success"] for e in eps)
    return {"success": wins / len(eps), "ci95": list(wilson_interval(wins, len(eps))), "episodes": len(eps),
            "mean_length": float(np.mean([e["steps"] for e in eps])),
            "mean_length_successes": float(np.mean([e["steps"] for e in eps if e["success"]])) if wins else None}


def stage2(policy, reward, cfg: PointmassConfig, log=print, task: StateTask | None = None,
           oracle_reward: bool = False) -> list[dict]:
    """Our Stage 2 on a state task: collect on-policy episodes until the buffer holds N·B
    transitions, one ReinforceLearner update, repeat until ``si_transitions`` are spent.
    The reward is the frozen reward model's d, or with ``oracle_reward`` the task's privileged d."""
    from efm_ros.learn.buffer import OnPolicyBuffer
    from efm_ros.learn.improve import ReinforceLearner
    from efm_ros.learn.objectives import episode_returns

    import torch

    icfg = cfg.improve
    learner = ReinforceLearner(policy, icfg)
    buffer = OnPolicyBuffer(version="v0")
    need = icfg.updates * icfg.batch_size
    history, spent, it = [], 0, 0
    per_wave = max(1, need // 100)
    while spent < cfg.si_transitions:
        eps, first_returns = [], []
        while not buffer.ready(icfg.updates, icfg.batch_size):
            wave = rollouts(policy, reward, per_wave, seed=cfg.seed * 1_000_003 + 7919 * it + len(eps),
                            envs=min(cfg.envs, per_wave), task=task)
            for e in wave:
                T = e["steps"]
                _, returns = episode_returns(e["oracle_d" if oracle_reward else "d"], icfg.gamma)
                first_returns.append(float(returns[0]))
                with torch.no_grad():
                    f = policy.backbone_features(torch.from_numpy(e["states"][:T])).numpy()
                buffer.add_episode(f, f, np.ones((T, 1), np.float32), e["tokens"], returns)
            eps += wave
        spent += len(buffer)
        stats = learner.update(buffer.arrays())
        it += 1
        row = {"iteration": it, "transitions_spent": spent, **summarise(eps), **stats,
               "mean_return_0": float(np.mean(first_returns))}
        history.append(row)
        buffer.clear(version=f"v{it}")
        if log:
            log(f"  it {it:3d}: success {row['success']:.2f}, length {row['mean_length']:.1f}, "
                f"entropy {row['train_entropy']:.2f}, |g| {row['grad_norm']:.2f}")
    return history


def run(cfg: PointmassConfig, out: str | Path, task: StateTask | None = None, oracle_reward: bool = False) -> dict:
    """Stage 1, evaluate, Stage 2, evaluate; writes OUT/results.json, OUT/curves.png and the practised
    policy OUT/policy_after.safetensors (``tools/temperature_probe.py`` and ``load_checkpoint`` read it)."""
    import torch

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(out)
    t0 = time.monotonic()
    task = task or pointmass_task(cfg.waypoints)
    policy, reward, s1 = stage1(cfg, out / "stage1", task)
    eval_seed = 55_000 + cfg.seed
    before = summarise(rollouts(policy, reward, cfg.eval_episodes, seed=eval_seed, envs=cfg.envs, task=task))
    print(f"{task.name} SFT: success {before['success']:.3f}, length {before['mean_length']:.1f}", flush=True)
    history = stage2(policy, reward, cfg, task=task, oracle_reward=oracle_reward)
    from efm_ros.model.network import save_checkpoint

    save_checkpoint(policy, out / "policy_after.safetensors")   # the practised policy, to examine afterwards
    after = summarise(rollouts(policy, reward, cfg.eval_episodes, seed=eval_seed, envs=cfg.envs, task=task))
    print(f"{task.name} SFT+SI: success {after['success']:.3f}, length {after['mean_length']:.1f}", flush=True)
    res = {"rung": task.name, "reward": "oracle" if oracle_reward else "model", "config": {**dataclasses.asdict(cfg)}, "stage1": s1, "before": before, "after": after,
           "history": history, "seconds": time.monotonic() - t0}
    (out / "results.json").write_text(json.dumps(res, indent=1, default=float))
    _plot(history, before, after, out / "curves.png")
    return res


def _plot(history, before, after, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["transitions_spent"] for r in history]
    fig, ax = plt.subplots(1, 3, figsize=(12, 3.2))
    ax[0].plot(x, [r["success"] for r in history], marker=".")
    ax[0].axhline(before["success"], color="grey", ls="--", label="SFT (eval)")
    ax[0].axhline(after["success"], color="C1", ls="--", label="SFT+SI (eval)")
    ax[0].set_title("ground-truth success (practice episodes)", fontsize=9)
    ax[0].legend(fontsize=8)
    ax[1].plot(x, [r["mean_length"] for r in history], marker=".")
    ax[1].set_title("episode length (steps)", fontsize=9)
    ax[2].plot(x, [r["train_entropy"] for r in history], marker=".")
    ax[2].set_title("policy entropy (nats)", fontsize=9)
    for a in ax:
        a.set_xlabel("practice transitions")
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
