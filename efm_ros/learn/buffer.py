"""Strictly on-policy transitions for Stage-2 REINFORCE (paper §2.2, Algorithm 1).

* :func:`episode_returns` — rewards from the FROZEN reward model, recomputed offline from the
  recorded frames: r_t = d(o_t, g) − d(o_{t+1}, g), R_t = Σ_{i≥t} γ^{i−t} r_i (truncated at the
  episode's end, no bootstrap).
* :func:`on_policy_filter` — only episodes whose every action carries the current policy
  version are used (an episode that straddles a hot-swap is not on-policy for either version).
* :class:`OnPolicyBuffer` — filled to at least N·B transitions, consumed by N minibatches of B
  drawn WITHOUT replacement, then cleared (leftovers are discarded, as in the paper).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from efm_ros.control.episode import INPUT_LOST
from efm_ros.learn.objectives import episode_returns  # noqa: F401  (the one reward/returns function)

#: episodes that did not end by the episode rules are not used: the logger stopped mid-episode, or
#: an input went silent (the episode ended with a FAULT "input lost: ...", its end never observed)
UNFINISHED_REASONS = ("logger_shutdown", INPUT_LOST)


def is_unfinished(termination_reason: str) -> bool:
    return termination_reason.startswith(UNFINISHED_REASONS)


def on_policy_filter(policy_versions: list[str], current: str) -> tuple[bool, str]:
    """(use, reason): an episode is used only if all its actions come from ``current``."""
    if not policy_versions:
        return False, "no actions"
    other = sorted(set(policy_versions) - {current})
    if other:
        return False, f"off-policy actions from {other}"
    return True, ""


@dataclass
class OnPolicyBuffer:
    """Transitions of the current policy version: features, instruction embedding, tokens, R."""

    version: str
    features_cur: list = field(default_factory=list)
    features_prev: list = field(default_factory=list)
    text: list = field(default_factory=list)
    tokens: list = field(default_factory=list)
    returns: list = field(default_factory=list)
    acting_logits: list = field(default_factory=list)
    """optional: π of the acting version on each transition, computed as episodes arrive (off the
    update's critical path); the learner computes it itself when any episode lacks it"""
    episodes: int = 0

    def add_episode(self, features_cur, features_prev, text, tokens, returns, acting_logits=None) -> None:
        n = len(tokens)
        if not (len(features_cur) == len(features_prev) == len(text) == len(returns) == n):
            raise ValueError("episode arrays have different lengths")
        if acting_logits is not None and len(acting_logits) != n:
            raise ValueError("acting logits and tokens have different lengths")
        self.acting_logits.append(None if acting_logits is None else np.asarray(acting_logits, dtype=np.float32))
        self.features_cur.append(np.asarray(features_cur))
        self.features_prev.append(np.asarray(features_prev))
        self.text.append(np.asarray(text, dtype=np.float32))
        self.tokens.append(np.asarray(tokens, dtype=np.int64))
        self.returns.append(np.asarray(returns, dtype=np.float32))
        self.episodes += 1

    def __len__(self) -> int:
        return int(sum(len(t) for t in self.tokens))

    def ready(self, updates: int, batch_size: int) -> bool:
        return len(self) >= updates * batch_size

    def arrays(self) -> dict[str, np.ndarray]:
        """All transitions concatenated (what the learner samples from)."""
        if not self.tokens:
            raise ValueError("empty buffer")
        out = {"features_cur": np.concatenate(self.features_cur), "features_prev": np.concatenate(self.features_prev),
               "text": np.concatenate(self.text), "tokens": np.concatenate(self.tokens),
               "returns": np.concatenate(self.returns)}
        if all(a is not None for a in self.acting_logits):
            out["acting_logits"] = np.concatenate(self.acting_logits)
        return out

    def clear(self, version: str | None = None) -> None:
        self.features_cur, self.features_prev, self.text, self.tokens, self.returns = [], [], [], [], []
        self.acting_logits = []
        self.episodes = 0
        if version is not None:
            self.version = version


def minibatch_indices(n: int, updates: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``updates`` disjoint minibatches of ``batch_size`` indices into n transitions (no reuse)."""
    if n < updates * batch_size:
        raise ValueError(f"{n} transitions < N·B = {updates}·{batch_size}")
    perm = rng.permutation(n)
    return [perm[i * batch_size:(i + 1) * batch_size] for i in range(updates)]
