"""``efm-ros eval`` (efm_ros.learn.evaluate) end to end on a tiny exported model with random weights."""
import csv
import json

import numpy as np
import pytest
import torch

from efm_ros.learn import evaluate as ev
from efm_ros.model.export import export_model
from efm_ros.model.network import EFM, EFMConfig
from efm_ros.model.text import InstructionTable
from efm_ros.sim.instructions import all_instructions

SIZE = 32
S, K = 5.0, 2


def comparable(result: dict) -> dict:
    """A result without its timing (the only part that may differ between identical runs)."""
    return {k: v for k, v in result.items() if k != "timing"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny EFM (random backbone, 32 px, small trunk) exported with s = 5, k = 2 and every
    Block2Block instruction (random embeddings)."""
    torch.manual_seed(0)
    config = EFMConfig(pretrained=False, image_size=SIZE, trunk_channels=8, hidden=16)
    texts = all_instructions(("block2block",))
    emb = np.random.default_rng(0).normal(size=(len(texts), 384)).astype(np.float32)
    out = tmp_path_factory.mktemp("models") / "tiny"
    export_model(EFM(config).eval(), out, instructions=InstructionTable(dict(zip(texts, emb))),
                 success_threshold=S, success_k=K, control_rate_hz=10.0, data_hash="test", metrics={})
    return out


def test_wilson_interval_hand_computed():
    # 8/10, z = 1.96: centre (0.8 + 0.19208) / 1.38416 = 0.716738, half 1.96/1.38416 * sqrt(0.016 + 0.009604) = 0.226581
    lo, hi = ev.wilson_interval(8, 10)
    assert (lo, hi) == (pytest.approx(0.490157, abs=1e-6), pytest.approx(0.943319, abs=1e-6))
    # 0/10: upper = (z²/n) / (1 + z²/n) = 0.38416 / 1.38416
    assert ev.wilson_interval(0, 10) == (0.0, pytest.approx(0.277540, abs=1e-6))
    assert ev.wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        ev.wilson_interval(3, 2)


def test_evaluate_policy_summary_and_reproducibility(model_dir):
    kw = dict(max_steps=8, progress=False)
    r = ev.evaluate_policy(model_dir, 3, seed=7, **kw)
    assert set(ev.SUMMARY_KEYS) <= set(r) and len(r["episodes"]) == 3
    gt, det = r["ground_truth"], r["detector"]
    assert 0.0 <= gt["success_rate"] <= 1.0 and 0.0 <= det["reported_success_rate"] <= 1.0
    assert gt["ci95"][0] <= gt["success_rate"] <= gt["ci95"][1]
    assert (det["s"], det["k"]) == (S, K) and (r["model"]["s"], r["model"]["k"]) == (S, K)
    assert set(det["episode"]) >= {"precision", "recall", "hit", "early", "false_alarm", "missed", "correct_reject"}
    assert set(det["frame"]) >= {"precision", "recall", "fpr", "tp", "fp", "fn", "tn"}
    assert sum(det["episode"][o] for o in ("hit", "early", "false_alarm", "missed", "correct_reject")) == 3
    assert r["policy"]["mean_entropy"] > 0 and r["config"]["families"] == ["block2block"]
    for e in r["episodes"]:
        assert len(e["d"]) == e["frames"] == len(e["ground_truth_frames"]) and e["steps"] <= 8
        assert e["success"] == (e["success_tick"] is not None)
    assert comparable(ev.evaluate_policy(model_dir, 3, seed=7, **kw)) == comparable(r)
    other = ev.evaluate_policy(model_dir, 3, seed=8, **kw)
    assert [e["seed"] for e in other["episodes"]] != [e["seed"] for e in r["episodes"]]
    json.dumps({k: r[k] for k in ev.SUMMARY_KEYS})        # summary.json is plain JSON


def test_workers_give_the_same_results(model_dir):
    kw = dict(max_steps=5, progress=False)
    one = ev.evaluate_policy(model_dir, 2, seed=1, **kw)
    two = ev.evaluate_policy(model_dir, 2, seed=1, workers=2, **kw)
    one["config"].pop("workers"), two["config"].pop("workers")
    assert comparable(one) == comparable(two)


class CountdownRobot:
    """A stand-in robot whose ground truth is known: even seeds succeed after 3 steps, odd never."""

    action_dim = 2
    control_rate_hz = 10.0

    def __init__(self, image_size=SIZE):
        self.size, self.t, self.seed = image_size, 0, 0

    def reset(self, seed=None, instruction=None):
        self.t, self.seed = 0, int(seed)
        return instruction or "push the red block to the blue block"

    def step(self, action):
        self.t += 1

    def observe(self):
        return np.full((self.size, self.size, 3), 10 * self.t, np.uint8)

    def success(self):
        return self.seed % 2 == 0 and self.t >= 3


def test_ground_truth_and_detector_are_reported_separately(model_dir):
    robot = f"{__name__}:CountdownRobot"
    seeds = [ev.episode_seed(3, i) for i in range(4)]
    wins = sum(s % 2 == 0 for s in seeds)
    # s huge: the detector fires after k = 2 ticks, before any goal -> early / false alarm
    eager = ev.evaluate_policy(model_dir, 4, seed=3, max_steps=6, robot=robot, success_threshold=1e6, progress=False)
    gt = eager["ground_truth"]
    assert gt["successes"] == wins and gt["mean_length"] == (3.0 if wins else None)
    for e, seed in zip(eager["episodes"], seeds):
        if seed % 2 == 0:    # ground truth at tick 3, then k - 1 = 1 confirmation tick
            assert (e["success"], e["steps"], e["frames"], e["detector_tick"]) == (True, 3, 5, 1)
            assert e["detector_outcome"] == "early" and e["detector_early_by"] == 2
        else:
            assert (e["success"], e["steps"], e["frames"], e["detector_outcome"]) == (False, 6, 7, "false_alarm")
    det = eager["detector"]
    assert det["episode"]["precision"] == 0.0 and det["reported_success_rate"] == 1.0
    assert det["frame"]["fp"] == sum(e["frames"] for e in eager["episodes"]) - 2 * wins
    # s below every d: never fires -> missed / correct reject; ground truth unchanged
    silent = ev.evaluate_policy(model_dir, 4, seed=3, max_steps=6, robot=robot, success_threshold=-1.0, progress=False)
    assert silent["ground_truth"] == eager["ground_truth"]
    quiet = silent["detector"]["episode"]
    assert quiet["missed"] == wins and quiet["correct_reject"] == 4 - wins
    assert silent["detector"]["episode"]["precision"] is None and silent["detector"]["reported_success_rate"] == 0.0


def test_unknown_instructions_are_refused_up_front(model_dir):
    with pytest.raises(ValueError, match="no embedding"):
        ev.evaluate_policy(model_dir, 1, families=["block2location"], progress=False)


def test_cli_writes_report_with_demo_quality(model_dir, tmp_path):
    from efm_ros.data import Episode, write_episode
    from efm_ros.sim.demonstrator import run_demo_episode
    from efm_ros.sim.tabletop import TabletopRobot

    robot = TabletopRobot(image_size=SIZE, families=("block2block",))
    demos = tmp_path / "demos"
    for i, seed in enumerate((0, 1, 2)):
        ro = run_demo_episode(robot, seed=seed)
        if ro.success:
            write_episode(demos, Episode.from_demonstration(
                robot="demo_0", episode_id=f"demo_{i}", instruction=ro.instruction, frames=ro.frames,
                actions=ro.actions, control_rate_hz=10.0, start_ns=10**18 + i * 10**12), fsync=False)
    out = tmp_path / "report"
    argv = ["--model", str(model_dir), "--episodes", "2", "--max-steps", "6", "--seed", "4", "--out", str(out),
            "--demos", str(demos), "--quiet"]
    assert ev.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == set(ev.SUMMARY_KEYS) and "episodes" not in summary
    stg = summary["steps_to_go"]
    assert stg["episodes"] >= 1 and stg["frames"] > stg["episodes"] and "spearman" in stg and stg["mae"] >= 0
    rows = list(csv.DictReader((out / "episodes.csv").open()))
    assert len(rows) == 2 and rows[0]["detector_outcome"] in ("hit", "early", "false_alarm", "missed", "correct_reject")
    traces = np.load(out / "traces.npz")
    assert traces["offsets"][-1] == len(traces["d"]) == sum(int(r["frames"]) for r in rows)
    for png in ("success_length.png", "d_traces.png", "d_vs_true_steps.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
