"""Synthetic episodes for the bag tests (no simulator needed) and a tiny-filesystem helper."""
from __future__ import annotations


import numpy as np
import pytest

from efm_ros.data.episode import DEMO_CLOCK_BASE_NS, Episode, EventRecord, StepsToGoTrack
from efm_ros.model.bins import ActionBins
from fs_helpers import mounted_tmpfs


def make_demo_episode(steps: int = 12, size: tuple[int, int] = (24, 32), seed: int = 0,
                      episode_id: str = "demo_s0_e00000", robot: str = "demo_0") -> Episode:
    """A demonstration with random frames (H != W, to catch transposes) and random actions."""
    rng = np.random.default_rng(seed)
    return Episode.from_demonstration(
        robot=robot,
        episode_id=episode_id,
        instruction="push the red block to the blue block",
        frames=rng.integers(0, 256, (steps + 1, *size, 3), dtype=np.uint8),
        actions=rng.uniform(-1, 1, (steps, 2)).astype(np.float32),
        control_rate_hz=10.0,
        start_ns=DEMO_CLOCK_BASE_NS + 7 * 10**12 + 123,  # a nanosecond part too
        custom_data={"family": "block2block", "seed": str(seed)},
    )


def make_policy_episode(steps: int = 9, size: tuple[int, int] = (16, 20), seed: int = 1) -> Episode:
    """A practice episode as the live graph records it: sampled actions, steps-to-go, a timeout."""
    rng = np.random.default_rng(seed)
    bins = ActionBins()
    tokens = rng.integers(0, bins.num_bins, (steps, 2)).astype(np.int32)
    # 10 Hz with jitter and a nanosecond part, as a live camera stamps frames
    tick = 100_000_000 * np.arange(steps + 1, dtype=np.int64)
    stamps = 1_800_000_000 * 10**9 + tick + rng.integers(0, 1000, steps + 1)
    n = steps + 1
    track = StepsToGoTrack(
        present=np.ones(n, bool),
        expected_steps=rng.uniform(0, 100, n).astype(np.float32),
        distributions=rng.dirichlet(np.ones(50), n).astype(np.float32),
        rewards=rng.normal(0, 1, n).astype(np.float32),
        success=rng.random(n) < 0.3,
        model_versions=["rm-v1"] * n,
    )
    events = [
        EventRecord(int(stamps[0]), "start", "unknown", "", 0, "push the green block to the center", "pol-v3", "rm-v1"),
        EventRecord(int(stamps[-1]) + 5, "timeout", "failure", "timeout", steps, "push the green block to the center",
                    "pol-v3", "rm-v1"),
    ]
    return Episode(
        robot="robot_3",
        episode_id="robot_3_e00042",
        instruction="push the green block to the center",
        frames=rng.integers(0, 256, (n, *size, 3), dtype=np.uint8),
        frame_stamps_ns=stamps,
        actions=bins.decode(tokens),
        tokens=tokens,
        log_probs=-rng.uniform(0, 5, steps).astype(np.float32),
        entropies=rng.uniform(0, 3, steps).astype(np.float32),
        policy_versions=["pol-v3"] * (steps - 2) + ["pol-v4"] * 2,
        outcome="failure",
        termination_reason="timeout",
        custom_data={"source": "policy", "policy_version": "pol-v4", "reward_model_version": "rm-v1",
                     "family": "block2location", "control_rate_hz": "10.0", "seed": "0"},
        events=events,
        steps_to_go=track,
    )


@pytest.fixture
def demo_episode() -> Episode:
    return make_demo_episode()


@pytest.fixture
def policy_episode() -> Episode:
    return make_policy_episode()


@pytest.fixture
def make_demo():
    """The :func:`make_demo_episode` factory."""
    return make_demo_episode


@pytest.fixture
def tmpfs():
    """The :func:`mounted_tmpfs` context manager (skips the test where mounting is not permitted)."""
    return mounted_tmpfs
