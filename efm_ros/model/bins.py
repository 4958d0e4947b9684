"""Tokenisation of actions and steps-to-go (RT-2 style discretisation, paper §1 / App. E).

Actions: each action dimension is a categorical over ``num_bins`` uniformly spaced centres in
[low, high] (the paper's LanguageTable format, sign + magnitude 0..10, is the same 21 values per
dimension). Steps-to-go: a categorical over ``num_bins`` bins of equal width covering
0..t_max; labels above t_max fall in the last bin.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: T_max (paper §1): the episode step limit, the demonstrations' limit and the steps-to-go range the
#: model is trained on. The one home of the default: every step limit below defaults to it.
T_MAX = 100


@dataclass(frozen=True)
class ActionBins:
    """Uniform per-dimension action bins."""

    dims: int = 2
    """number of action dimensions (sim: delta-x, delta-y)"""
    num_bins: int = 21
    """bins per dimension; odd so that 0 (hold still) is a bin centre"""
    low: float = -1.0
    high: float = 1.0

    @property
    def centers(self) -> np.ndarray:
        return np.linspace(self.low, self.high, self.num_bins, dtype=np.float32)

    def encode(self, action) -> np.ndarray:
        """Continuous action(s) (..., dims) -> int64 tokens (..., dims): nearest bin centre."""
        a = np.clip(np.asarray(action, dtype=np.float64), self.low, self.high)
        if a.shape[-1] != self.dims:
            raise ValueError(f"action has {a.shape[-1]} dims, expected {self.dims}")
        step = (self.high - self.low) / (self.num_bins - 1)
        return np.rint((a - self.low) / step).astype(np.int64)

    def decode(self, tokens) -> np.ndarray:
        """Tokens (..., dims) -> continuous action(s) at the bin centres, float32."""
        t = np.asarray(tokens)
        if t.shape[-1] != self.dims:
            raise ValueError(f"tokens have {t.shape[-1]} dims, expected {self.dims}")
        if t.size and (t.min() < 0 or t.max() >= self.num_bins):
            raise ValueError(f"token out of range [0, {self.num_bins})")
        return self.centers[t]

    def to_dict(self) -> dict:
        return {"dims": self.dims, "num_bins": self.num_bins, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class StepsToGoBins:
    """Equal-width steps-to-go bins over 0..t_max (paper: 0..100 in 50 bins of width 2)."""

    t_max: int = T_MAX
    num_bins: int = 50

    @property
    def width(self) -> float:
        return self.t_max / self.num_bins

    @property
    def values(self) -> np.ndarray:
        """Representative steps of each bin: the mean of the integer step counts it holds."""
        lo = np.arange(self.num_bins) * self.width
        return (lo + (self.width - 1.0) / 2.0).clip(min=0.0).astype(np.float32)

    def encode(self, steps_to_go) -> np.ndarray:
        """Integer steps-to-go label(s) -> bin index (labels >= t_max go to the last bin)."""
        s = np.asarray(steps_to_go)
        if np.any(s < 0):
            raise ValueError("steps-to-go must be >= 0")
        return np.minimum((s // self.width).astype(np.int64), self.num_bins - 1)

    def first_bin_at_least(self, steps) -> np.ndarray:
        """Integer lower bound(s) m -> index of the first bin whose every step count is >= m (the last
        bin for m past t_max): the censored label "at least m steps to go" allows that bin and above."""
        s = np.asarray(steps)
        if np.any(s < 0):
            raise ValueError("steps-to-go must be >= 0")
        return np.minimum(np.ceil(s / self.width).astype(np.int64), self.num_bins - 1)

    def to_dict(self) -> dict:
        return {"t_max": self.t_max, "num_bins": self.num_bins}
