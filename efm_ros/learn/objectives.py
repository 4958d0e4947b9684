"""The paper's equations, one pure function each (Ghasemipour et al. 2025; ../shared/PAPER.md).

Stage 1 (§1):  L_BC  = -E[log p(a_t | o_t, g)]            log p(a) = Σ_d log p(token_d)
               L_stg = -E[log p_stg(bin(t' - t) | o_t, g)]   classification over step bins
Stage 2 (§2):  d(o, g)  = Σ_k p_stg(k | o, g) · value_k        expected steps-to-go
               r_t      = d(o_t, g) - d(o_{t+1}, g)            progress reward
               success  = 1[d(o, g) <= s]                      (held for k consecutive ticks)
               R_t      = Σ_{i=t}^{T} γ^{i-t} r_i              γ = 0.9, no bootstrap
               L        = mean(-c · R_t · log π(a_t | o_t, g))  c = 0.05

No torch import at module level: the loss functions take torch tensors and use tensor methods only,
and the reward/success/return functions are numpy, so robot-side code (ONNX Runtime only) can
import this module. Shapes: B batch, D action dimensions, K bins per dimension, N steps-to-go bins.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

# ---------------------------------------------------------------------------------------------
# Action tokens (RT-2 style, §1): each action dimension is a categorical over K bins.


def action_log_prob(action_logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(a | o, g) of tokenised actions (§1, §2.2): the sum of the D token log-probs.

    action_logits (B, D, K), tokens (B, D) int -> (B,).
    """
    log_p = action_logits.log_softmax(-1)                                   # (B, D, K)
    return log_p.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1).sum(-1)  # Σ_d log p(a_d)


def action_entropy(action_logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the factorised action distribution: H = Σ_d -Σ_k p_dk log p_dk.  (B, D, K) -> (B,)."""
    log_p = action_logits.log_softmax(-1)
    return -(log_p.exp() * log_p).sum((-2, -1))


def action_kl(old_logits: torch.Tensor, new_logits: torch.Tensor) -> torch.Tensor:
    """KL(π_old ‖ π_new) of the factorised action distributions, Σ_d KL_d.  (B, D, K) x2 -> (B,).

    Not in the paper: the trust-region term of a Stage-2 departure (ImproveConfig.kl_coef), and the
    measure of how far one update moved the policy."""
    old = old_logits.log_softmax(-1)
    return (old.exp() * (old - new_logits.log_softmax(-1))).sum((-2, -1))


def bc_loss(action_logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Goal-conditioned behaviour cloning (§1): L_BC = -mean_b log p(a_b | o_b, g_b).  -> scalar."""
    return -action_log_prob(action_logits, tokens).mean()


# ---------------------------------------------------------------------------------------------
# Steps-to-go (§1, §2.1).


def steps_to_go_loss(stg_logits: torch.Tensor, stg_bins: torch.Tensor) -> torch.Tensor:
    """Steps-to-go classification (§1): L_stg = -mean_b log p_stg(bin_b | o_b, g_b).  -> scalar.

    stg_logits (B, N); stg_bins (B,) int bin indices of the label t' - t, made by
    ``StepsToGoBins.encode`` (which clips labels >= t_max into the last bin).
    """
    log_p = stg_logits.log_softmax(-1)
    return -log_p.gather(-1, stg_bins.long().unsqueeze(-1)).squeeze(-1).mean()


def censored_steps_to_go_loss(stg_logits: torch.Tensor, min_bins: torch.Tensor) -> torch.Tensor:
    """Steps-to-go of frames whose goal was never reached (not in the paper; a departure, see
    ``SFTConfig.rollouts``): a failed rollout of length T says only that from frame t more than
    T - t steps remain, a right-censored label. L_cens = -mean_b log Σ_{k >= min_bin_b} p_stg(k | o_b, g_b),
    min_bin = the first bin wholly above T - t (``StepsToGoBins.first_bin_at_least``).  -> scalar; (B, N), (B,) inputs.
    """
    log_p = stg_logits.log_softmax(-1)
    bins = log_p.new_tensor(np.arange(log_p.shape[-1]))
    tail = bins.unsqueeze(0) >= min_bins.to(bins.dtype).unsqueeze(-1)             # (B, N): bins the label allows
    return -log_p.masked_fill(~tail, float("-inf")).logsumexp(-1).mean()


def expected_steps_to_go(stg_logits, bin_values):
    """d(o, g) = Σ_k p_stg(k | o, g) · value_k (§2.1), value_k = ``StepsToGoBins.values``.

    stg_logits (..., N) torch tensor or numpy array -> (...) of the same kind.
    """
    if isinstance(stg_logits, np.ndarray):
        z = stg_logits - stg_logits.max(-1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(-1, keepdims=True)
        return p @ np.asarray(bin_values, dtype=p.dtype)
    values = bin_values if hasattr(bin_values, "softmax") else stg_logits.new_tensor(np.asarray(bin_values))
    return (stg_logits.softmax(-1) * values).sum(-1)


def progress_reward(d_t, d_next):
    """r(o_t, a_t, o_{t+1}, g) = d(o_t, g) - d(o_{t+1}, g) (§2.1): steps of progress this step.

    Works on floats, numpy arrays and tensors. For one episode with d over observations
    o_0..o_{T+1}, ``progress_reward(d[:-1], d[1:])`` gives the T+1 rewards r_0..r_T.
    """
    return d_t - d_next


def is_success(d, s: float):
    """Model-based success detector (§2.1): 1[d(o, g) <= s], s a small number of steps."""
    return d <= s


def consecutive_success(d_seq, s: float, k: int) -> np.ndarray:
    """fired[t] = 1[d_j <= s for all j in t-k+1..t] (DESIGN §3: success held k consecutive ticks).

    d_seq (T,) -> bool (T,). ``consecutive_success(d_seq, s, 1)`` equals ``is_success``; the first
    True index is where an episode ends on success. A node streaming d can keep the last k values
    and read ``[-1]``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    ok = is_success(np.asarray(d_seq, dtype=np.float64), s)
    run = np.zeros(len(ok), dtype=np.int64)  # length of the run of successes ending at t
    for t, hit in enumerate(ok):
        run[t] = (run[t - 1] + 1 if t else 1) if hit else 0
    return run >= k


# ---------------------------------------------------------------------------------------------
# Stage 2 REINFORCE (§2.2).


def discounted_returns(rewards, gamma: float = 0.9) -> np.ndarray:
    """Monte-Carlo returns of ONE episode (§2.2): R_t = Σ_{i=t}^{T} γ^{i-t} r_i.

    Truncated at the episode's end (success, timeout or operator stop) with no bootstrap value.
    rewards (T+1,) -> float64 (T+1,), by the backward recursion R_t = r_t + γ R_{t+1}, R_{T+1} = 0.
    """
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError(f"rewards must be one episode, shape (T,), got {r.shape}")
    out = np.empty_like(r)
    acc = 0.0
    for t in range(len(r) - 1, -1, -1):
        acc = r[t] + gamma * acc
        out[t] = acc
    return out


def episode_returns(d, gamma: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """Rewards and returns of ONE episode from d over its frames o_0..o_T (§2.1, §2.2): the one place
    that turns d into what REINFORCE sees, used by the learner on recorded and in-process episodes.

    r_t = d(o_t, g) − d(o_{t+1}, g) for the action a_t taken at frame t (t = 0..T−1), and
    R_t = Σ_{i=t}^{T−1} γ^{i−t} r_i. The live tracker (``control.episode``) publishes the same r_t
    one tick later, at frame t+1 (it cannot know d(o_{t+1}) before then); a test pins the two.
    d (T+1,) -> (rewards (T,), returns (T,)) float64.
    """
    d = np.asarray(d, dtype=np.float64)
    if d.ndim != 1 or len(d) < 2:
        raise ValueError(f"need d for at least 2 frames, got shape {d.shape}")
    rewards = progress_reward(d[:-1], d[1:])
    return rewards, discounted_returns(rewards, gamma)


def reinforce_loss(log_probs: torch.Tensor, returns, c: float = 0.05) -> torch.Tensor:
    """On-policy REINFORCE (§2.2): L = mean_b(-c · R_b · log π(a_b | o_b, g_b)).  -> scalar.

    log_probs (B,) = ``action_log_prob`` of the taken actions (differentiable); returns (B,) are
    constants (detached / converted). The paper's reason for c = 0.05 (c·R within ~[-1, 1] for
    γ = 0.9) is about the loss's scale; under Adam/AdamW the step size barely depends on it (c acts
    through Adam's ε and the balance against decoupled weight decay).
    """
    if hasattr(returns, "detach"):
        returns = returns.detach().to(log_probs.dtype)
    else:
        returns = log_probs.new_tensor(np.asarray(returns, dtype=np.float64))
    return (-c * returns * log_probs).mean()
