"""Stage 2: Self-Improvement by on-policy REINFORCE on the fleet's own episodes (paper §2, Alg. 1).

    efm-ros improve --episodes-dir episodes --policy models/efm_sft --reward-model models/efm_sft --out runs/si

The trainer reads each COMPLETE episode bag as the loggers commit it (bags appear atomically),
and for every episode whose actions all carry the current policy version (strictly on-policy):

  1. recomputes d(o_t, g) for every frame with the FROZEN reward model (``reward.onnx`` of
     ``--reward-model``, never updated) and checks it against what the live reward node published,
  2. rewards r_t = d(o_t, g) − d(o_{t+1}, g) and returns R_t = Σ γ^{i−t} r_i, γ = 0.9,
  3. adds (o_t, o_{t−1}, g, a_t, R_t) to the buffer.

Once the buffer holds ≥ N·B transitions (16 · 64 = 1024) it takes N AdamW steps on minibatches of
B drawn without replacement, each minimising mean[−c · R_t · log π(a_t | o_t, g)], c = 0.05
(:func:`~efm_ros.learn.objectives.reinforce_loss`), with the vision backbone frozen; clears the
buffer; and exports the new policy as ``RUN/versions/vNNNN`` (verified, renamed into place
atomically) — the policy nodes watching that directory hot-swap to it. Episodes of older
versions that arrive afterwards are counted and discarded. Ground-truth success (simulation
only, topic ``eval/success``) is recorded for the metrics and never used for reward or stopping.

Over-optimisation guard (the paper's stated limitation: training past the peak lowers success):
every iteration's version is kept, and ``RUN/best.json`` names the version with the best score,
averaged over a window of iterations, by a measure other than the optimised reward:

* with ``--audit-model`` (recommended, and what we recommend for real robots, where there is no
  ground truth): an independent steps-to-go model that only judges and never gives reward, e.g. a
  Stage-1 model trained with another seed or on demonstrations held out from the reward model.
  The score is its *progress*, d_audit(o_0, g) − d_audit(o_T, g) averaged over episodes: the
  policy cannot raise it by exploiting the quirks of the reward model it is optimised against.
* without one: the *detector* success rate (episodes ended by d ≤ s for k ticks, as judged live),
  ties broken by shorter episodes. Not the optimised sum of rewards, but from the same model, so a
  policy that exploits the reward model can fool it too (docs/results.md shows it happening).

In simulation the ground-truth best is reported next to it for comparison, never used.

Multi-process / multi-GPU (torch.distributed DDP, an existing engine):

    torchrun --nproc_per_node=2 -m efm_ros.learn.improve --episodes-dir ... --out ...

Rank 0 reads episodes and builds the buffer; each update's minibatch (same indices on every
rank) is split across ranks, DDP averages the gradients, so the result equals one process
with batch B. Only rank 0 writes versions and metrics.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from efm_ros.data.episode import Episode
from efm_ros.learn.buffer import OnPolicyBuffer, episode_returns, is_unfinished, minibatch_indices, on_policy_filter
from efm_ros.learn.calibrate import previous_frames
from efm_ros.learn.objectives import action_entropy, action_kl, action_log_prob, consecutive_success, reinforce_loss


@dataclass
class ImproveConfig:
    """Stage-2 hyper-parameters; defaults are the paper's where it gives them (§2.2, App. A.3)."""

    gamma: float = 0.9
    """discount of the Monte-Carlo return (paper)"""
    c: float = 0.05
    """loss scale: L = −c · R · log π (paper; keeps c·R within about [−1, 1])"""
    batch_size: int = 64
    """B, transitions per gradient step (paper)"""
    updates: int = 16
    """N, gradient steps per iteration; the buffer must hold ≥ N·B transitions (paper)"""
    lr: float = 1e-4
    """AdamW learning rate (not reported by the paper; 1e-4 is what the Stage-2 pilot used, docs/results.md)"""
    adam_eps: float = 1e-8
    """AdamW's ε (torch's default; not reported by the paper, whose pointmass port uses 1e-7). A
    larger ε makes parameters whose gradient is far below ε move SGD-like (by lr·g/ε) instead of
    by a full lr step whatever their size (docs/results.md, the shuffled-returns control)"""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay (interacts with c, see PAPER.md §2.2)"""
    max_grad_norm: float = 0.0
    """gradient clipping of the global norm; 0 = none (the paper clips nothing; at 1.0 it clipped almost
    every learned-reward update, pre-clip norms 1.3-2.5, docs/results.md)"""
    train_layers: str = "all"
    """which part of the head Stage 2 trains: "all" (every head layer; the paper trains all but the
    ViT), "mlp" (only the MLP, instruction projection and action head: the perception layers
    before them, e.g. the keypoint convolutions, stay as Stage 1 left them), "action_head"
    (only the final linear layer) or "tilt" (only an exponential tilt of each action dimension's
    categorical, :class:`ActionTilt`; folded into the action head after every step):
    :data:`TRAIN_LAYERS`"""
    tilt_degree: int = 2
    """with ``train_layers: "tilt"``: the tilt's polynomial degree in the bin centre (2: shift and
    spread; higher degrees also change skew and shape)"""
    tilt_temperature: bool = False
    """with ``train_layers: "tilt"``: the tilt also learns each action dimension's inverse
    temperature, a scale exp(ρ_d) of that dimension's logits (sharpen or flatten the policy
    around its own preferences; the c² term can only sharpen around the middle bin). A
    departure; docs/results.md, state rung"""
    tilt_temperature_lr: float = 1.0
    """with ``tilt_temperature``: the temperature's learning rate as a multiple of the tilt's (Adam
    moves each of the 2 temperature parameters as far per step as each of the ~1,000 tilt weights;
    a departure, docs/results.md, state rung)"""
    returns: str = "paper"
    """how the Monte-Carlo returns enter the loss (:data:`RETURN_TRANSFORMS`): "paper" = R_t as is;
    a named departure (e.g. "standardise") must be justified by the ladder (docs/results.md)"""
    step_by_agreement: bool = False
    """with ``target_kl``: scale each iteration's KL target by the agreement of the REINFORCE
    gradient between the two halves of the buffer's episodes, cos(g_first, g_second) clipped to
    [0, 1], and take no step when they disagree (a departure; docs/results.md, state rung). The
    step is then as long as the buffer's evidence for its direction: full where the return carries
    a strong signal (the pointmass), short where it is mostly noise (the table)"""
    baseline: str = "none"
    """a per-state baseline subtracted from R_t before the update (a departure; "none" = the paper,
    whose only baseline is the one built into the progress reward): "ridge" = a ridge regression
    of R on the policy's own last hidden layer h(s) (the action head's input), fitted on one half
    of the buffer's episodes and applied to the other half and vice versa (cross-fitted, so a
    transition's baseline never saw its own return); the update reports its out-of-sample R²
    (``baseline_r2``). :data:`BASELINES`"""
    kl_coef: float = 0.0
    """β of a trust region (a departure; 0 = the paper): the loss adds β·KL(π_acting ‖ π_θ) averaged
    over the minibatch's states, π_acting = the version that collected the buffer"""
    target_kl: float = 0.0
    """the update size as a distance instead of a learning rate (a departure; 0 = the paper's fixed
    lr): each iteration stops its N steps once KL(π_acting ‖ π_θ) on the buffer's states exceeds
    this many nats per state, and the next iteration's lr adapts (÷ 1.5 when the target was reached
    within N/2 steps, × 1.5 when all N steps moved π by less than half of it; kept within
    [lr / 100, lr · 100]). Adam's step is the same ~lr per coordinate whatever the return's
    scale, mean and noise, so one lr moves the policy by 0.001 or 1 nat per update from one variant
    to the next (docs/results.md, the state rung); the KL is comparable across them"""
    best_window: int = 3
    """iterations averaged when choosing the best version (over-optimisation guard)"""
    audit_model: str = ""
    """an independent steps-to-go model that judges the best version (never gives reward); "" = none,
    the guard then uses the detector success rate (see the module docstring)"""
    signing_key: str = ""
    """Ed25519 private key (PEM, ``efm-ros keygen``) that signs every version before it appears;
    robots whose policy node has ``trusted_keys`` run only signed versions. "" = unsigned"""
    seed: int = 0
    """seed of minibatch sampling"""
    feature_threads: int = 0
    """ONNX Runtime threads for backbone features / reward inference (0: default)"""


def returns_as_is(returns: np.ndarray) -> np.ndarray:
    """The paper's REINFORCE (§2.2): the Monte-Carlo return R_t, no baseline beyond the one built
    into the progress reward (PAPER.md §2.4)."""
    return returns


def returns_standardised(returns: np.ndarray) -> np.ndarray:
    """Variance reduction (a departure): (R - mean) / std over the iteration's buffer."""
    return (returns - returns.mean()) / (returns.std() + 1e-8)


def returns_shuffled(returns: np.ndarray) -> np.ndarray:
    """A CONTROL for the ladder, never a learner: the buffer's returns permuted across its
    transitions. It keeps every statistic of the returns but breaks their link to the actions, so
    an update on it is what the optimiser does to the policy from noise alone."""
    return np.random.default_rng(len(returns)).permutation(returns)


#: ImproveConfig.returns -> how the buffer's returns are transformed before the update
RETURN_TRANSFORMS = {"paper": returns_as_is, "standardise": returns_standardised, "shuffled": returns_shuffled}


def ridge_baseline(hidden: np.ndarray, returns: np.ndarray, ridge: float = 1e-2) -> tuple[np.ndarray, float]:
    """Cross-fitted linear value baseline b(s) = w·[h(s), 1] (variance reduction, a departure):
    the rows are split into their first and second half (the buffer is in episode order, so the
    halves hold different episodes), each half's b comes from the ridge fit on the other half.
    ``ridge`` is relative to the mean eigenvalue of hᵀh. -> (b per row, out-of-sample R² of R)."""
    x = np.concatenate([hidden.astype(np.float64), np.ones((len(hidden), 1))], 1)
    y = np.asarray(returns, np.float64)
    half = len(y) // 2
    b = np.empty_like(y)
    for fit, apply in ((slice(0, half), slice(half, None)), (slice(half, None), slice(0, half))):
        a = x[fit].T @ x[fit]
        w = np.linalg.solve(a + ridge * np.trace(a) / len(a) * np.eye(len(a)), x[fit].T @ y[fit])
        b[apply] = x[apply] @ w
    r2 = 1.0 - float(np.mean((y - b) ** 2) / (np.var(y) + 1e-12))
    return b, r2


#: ImproveConfig.baseline -> None (no per-state baseline) or fn(hidden, returns) -> (b, R²)
BASELINES = {"none": None, "ridge": ridge_baseline}


def kl_to_acting(world: int, acting: torch.Tensor, logits: torch.Tensor) -> float:
    """Mean KL(π_acting ‖ π_θ) over the buffer's states, the same number on every rank (so that
    every rank stops the iteration at the same step)."""
    kl = action_kl(acting, logits).mean()
    if world > 1:
        _dist().all_reduce(kl)
        kl = kl / world
    return float(kl)


def _chunks(rows: slice, size: int):
    """``rows`` (a slice of the buffer) as slices of at most ``size`` rows."""
    return [slice(i, min(i + size, rows.stop)) for i in range(rows.start, rows.stop, size)]


def adapt_lr(lr: float, kl: float, steps: int, updates: int, target: float) -> float:
    """The next iteration's lr under ``target_kl``: smaller when this one reached the target within
    half its steps, larger when all of them moved π by less than half the target."""
    if kl > target and steps <= updates // 2:
        return lr / 1.5
    if kl < target / 2 and steps >= updates:
        return lr * 1.5
    return lr


class _Head(nn.Module):
    """The trainable part of the EFM as one module (what DDP wraps)."""

    def __init__(self, efm):
        super().__init__()
        self.efm = efm

    def forward(self, features_cur, features_prev, text):
        return self.efm.head(features_cur, features_prev, text)[0]  # action logits


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


#: Stage 2's trainable part of the head by ``ImproveConfig.train_layers``: parameter-name prefixes
#: of the trunk (None: all). Fewer parameters, less noise per step (docs/results.md, rung a).
TRAIN_LAYERS: dict[str, tuple[str, ...] | None] = {
    "all": None,
    "mlp": ("mlp.", "action_head.", "text_proj."),
    "action_head": ("action_head.",),
    "tilt": (),   # no trunk parameter: the learner trains an ActionTilt instead
}


class ActionTilt(nn.Module):
    """Stage 2 trains only a state-dependent exponential tilt of each action dimension's categorical
    (``train_layers: "tilt"``, a departure; docs/results.md, rung a):

        logit_{d,k}(s) += Σ_j φ_j(c_k) · β_{d,j}(s),   β_{d,j}(s) = V_{d,j} · [h(s), 1],

    with c_k the bin centres scaled to [−1, 1], φ_1 = c (shifts the mean) and φ_2 = c² (sharpens
    or widens), φ_j = c^j up to ``degree`` (2 by default), each centred over the bins, and h the
    action head's input. It is the action head's update restricted to a subspace of
    D·degree·(H+1) parameters (1,028 for 2 dimensions, degree 2 and H = 256,
    against 10,794 for the whole head), the directions in which a return moves an ordinal action
    distribution; the REINFORCE estimator is the paper's. Because the tilt is linear in [h, 1],
    :meth:`fold` adds it to the action head's weight and bias exactly and zeroes V, after every
    optimiser step: the policy stays a plain EFM (same export, same ONNX graph), and Adam's
    moments keep their meaning (the gradient w.r.t. V is the same function of the state).

    With ``temperature``, each dimension's logits are also scaled by exp(ρ_d) before the tilt is
    added, logit_d ← exp(ρ_d) · logit_d + tilt_d: the direction in which a return sharpens the
    policy around where it already points. ρ is state-independent, so it folds exactly too
    (weight and bias of dimension d scaled by exp(ρ_d)); D more parameters."""

    def __init__(self, action_head: nn.Linear, action_shape: tuple[int, int], centers, degree: int = 2,
                 temperature: bool = False):
        super().__init__()
        dims, bins = action_shape
        if action_head.out_features != dims * bins:
            raise ValueError(f"action head has {action_head.out_features} outputs, not {dims}·{bins}")
        c = torch.as_tensor(np.asarray(centers, np.float64))
        c = (c - (c.max() + c.min()) / 2) / ((c.max() - c.min()) / 2 + 1e-12)     # [−1, 1]
        if not 1 <= degree < bins:
            raise ValueError(f"tilt degree must be in 1..{bins - 1}, got {degree}")
        phi = torch.stack([c ** j - (c ** j).mean() for j in range(1, degree + 1)], 1).float()   # (K, degree)
        self.register_buffer("phi", phi)
        self.head, self.dims, self.bins = action_head, dims, bins
        self.V = nn.Parameter(torch.zeros(dims, phi.shape[1], action_head.in_features + 1))
        self.rho = nn.Parameter(torch.zeros(dims)) if temperature else None

    def _scale(self) -> torch.Tensor:
        """Per output of the action head: exp(ρ_d) repeated over dimension d's bins, (D·K,)."""
        return self.rho.exp().repeat_interleave(self.bins)

    def delta(self) -> torch.Tensor:
        """The tilt as an addition to [weight | bias] of the action head: (D·K, H + 1)."""
        return torch.einsum("kj,djh->dkh", self.phi, self.V).reshape(self.dims * self.bins, -1)

    def _hook(self, module, inputs, out):
        dw = self.delta()
        if self.rho is not None:
            out = out * self._scale()
        return out + inputs[0] @ dw[:, :-1].T + dw[:, -1]

    def attach(self):
        """Add the tilt to the action head's output (a removable forward hook)."""
        return self.head.register_forward_hook(self._hook)

    @torch.no_grad()
    def fold(self) -> None:
        dw = self.delta()
        if self.rho is not None:
            scale = self._scale()
            self.head.weight *= scale[:, None]
            self.head.bias *= scale
            self.rho.zero_()
        self.head.weight += dw[:, :-1]
        self.head.bias += dw[:, -1]
        self.V.zero_()


class ReinforceLearner:
    """The Stage-2 update itself (§2.2, Algorithm 1), for any EFM (camera features or states): per
    iteration N AdamW steps, each on B transitions of the buffer drawn without replacement, minimising
    mean[−c · R_t · log π(a_t | o_t, g)]. The steps-to-go head gets no gradient (the frozen reward
    model is a separate network). :class:`Improver` (bags, the live fleet) and the in-process rungs
    of ``efm-ros experiment ladder`` use this one class."""

    def __init__(self, policy, config: ImproveConfig, *, rank: int = 0, world: int = 1):
        if config.returns not in RETURN_TRANSFORMS:
            raise ValueError(f"unknown returns transform {config.returns!r}; known: {sorted(RETURN_TRANSFORMS)}")
        if config.baseline not in BASELINES:
            raise ValueError(f"unknown baseline {config.baseline!r}; known: {sorted(BASELINES)}")
        self.config, self.rank, self.world = config, rank, world
        self.policy = policy
        if config.train_layers not in TRAIN_LAYERS:
            raise ValueError(f"train_layers must be one of {sorted(TRAIN_LAYERS)}, got {config.train_layers!r}")
        if config.tilt_temperature and config.train_layers != "tilt":
            raise ValueError("tilt_temperature needs train_layers: tilt")
        for name, p in policy.trunk.named_parameters():
            keep = TRAIN_LAYERS[config.train_layers] is None or name.startswith(TRAIN_LAYERS[config.train_layers])
            p.requires_grad_(keep and not name.startswith("stg_head."))
        self.head = _Head(policy)
        self.tilt = None
        if config.train_layers == "tilt":
            self.tilt = self.head.tilt = ActionTilt(policy.trunk.action_head, policy.trunk.action_shape,
                                                    policy.config.action_spec.centers, config.tilt_degree,
                                                    temperature=config.tilt_temperature)
        self.module = self.head
        if _dist():
            from torch.nn.parallel import DistributedDataParallel

            self.module = DistributedDataParallel(self.head)
        params = [p for p in self.head.parameters() if p.requires_grad]
        rho = [p for p in params if self.tilt is not None and p is self.tilt.rho]
        groups = [{"params": [p for p in params if not any(p is r for r in rho)], "lr_scale": 1.0}]
        if rho:
            groups.append({"params": rho, "lr_scale": config.tilt_temperature_lr})
        for g in groups:
            g["lr"] = config.lr * g["lr_scale"]
        self.optimizer = torch.optim.AdamW(groups, lr=config.lr, eps=config.adam_eps, weight_decay=config.weight_decay)
        self.rng = np.random.default_rng(config.seed)
        self.lr = config.lr
        self.defer_metrics = False
        """True: the post-update KL waits for :meth:`final_metrics` (the Improver calls it once the
        new version is published)"""
        self._pending = None

    def _set_lr(self, lr: float) -> None:
        self.lr = float(np.clip(lr, self.config.lr / 100, self.config.lr * 100))
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * group.get("lr_scale", 1.0)

    def acting_logits(self, features_cur, features_prev, text) -> np.ndarray:
        """π of the current (acting) policy on one episode's transitions: computed as episodes
        arrive, so the update does not spend its time on it (``data["acting_logits"]``)."""
        t = {"features_cur": torch.from_numpy(np.ascontiguousarray(features_cur)),
             "features_prev": torch.from_numpy(np.ascontiguousarray(features_prev)),
             "text": torch.from_numpy(np.ascontiguousarray(text, dtype=np.float32))}
        return self._logits_of_all(t).numpy()

    def final_metrics(self) -> dict:
        """With ``defer_metrics``: the KL the last update moved π by on its buffer's states, computed
        now (after the new version is out: a statistic, not on the fleet's critical path)."""
        if self._pending is None:
            return {}
        acting, t = self._pending
        self._pending = None
        kl = action_kl(acting, self._logits_of_all(t))
        return {"kl_update_mean": float(kl.mean()), "kl_update_max": float(kl.max())}

    def update(self, data: dict[str, np.ndarray]) -> dict:
        """data: features_cur, features_prev, text, tokens, returns (what OnPolicyBuffer.arrays
        gives), optionally acting_logits (π of the version that acted; else computed here)."""
        cfg = self.config
        n = len(data["tokens"])
        batches = minibatch_indices(n, cfg.updates, cfg.batch_size, self.rng)  # same on every rank (same seed)
        t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in data.items() if k != "returns"}
        returns = np.asarray(data["returns"], np.float64)
        extra = {}
        if BASELINES[cfg.baseline] is not None:
            b, extra["baseline_r2"] = BASELINES[cfg.baseline](self._hidden_of_all(t), returns)
            returns = returns - b
        t["returns"] = torch.from_numpy(RETURN_TRANSFORMS[cfg.returns](returns).astype(np.float32))
        hook = self.tilt.attach() if self.tilt is not None else None
        try:
            return {**self._update(t, batches, data), **extra}
        finally:
            if hook is not None:
                hook.remove()

    @torch.no_grad()
    def _hidden_of_all(self, t: dict) -> np.ndarray:
        """h(s), the action head's input, for every row of the buffer."""
        seen = []
        hook = self.policy.trunk.action_head.register_forward_hook(lambda m, i, o: seen.append(i[0].detach()))
        try:
            self._logits_of_all(t)
        finally:
            hook.remove()
        return torch.cat(seen).flatten(1).numpy()

    def _half_agreement(self, t: dict) -> float:
        """cos between the REINFORCE gradients of the buffer's first and second half (the buffer is
        in episode order, so the halves hold different episodes), over the trainable parameters."""
        params = [p for p in self.head.parameters() if p.requires_grad]
        n, grads = len(t["tokens"]), []
        for rows in (slice(0, n // 2), slice(n // 2, n)):
            loss = sum(reinforce_loss(action_log_prob(self.head(t["features_cur"][i].float(), t["features_prev"][i].float(),
                                                                t["text"][i]), t["tokens"][i]),
                                      t["returns"][i], c=self.config.c) * len(t["tokens"][i])
                       for i in _chunks(rows, 1024))
            grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)]))
        if self.world > 1:
            for g in grads:
                _dist().all_reduce(g)
        return float(torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0))

    def _update(self, t: dict, batches: list, data: dict) -> dict:
        cfg = self.config
        n = len(data["tokens"])
        # π of the version that acted, before this update
        acting = t.pop("acting_logits").float() if "acting_logits" in t else self._logits_of_all(t)
        losses, entropies, norms = [], [], []
        lr, steps, kl_now = self.lr, 0, 0.0
        target, extra = cfg.target_kl, {}
        if cfg.step_by_agreement and cfg.target_kl > 0:
            extra["agreement"] = agreement = self._half_agreement(t)
            target = cfg.target_kl * min(max(agreement, 0.0), 1.0)
            extra["target_kl"] = target
            if target <= 0:
                batches = []          # the halves disagree: no evidence for any direction, no step
        for idx in batches:
            idx = idx[self.rank::self.world]  # this rank's share; DDP averages the gradients
            logits = self.module(t["features_cur"][idx].float(), t["features_prev"][idx].float(), t["text"][idx])
            logp = action_log_prob(logits, t["tokens"][idx])
            loss = reinforce_loss(logp, t["returns"][idx], c=cfg.c)   # mean[−c · R · log π]
            if cfg.kl_coef > 0:                                       # departure: trust region
                loss = loss + cfg.kl_coef * action_kl(acting[idx], logits).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            params = [p for p in self.head.parameters() if p.grad is not None]
            norm = (torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm) if cfg.max_grad_norm > 0 else
                    torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params])))
            norms.append(float(norm))
            self.optimizer.step()
            if self.tilt is not None:
                self.tilt.fold()
            losses.append(float(loss.detach()))
            entropies.append(float(action_entropy(logits.detach()).mean()))
            steps += 1
            if target > 0:
                kl_now = kl_to_acting(self.world, acting, self._logits_of_all(t))
                if kl_now > target:
                    break
        if target > 0:
            self._set_lr(adapt_lr(lr, kl_now, steps, cfg.updates, target))
        raw = np.asarray(data["returns"], np.float64)
        self._pending = (acting, t)                      # how far the update moved π on the buffer's states
        moved = {} if self.defer_metrics else self.final_metrics()
        if not losses:                                   # no step taken
            losses = entropies = norms = [float("nan")]
        return {**extra, **moved, "loss": float(np.mean(losses)), "train_entropy": float(np.mean(entropies)),
                "lr": lr, "steps": steps,
                "grad_norm": float(np.mean(norms)), "grad_norm_max": float(np.max(norms)), "transitions": n,
                "return_mean": float(raw.mean()), "return_std": float(raw.std())}


    @torch.no_grad()
    def _logits_of_all(self, t: dict) -> torch.Tensor:
        return torch.cat([self.head(t["features_cur"][i].float(), t["features_prev"][i].float(), t["text"][i])
                          for i in _chunks(slice(0, len(t["features_cur"])), 1024)])


class Improver:
    """One Stage-2 learner: policy (trainable head), frozen reward model, buffer, versions."""

    def __init__(self, policy_dir: str | Path, reward_dir: str | Path, out_dir: str | Path,
                 config: ImproveConfig | None = None, *, ground_truth_topic: str = "eval/success",
                 reward_source=None, termination_by_oracle: bool = False):
        """reward_source: None (the product: d from the frozen reward model on the recorded frames),
        or, in experiment code only, a callable episode -> d per frame (the ladder's oracle rungs).
        termination_by_oracle (experiment code only: the ladder's rungs a and b): the episodes end
        on the privileged oracle's success, so a SUCCESS that the oracle ended is not checked
        against the reward model's d (which it need not show). Deliberately neither is an
        ImproveConfig field nor a command-line option."""
        from efm_ros.model.export import OnnxFeatureExtractor, load_model_checkpoints
        from efm_ros.model.runtime import load_model
        from efm_ros.model.text import InstructionTable

        self.config = config or ImproveConfig()
        self.out = Path(out_dir)
        self.rank = _dist().get_rank() if _dist() else 0
        self.world = _dist().get_world_size() if _dist() else 1
        if self.config.batch_size % self.world:
            raise ValueError(f"batch size {self.config.batch_size} is not divisible by {self.world} processes")
        self.policy_dir, self.reward_dir = Path(policy_dir), Path(reward_dir)
        self.policy, _ = load_model_checkpoints(self.policy_dir)       # verifies the manifest
        self.policy.eval()  # log π of the policy that acted: no dropout; the backbone stays frozen
        self.reward = load_model(self.reward_dir, intra_op_threads=self.config.feature_threads,
                                 functions=("reward",))  # ONNX, frozen
        self.audit = (load_model(self.config.audit_model, intra_op_threads=self.config.feature_threads,
                                 functions=("reward",))
                      if self.config.audit_model else None)  # judges versions only
        self.policy_manifest = json.loads((self.policy_dir / "manifest.json").read_text())
        self.instructions = InstructionTable.load(self.policy_dir / self.policy_manifest["instructions"]["file"])
        self.features = OnnxFeatureExtractor(self.policy, threads=self.config.feature_threads)
        self.version = self.policy_manifest["model_version"]
        self.learner = ReinforceLearner(self.policy, self.config, rank=self.rank, world=self.world)
        self.learner.defer_metrics = True    # published first, then measured (Improver.publish)
        self.buffer = OnPolicyBuffer(version=self.version)
        self.version_dirs = {self.version: str(self.policy_dir.resolve())}
        self.gt_topic = ground_truth_topic
        self.reward_source = reward_source
        self.termination_by_oracle = termination_by_oracle
        self.iteration = 0
        self.seen: set[str] = set()
        self.counts = {"episodes_used": 0, "episodes_off_policy": 0, "episodes_unfinished": 0, "episodes_empty": 0,
                       "episodes_bad": 0, "episodes_inconsistent": 0}
        self._episode_stats: list[dict] = []
        self.history: list[dict] = []
        self._reward_torch = None
        self._policy_template = None
        if self.rank == 0:
            self._reward_torch = load_model_checkpoints(self.reward_dir)[1]  # copied unchanged into each version
            from efm_ros.model.export import PolicyGraphTemplate
            # traced once, here, before any practice: each version then only refreshes its weights
            self._policy_template = PolicyGraphTemplate(self.policy)
            (self.out / "versions").mkdir(parents=True, exist_ok=True)
            self._write_json("config.json", {"improve": dataclasses.asdict(self.config), "policy": str(self.policy_dir),
                                             "reward_model": str(self.reward_dir), "initial_version": self.version,
                                             "reward_model_version": self.reward.version, "world_size": self.world})

    # -- episodes -> buffer ---------------------------------------------------------------------
    def add_episode(self, ep: Episode) -> str:
        """Use one recorded episode if it is complete and on-policy; returns what happened."""
        self.seen.add(ep.episode_id)
        if is_unfinished(ep.termination_reason):
            self.counts["episodes_unfinished"] += 1
            return "unfinished"
        if ep.num_steps == 0:  # the detector fired on the first frame: no action was taken, nothing to learn
            self.counts["episodes_empty"] += 1
            return "empty"
        ok, why = on_policy_filter(ep.policy_versions, self.version)
        if not ok:
            self.counts["episodes_off_policy"] += 1
            return f"skipped: {why}"
        frames = ep.frames
        prev = previous_frames(frames)                            # frame 0's previous frame is itself
        if self.reward_source is None:
            d, _ = self.reward.steps_to_go(frames, prev, ep.instruction)  # frozen reward model, offline
        else:
            d = self.reward_source(ep)                                     # experiment code: the ladder
        if self.reward_source is None and not self._success_is_real(ep, np.asarray(d, np.float64)):
            self.counts["episodes_inconsistent"] += 1
            return "inconsistent"
        rewards, returns = episode_returns(np.asarray(d, np.float64), self.config.gamma)
        feats = self.features(frames)
        emb = self.instructions.lookup([ep.instruction])[0]
        T = ep.num_steps
        cur, prev_feats, text = feats[:T], previous_frames(feats[:T]), np.repeat(emb[None], T, 0)
        self.buffer.add_episode(cur, prev_feats, text, ep.tokens.astype(np.int64), returns,
                                acting_logits=self.learner.acting_logits(cur, prev_feats, text))
        self.counts["episodes_used"] += 1
        audit_d = self.audit.steps_to_go(frames, prev, ep.instruction)[0] if self.audit is not None else None
        self._episode_stats.append(self._episode_metrics(ep, np.asarray(d), rewards, returns, audit_d))
        return "used"

    def _success_is_real(self, ep: Episode, d: np.ndarray) -> bool:
        """Episode facts come only from the robot's own steps_to_go node. The recorded StepsToGo
        stream must be this episode's (the node stamps its episode id on each message; a forged
        START opens a bag whose stream carries another id), and an episode that claims SUCCESS must
        show it in the frozen reward model's own d: the last k frames at d <= s (the manifest's s and
        k; a smaller s recorded by the node is used). Anyone on the graph can publish an event,
        nobody can make d small without the goal."""
        track = ep.steps_to_go
        ids = {i for i, p in zip(track.episode_ids, track.present) if p and i} if track is not None else set()
        if ids - {ep.episode_id}:
            print(f"improve: {ep.episode_id}: its StepsToGo stream belongs to {sorted(ids)}: the episode was not "
                  "opened by its robot's steps_to_go node; not trained on", file=sys.stderr)
            return False
        if ep.outcome != "success":
            return True
        if self.termination_by_oracle and ep.custom_data.get("termination") == "oracle":
            return True          # the ladder's oracle ended it: ground truth, not the detector's claim
        s, k = self.reward.success_threshold, max(int(self.reward.success_k), 1)
        recorded = next((e.success_threshold for e in reversed(ep.events) if e.event == "success"), 0.0)
        if 0 < recorded < s:
            s = recorded
        ok = bool(consecutive_success(d, s + 1e-3 * max(1.0, abs(s)), k)[-1])  # offline vs live d: ~1e-5 apart
        if not ok:
            print(f"improve: {ep.episode_id} claims success but the reward model's d over its last {k} frames is "
                  f"{np.round(d[-k:], 2).tolist()} (s = {s:g}): not trained on", file=sys.stderr)
        return ok

    def _episode_metrics(self, ep: Episode, d, rewards, returns, audit_d=None) -> dict:
        m = {"episode_id": ep.episode_id, "steps": ep.num_steps, "detector_success": ep.outcome == "success",
             "mean_reward": float(np.mean(rewards)), "return_0": float(returns[0]),
             "entropy": float(np.mean(ep.entropies)) if len(ep.entropies) else float("nan")}
        track = ep.steps_to_go
        if self.reward_source is None and track is not None and track.present.any():
            live = track.expected_steps[track.present]
            m["reward_check_max_abs_diff"] = float(np.max(np.abs(live - d[track.present])))
        gt = [v for k, msgs in ep.extras.items() if k.endswith(self.gt_topic) for _, v in msgs]
        if gt:  # simulation only: success at the last frame, and at any frame (what `efm-ros eval` counts)
            m["gt_success"] = bool(getattr(gt[-1], "data", gt[-1]))
            m["gt_reached"] = any(bool(getattr(v, "data", v)) for v in gt)
        if audit_d is not None:
            audit_d = np.asarray(audit_d, np.float64)
            m["audit_progress"], m["audit_final_d"] = float(audit_d[0] - audit_d[-1]), float(audit_d[-1])
        return m

    def ingest_dir(self, episodes_dir: str | Path, progress: bool = False) -> int:
        """Read every complete episode bag not seen before; returns how many were read."""
        from efm_ros.data.reader import EpisodeBagError, list_episodes, read_episode

        new = [p for p in list_episodes(episodes_dir) if p.name not in self.seen]
        for path in new:
            try:
                ep = read_episode(path, extra_topics=True, unmatched_actions="drop")
            except EpisodeBagError as exc:
                self.seen.add(path.name)
                self.counts["episodes_bad"] += 1
                print(f"improve: skipping unreadable episode: {exc}", file=sys.stderr)
                continue
            self.add_episode(ep)
        return len(new)

    # -- learning -------------------------------------------------------------------------------
    def ready(self) -> bool:
        return self.buffer.ready(self.config.updates, self.config.batch_size)

    def _shared_buffer(self) -> dict[str, np.ndarray]:
        data = self.buffer.arrays() if self.rank == 0 else None
        if _dist():
            box = [data]
            _dist().broadcast_object_list(box, src=0)
            data = box[0]
        return data

    def update(self) -> dict:
        """N AdamW steps on the buffer (paper: B = 64, N = 16, no reuse), then clear it."""
        t0 = time.perf_counter()
        stats = self.learner.update(self._shared_buffer())
        self.buffer.clear()
        return {**stats, "update_s": round(time.perf_counter() - t0, 3)}

    def publish(self, train_stats: dict, on_exported=None) -> dict:
        """Export the updated policy as the next version; record the iteration's metrics.
        ``on_exported(new_version, row)`` is called as soon as the version is in place, before the
        metrics and plots are written (the fleet resumes and swaps then: on 2 cores the plotting
        would slow the policy nodes' loads)."""
        self.iteration += 1
        stats = self._episode_stats
        self._episode_stats = []
        new_version = f"{self.out.name}-v{self.iteration:04d}"
        # the episodes (and so every success/return column) are the acting version's, not the new one's
        row = {"iteration": self.iteration, "version_trained_on": self.version, "new_version": new_version,
               "episodes": len(stats), **train_stats, **self._aggregate(stats), "time": time.time()}
        if self.rank == 0:
            from efm_ros.model.export import export_model

            m = self.reward.manifest
            t0 = time.perf_counter()
            export_model(self.policy, self.out / "versions" / f"v{self.iteration:04d}", reward_model=self._reward_torch,
                         instructions=self.instructions, success_threshold=m["success"]["threshold_steps"],
                         success_k=m["success"]["consecutive"], control_rate_hz=m["control_rate_hz"],
                         data_hash="stage2:" + hashlib.sha256(" ".join(sorted(s["episode_id"] for s in stats)).encode()).hexdigest()[:16],
                         metrics={k: v for k, v in row.items() if isinstance(v, (int, float))},
                         model_version=new_version, training={"stage": 2, "iteration": self.iteration,
                                                              "parent_version": self.version,
                                                              "reward_model_version": self.reward.version},
                         signing_key=self.config.signing_key or None,
                         reward_from=self.reward_dir,   # the frozen graph, copied: not re-exported
                         policy_template=self._policy_template)   # the policy graph: its weights refreshed
            row["export_s"] = round(time.perf_counter() - t0, 3)
            if on_exported is not None:
                on_exported(new_version, row)
            row.update(self.learner.final_metrics())
            self.version_dirs[new_version] = f"versions/v{self.iteration:04d}"
            self.history.append({**row, "version": self.version, "directory": self.version_dirs[self.version]})
            self._write_metrics()
            self._choose_best()
        if _dist():
            _dist().barrier()
        self.version = new_version
        self.buffer.clear(version=new_version)
        return row

    @staticmethod
    def _aggregate(stats: list[dict]) -> dict:
        if not stats:
            return {}
        col = lambda k: [s[k] for s in stats if k in s]  # noqa: E731
        out = {"detector_success_rate": float(np.mean(col("detector_success"))),
               "episode_length": float(np.mean(col("steps"))), "mean_reward": float(np.mean(col("mean_reward"))),
               "mean_return": float(np.mean(col("return_0"))), "policy_entropy": float(np.nanmean(col("entropy")))}
        if col("gt_success"):
            out["gt_success_rate"] = float(np.mean(col("gt_success")))
            out["gt_reached_rate"] = float(np.mean(col("gt_reached")))
        for key in ("audit_progress", "audit_final_d"):
            if col(key):
                out[key] = float(np.mean(col(key)))
        if col("reward_check_max_abs_diff"):
            out["reward_check_max_abs_diff"] = float(np.max(col("reward_check_max_abs_diff")))
        return out

    def _write_json(self, name: str, obj) -> None:
        tmp = self.out / f".{name}.tmp"
        tmp.write_text(json.dumps(obj, indent=2))
        os.replace(tmp, self.out / name)

    def _write_metrics(self) -> None:
        keys = sorted({k for r in self.history for k in r})
        tmp = self.out / ".metrics.csv.tmp"
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(self.history)
        os.replace(tmp, self.out / "metrics.csv")
        self._plot()

    def _plot(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        it = [r["iteration"] for r in self.history]
        panels = [("detector_success_rate", "success (detector)"), ("gt_success_rate", "success at the end (ground truth, sim)"),
                  ("gt_reached_rate", "goal reached (ground truth, sim)"),
                  ("episode_length", "episode length"), ("mean_return", "mean return R_0"),
                  ("policy_entropy", "policy entropy (nats)")]
        fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
        for ax, keys in zip(axes, ((panels[0], panels[1], panels[2]), (panels[3],), (panels[4],), (panels[5],))):
            for key, label in keys:
                ys = [r.get(key, np.nan) for r in self.history]
                if not np.all(np.isnan(ys)):
                    ax.plot(it, ys, marker="o", label=label)
            ax.set_xlabel("iteration")
            ax.set_title("success" if len(keys) > 1 else keys[0][1], fontsize=9)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(self.out / "curves.png", dpi=110)
        plt.close(fig)

    def _choose_best(self) -> None:
        """Over-optimisation guard: the best version by a windowed measure that is not the optimised reward."""
        self._write_json("best.json", choose_best(self.history, self.config.best_window))

    def state(self) -> dict:
        return {"iteration": self.iteration, "version": self.version, "buffer": len(self.buffer), **self.counts}


def choose_best(history: list[dict], window: int) -> dict:
    """best.json for ``history`` (rows of Improver.publish, each with the "version" whose episodes it
    describes and that version's "directory": the starting policy's own, else versions/vNNNN under
    the run): the version whose window of iterations scores highest by the audit model's progress
    when the rows have it, else by the detector success rate (ties: shorter episodes). Ground truth
    (goal reached at any frame, what ``efm-ros eval`` counts) is reported, never used."""
    audited = all("audit_progress" in r for r in history)
    key, measure = (("audit_progress", f"audit model progress d(o_0) - d(o_T), mean over {window} iterations")
                    if audited else ("detector_success_rate", f"detector success rate, mean over {window} iterations"))
    scored = []
    for i, r in enumerate(history):
        rows = history[max(0, i - window + 1):i + 1]
        score = float(np.mean([x.get(key, 0.0) for x in rows]))
        scored.append((score, -r.get("episode_length", 0.0), i))
    score, _, i = max(scored)
    version = history[i]["version"]
    gt = [r for r in history if "gt_reached_rate" in r]
    directory = history[i].get("directory") or f"versions/v{version.rsplit('-v', 1)[1]}"
    return {"version": version, "measure": measure, "score": score, "directory": directory,
            "ground_truth_best": max(gt, key=lambda r: r["gt_reached_rate"])["version"] if gt else None}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="efm-ros improve", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes-dir", required=True, type=Path, help="where the loggers commit episode bags")
    p.add_argument("--policy", required=True, type=Path, help="exported policy to start from (models/A)")
    p.add_argument("--reward-model", required=True, type=Path, help="frozen Stage-1 model (models/B)")
    p.add_argument("--out", required=True, type=Path, help="run directory: versions/, metrics.csv, best.json")
    p.add_argument("--iterations", type=int, default=0, help="stop after this many iterations (0: run until Ctrl-C)")
    p.add_argument("--poll-s", type=float, default=1.0, help="how often to look for new episodes")
    p.add_argument("--config", type=Path, help="YAML/JSON file with ImproveConfig fields")
    p.add_argument("--ros", choices=("auto", "on", "off"), default="auto",
                   help="publish each iteration on improve/metrics and /diagnostics (auto: when rclpy and the "
                        "efm_ros interfaces import); ROS arguments go after --ros-args")
    p.add_argument("--coordinate", action="store_true",
                   help="coordinate the fleet (paper §2.5; needs ROS): PAUSE on /fleet/command when the buffer is "
                        "full, update once every robot has paused and its last episode's bag is read, then "
                        "PRACTISE with the new version (each robot starts again once its policy acts with it)")
    p.add_argument("--fleet-timeout-s", type=float, default=3.0,
                   help="a robot whose /fleet/status is older than this is unresponsive: reported, never waited for")
    p.add_argument("--pause", choices=("now", "drain"), default="now",
                   help="what a pause does to the robots' running episodes: 'now' ends each at its next frame (a "
                        "truncated episode, learned from like a timeout: the fleet stops within a tick); 'drain' "
                        "lets each end by the episode rules (up to T_max of robot time waiting)")
    p.add_argument("--pause-timeout-s", type=float, default=30.0,
                   help="longest wait for the fleet to pause (with --pause drain, in-flight episodes end by T_max) or to swap")
    for f in dataclasses.fields(ImproveConfig):
        if isinstance(f.default, bool):     # --step-by-agreement / --no-step-by-agreement
            p.add_argument(f"--{f.name.replace('_', '-')}", action=argparse.BooleanOptionalAction, default=None,
                           help=f"ImproveConfig.{f.name} (default {f.default})")
            continue
        p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=None,
                       help=f"ImproveConfig.{f.name} (default {f.default})")
    return p


def config_from_args(args) -> ImproveConfig:
    values = {}
    if args.config:
        import yaml

        values = yaml.safe_load(args.config.read_text()) or {}
        unknown = set(values) - {f.name for f in dataclasses.fields(ImproveConfig)}
        if unknown:
            raise SystemExit(f"efm-ros improve: unknown keys in {args.config}: {sorted(unknown)}")
    for f in dataclasses.fields(ImproveConfig):
        v = getattr(args, f.name)
        if v is not None:
            values[f.name] = v
    return ImproveConfig(**values)


class _FleetLoop:
    """The trainer's half of the fleet coordinator (efm_ros.control.coordinator) around each update.
    Waits are bounded (``--pause-timeout-s``) and robots that stop answering are reported, never
    waited for. Writes RUN/fleet.json: per update, paused and switch time and who was waited for."""

    def __init__(self, ros, imp, args):
        from efm_ros.control.coordinator import FleetCoordinator

        if ros is None:
            raise SystemExit("efm-ros improve: --coordinate needs ROS (rclpy and the efm_ros interfaces)")
        self.ros, self.imp, self.args = ros, imp, args
        self.coordinator = FleetCoordinator(status_timeout_s=args.fleet_timeout_s)
        ros.coordinate(self.coordinator)
        self.log: list[dict] = []
        self.t0 = time.monotonic()
        with ros.fleet() as c:
            cmd = c.resume(imp.version)
        ros.command(*cmd)
        self._entry: dict = {}

    def _wait(self, check, what: str, ingest: bool = True) -> tuple[float, list[str]]:
        start = time.monotonic()
        while True:
            if ingest:
                self.imp.ingest_dir(self.args.episodes_dir)
            now = time.monotonic()
            with self.ros.fleet() as c:
                done, waiting = check(c, now)
            if done or now - start > self.args.pause_timeout_s:
                if not done:
                    print(f"fleet: {what}: gave up after {self.args.pause_timeout_s:g} s waiting for {waiting}", flush=True)
                return now - start, ([] if done else waiting)
            time.sleep(0.05)

    def pause_and_settle(self) -> None:
        # robots announce themselves once a second after taking the first command: give every live
        # robot (and DDS discovery) one fleet timeout to be heard before the first pause counts them
        while time.monotonic() - self.t0 < self.args.fleet_timeout_s:
            time.sleep(0.1)
        now = time.monotonic()
        with self.ros.fleet() as c:
            cmd = c.pause(now, end_running=self.args.pause == "now")
            robots = c.responsive(now)
        self.ros.command(*cmd, values={"robots": len(robots)})
        print(f"fleet: PAUSE {cmd[0]} for iteration {self.imp.iteration + 1}: waiting for {robots}", flush=True)
        settle_s, waited = self._wait(lambda c, t: c.settled(t, self.imp.seen), "pause")
        with self.ros.fleet() as c:
            unresponsive = c.unresponsive(time.monotonic())
        self._entry = {"iteration": self.imp.iteration + 1, "robots": robots, "settle_s": round(settle_s, 3),
                       "not_settled": waited, "unresponsive": unresponsive, "transitions": len(self.imp.buffer)}
        self._t_settled = time.monotonic()

    def resume_and_swap(self, version: str, row: dict) -> None:
        """The new version is in place: PRACTISE on it (every robot starts once its policy acts
        with it), and wait until every robot does (Improver.publish's ``on_exported``)."""
        t_update_end = time.monotonic()
        with self.ros.fleet() as c:
            cmd = c.resume(version)
        self.ros.command(*cmd)
        # not reading bags meanwhile: the trainer takes the new version's episodes once publish returns
        switch_s, waited = self._wait(lambda c, t: c.swapped(version, t), "swap", ingest=False)
        with self.ros.fleet() as c:
            now = time.monotonic()
            c.practising(now)                   # the pause ends when every robot acts with the new version
            unresponsive = sorted(set(self._entry.get("unresponsive", [])) | set(c.unresponsive(now)))
            paused_total, paused_share = c.paused_s, c.paused_share(now)
        entry = {**self._entry, "version": version, "update_s": round(t_update_end - self._t_settled, 3),
                 "update_train_s": row.get("update_s"), "export_s": row.get("export_s"),
                 "switch_s": round(switch_s, 3), "not_swapped": waited,
                 "unresponsive": unresponsive, "paused_total_s": round(paused_total, 3),
                 "paused_share": round(paused_share, 4), "counts": dict(self.imp.counts)}
        self.log.append(entry)
        (self.imp.out / "fleet.json").write_text(json.dumps(self.log, indent=1))
        warn = f"unresponsive: {', '.join(unresponsive)}" if unresponsive else ""
        self.ros.fleet_status(f"PRACTISE {cmd[0]} {version}", warn=warn,
                              values={k: v for k, v in entry.items() if not isinstance(v, list)})
        print(f"fleet: iteration {entry['iteration']}: paused {entry['settle_s']:.1f} s to settle, switched to "
              f"{version} in {switch_s:.2f} s" + (f"; unresponsive {unresponsive}" if unresponsive else ""),
              flush=True)


def _metrics_publisher(mode: str, ros_args: list[str]):
    """The trainer's ROS face (efm_ros.nodes.improve_metrics), or None when ROS is off/unavailable."""
    if mode == "off":
        return None
    try:
        from efm_ros.nodes.improve_metrics import ImproveMetricsPublisher

        return ImproveMetricsPublisher(args=["efm-ros-improve", *ros_args])
    except ImportError as e:
        if mode == "on":
            raise SystemExit(f"efm-ros improve: --ros on, but ROS is not importable: {e}")
        print(f"efm-ros improve: not publishing on ROS ({e})", flush=True)
        return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ros_args = argv[argv.index("--ros-args"):] if "--ros-args" in argv else []
    args = build_parser().parse_args(argv[:len(argv) - len(ros_args)])
    config = config_from_args(args)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by torchrun
        import torch.distributed as dist

        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    torch.manual_seed(config.seed)
    imp = Improver(args.policy, args.reward_model, args.out, config)
    rank0 = imp.rank == 0
    if rank0:  # the fleet's loggers may not have created it yet: that is the normal start of a run
        args.episodes_dir.mkdir(parents=True, exist_ok=True)
    import signal

    def _interrupt(signum, frame):  # SIGTERM (launch, systemd, docker stop) stops like Ctrl-C
        raise KeyboardInterrupt

    # SIGINT explicitly too: started from a background shell it would be inherited as ignored
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    ros = _metrics_publisher("on" if args.coordinate else args.ros, ros_args) if rank0 else None
    fleet = _FleetLoop(ros, imp, args) if args.coordinate and rank0 else None
    if rank0:
        print(f"efm-ros improve: from {imp.version}, reward model {imp.reward.version}, "
              f"N·B = {config.updates}·{config.batch_size}, writing {args.out}/versions", flush=True)
    try:
        from tqdm import tqdm

        bar = tqdm(total=config.updates * config.batch_size, desc=f"iteration 1 ({imp.version})", disable=not rank0,
                   unit="transitions")
        while not args.iterations or imp.iteration < args.iterations:
            ready = None
            if rank0:
                imp.ingest_dir(args.episodes_dir)
                bar.n = min(len(imp.buffer), bar.total)
                bar.set_postfix(imp.counts, refresh=True)
                ready = imp.ready()
            if _dist():
                box = [ready]
                _dist().broadcast_object_list(box, src=0)
                ready = box[0]
            if not ready:
                time.sleep(args.poll_s)
                continue
            if fleet is not None:
                fleet.pause_and_settle()          # the in-flight episodes end and are read: none is discarded
            row = imp.publish(imp.update(), on_exported=fleet.resume_and_swap if fleet is not None else None)
            if rank0:
                bar.write(f"iteration {row['iteration']}: " + ", ".join(
                    f"{k}={row[k]:.3g}" for k in ("detector_success_rate", "gt_success_rate", "episode_length",
                                                  "mean_return", "loss") if k in row) + f" -> {imp.version}")
                bar.reset()
                bar.set_description(f"iteration {imp.iteration + 1} ({imp.version})")
                if ros is not None:
                    best = json.loads((args.out / "best.json").read_text()) if (args.out / "best.json").exists() else None
                    ros.publish(row, version=imp.version, reward_model_version=imp.reward.version, best=best,
                                history=imp.history)
    except KeyboardInterrupt:
        pass
    finally:
        if ros is not None:
            ros.close()
        if _dist():
            _dist().destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
