"""Toy cached-feature tables for the Stage-1 example tests."""
from __future__ import annotations

import numpy as np

from efm_ros.learn.features import EpisodeFeatures


def toy_features(lengths=(3, 5)) -> EpisodeFeatures:
    """Two episodes whose feature rows are numbered 0..F-1 and tokens encode (episode, t)."""
    lengths = np.asarray(lengths, np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]])
    token_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    tokens = np.concatenate([np.stack([np.full(T, e), np.arange(T)], 1) for e, T in enumerate(lengths)])
    return EpisodeFeatures(features=np.zeros((int((lengths + 1).sum()), 1, 1, 1), np.float32),
                           episode_ids=[f"ep{e}" for e in range(len(lengths))],
                           instructions=[f"instr {e}" for e in range(len(lengths))], starts=starts,
                           lengths=lengths, tokens=tokens, token_starts=token_starts, meta={})
