"""Steps-to-go on an operator's marked policy rollouts (``efm-ros mark``, ``eval --record``,
``train-sft --rollouts``): the marks file refuses what cannot be true, the labels of reached and
never-reached rollouts, the censored objective, and the whole path on real bags."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from efm_ros.data.marks import MARKS_FILE, SIMULATOR, Mark, MarkError, append_marks, marked_rollouts, read_marks
from efm_ros.learn.sft import Examples, rollout_stg_examples, stg_examples
from efm_ros.model.bins import StepsToGoBins

from feature_helpers import toy_features

BINS = StepsToGoBins(t_max=100, num_bins=50)


def test_reached_rollout_is_labelled_like_a_demo_up_to_its_mark_and_a_failure_is_censored():
    fs = toy_features((6, 4))                    # rows 0..6 and 7..11
    marks = [Mark("ep0", "success", 3, "op"), Mark("ep1", "failure", None, "op")]
    ex = rollout_stg_examples(fs, marks, np.array([0, 1]), np.array([5, 6]), BINS, row_offset=100)
    assert len(ex) == 4 + 5                      # frames 0..3 of ep0 (not 4..6, after the goal), all 5 of ep1
    np.testing.assert_array_equal(ex.censored, [False] * 4 + [True] * 5)
    np.testing.assert_array_equal(ex.label, [3, 2, 1, 0, 4, 3, 2, 1, 0])
    np.testing.assert_array_equal(ex.target[:4], BINS.encode([3, 2, 1, 0]))
    np.testing.assert_array_equal(ex.target[4:], [3, 2, 2, 1, 1])       # "more than T - t": bins wholly above it
    assert BINS.first_bin_at_least(1) == 1 and BINS.first_bin_at_least(500) == 49   # the last frame: not bin {0, 1}
    np.testing.assert_array_equal(ex.cur, np.r_[100:104, 107:112])                # rows after the demos'
    np.testing.assert_array_equal(ex.final[:4], [103] * 4)                        # the marked goal frame
    np.testing.assert_array_equal(ex.text, [5] * 4 + [6] * 5)
    with pytest.raises(ValueError, match="past its last frame"):
        rollout_stg_examples(fs, [Mark("ep0", "success", 7, "op"), marks[1]], np.array([0]), np.array([0, 0]), BINS)
    both = stg_examples(fs, np.array([0]), np.array([0, 0]), BINS) + ex
    assert isinstance(both, Examples) and len(both) == 7 + 9
    np.testing.assert_array_equal(both.censored, [False] * 11 + [True] * 5)


def test_censored_loss_allows_every_count_above_the_bound_and_teaches_d_to_stay_above_it():
    import torch

    from efm_ros.learn.objectives import censored_steps_to_go_loss, expected_steps_to_go, steps_to_go_loss

    logits = torch.zeros(3, 50)
    assert censored_steps_to_go_loss(logits, torch.tensor([0, 0, 0])).item() == pytest.approx(0.0, abs=1e-6)
    last = torch.tensor([49, 49, 49])            # only the top bin allowed: the exact loss of that bin
    assert censored_steps_to_go_loss(logits, last).item() == pytest.approx(steps_to_go_loss(logits, last).item())
    # a frame predicted at the goal (d ~ 0) that was never the goal: the loss pulls d above the bound
    w = torch.zeros(1, 50)
    w[0, 0] = 12.0
    w.requires_grad_(True)
    opt = torch.optim.Adam([w], 0.1)
    bound = torch.tensor([int(BINS.first_bin_at_least(11))])  # "more than 10 steps to go"
    values = torch.from_numpy(BINS.values)
    assert expected_steps_to_go(w.detach(), values).item() < 1.0
    for _ in range(200):
        loss = censored_steps_to_go_loss(w, bound)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert expected_steps_to_go(w.detach(), values).item() > 10.0 and loss.item() < 0.05


def _bag(root: Path, name: str, steps: int) -> Path:
    from efm_ros.data.bag import write_episode
    from efm_ros.data.episode import Episode

    ep = Episode.from_rollout(robot="r0", episode_id=name, instruction="push it", frames=np.zeros((steps + 1, 8, 8, 3),
                              np.uint8), actions=np.zeros((steps, 2)), tokens=np.zeros((steps, 2), int),
                              control_rate_hz=10.0, start_ns=10**18, policy_version="v1", end_event="timeout",
                              outcome="unknown")
    return write_episode(root, ep, fsync=False)


def test_marks_are_checked_against_their_bags_and_a_later_mark_corrects_an_earlier_one(tmp_path):
    from efm_ros.data.marks import main

    _bag(tmp_path, "e0", 5)
    _bag(tmp_path, "e1", 5)
    assert main([str(tmp_path), "e0", "--success-at", "4", "--by", "ana"]) == 0
    assert main([str(tmp_path), "e0", "--success-at", "6", "--by", "ana"]) == 1      # frames are 0..5
    assert main([str(tmp_path), "e9", "--failed", "--by", "ana"]) == 1               # no such bag
    assert main([str(tmp_path), "e1", "--by", "ana"]) == 1                           # says nothing
    assert main([str(tmp_path), "e1", "--failed", "--by", ""]) == 1                  # nobody
    assert read_marks(tmp_path) == {"e0": read_marks(tmp_path)["e0"]}                # refusals wrote nothing
    assert main([str(tmp_path), "e0", "--failed", "--by", "ben"]) == 0               # a correction
    marks = read_marks(tmp_path)
    assert marks["e0"].outcome == "failure" and marks["e0"].marked_by == "ben"
    assert len((tmp_path / MARKS_FILE).read_text().splitlines()) == 3                # both rows kept
    found = marked_rollouts([tmp_path])
    assert [p.name for p in found.paths] == ["e0"] and found.unmarked == 1
    assert found.counts() == {"marked": 1, "success": 0, "failure": 1, "unmarked": 1, "marked_by": {"ben": 1}}
    with (tmp_path / MARKS_FILE).open("a") as f:
        f.write("e1,reached,3,ana,\n")
    with pytest.raises(MarkError, match=f"{MARKS_FILE}:4"):
        read_marks(tmp_path)
    with pytest.raises(MarkError):                                                   # never append to a broken file
        append_marks(tmp_path, [Mark("e1", "failure", None, "ana")])


def test_recorded_and_marked_rollouts_train_steps_to_go_and_count_their_marks(tmp_path):
    """eval --record writes bags a reader reads and ground-truth marks named as the simulator's;
    train-sft --rollouts trains on the marked ones, validates and calibrates on its held-out share,
    and says how many it used and who marked them."""
    from efm_ros.data import read_episode
    from efm_ros.learn.evaluate import main as eval_main
    from efm_ros.learn.sft import main as sft_main

    rec = tmp_path / "rollouts"
    argv = ["--model", "models/efm_sft", "--episodes", "4", "--max-steps", "12", "--record", str(rec),
            "--out", str(tmp_path / "eval"), "--no-plots", "--quiet"]
    assert eval_main(argv) == 0
    assert eval_main(argv) == 2                                    # never overwrites recorded episodes
    marks = read_marks(rec)
    assert len(marks) == 4 and {m.marked_by for m in marks.values()} == {SIMULATOR}
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert sum(m.outcome == "success" for m in marks.values()) == summary["ground_truth"]["successes"]
    ep = read_episode(rec / "eval_s0_e00000")
    assert ep.custom_data["outcome"] == "unknown" and ep.num_steps == len(ep.frames) - 1 <= 12
    assert np.all(ep.log_probs < 0)                                # the policy's own log-probabilities
    assert _mark_cli(rec, "eval_s0_e00001", "--success-at", "5") == 0   # a person corrects one

    from efm_ros.data.collect import CollectConfig, collect_demos

    demos = tmp_path / "demos"
    collect_demos(CollectConfig(out=str(demos), episodes=4, seed=0, max_steps=60, fsync=False), workers=1,
                  progress=False)
    run = tmp_path / "run"
    assert sft_main(["--demos", str(demos), "--out", str(run), "--steps", "10", "--eval-every", "5",
                     "--batch-size", "16", "--warmup-steps", "2", "--val-fraction", "0.5", "--calibration-failures",
                     "0", "--threads", "2", "--no-progress", "--rollouts", str(rec), "--cache-dir",
                     str(tmp_path / "cache")]) == 0
    meta = json.loads((run / "train_meta.json").read_text())
    r = meta["rollouts"]
    assert r["marked"] == 4 and r["train"] == 2 and r["val"] == 2 and r["unmarked"] == 0
    assert r["marked_by"] == {SIMULATOR: 3, "ana": 1}
    assert r["censored_train_examples"] <= r["stg_train_examples"]
    assert sft_main(["--demos", str(demos), "--out", str(tmp_path / "run2"), "--rollouts", str(demos),
                     "--no-progress"]) == 2                        # demos carry no marks: refused, named

    # the deployed policy keeps acting; only its judge is the one retrained on the marks
    from efm_ros.model.export import load_model_checkpoints, main as export_main
    from efm_ros.model.network import load_checkpoint

    assert sft_main(["--demos", str(demos), "--out", str(tmp_path / "base"), "--steps", "5", "--eval-every", "5",
                     "--batch-size", "16", "--val-fraction", "0.5", "--calibration-failures", "0", "--threads", "2",
                     "--no-progress", "--cache-dir", str(tmp_path / "cache")]) == 0
    assert export_main([str(tmp_path / "base"), "--reward-run", str(run), "--out", str(tmp_path / "model")]) == 0
    manifest = json.loads((tmp_path / "model" / "manifest.json").read_text())
    assert manifest["success"]["threshold_steps"] == pytest.approx(meta["success_threshold"])
    policy, reward = load_model_checkpoints(tmp_path / "model")
    for mine, theirs in ((policy, tmp_path / "base" / "policy.safetensors"), (reward, run / "reward_model.safetensors")):
        expected = load_checkpoint(theirs).state_dict()
        assert all(np.array_equal(v.numpy(), expected[k].numpy()) for k, v in mine.state_dict().items())


def _mark_cli(root, *args) -> int:
    from efm_ros.data.marks import main

    return main([str(root), *args, "--by", "ana"])
