"""Stage-1 SFT: label construction, the even batch split, the feature cache, and a tiny end-to-end
run (collect demos -> train-sft -> checkpoints load -> export verifies)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from efm_ros.learn.features import frame_pairs, prev_frame_index
from efm_ros.learn.sft import (
    EpochSampler,
    SFTConfig,
    bc_examples,
    lr_at,
    split_batch,
    split_episodes,
    stg_examples,
)
from efm_ros.model.bins import StepsToGoBins
from feature_helpers import toy_features


def test_prev_frame_of_first_frame_is_itself():
    assert prev_frame_index(0) == 0
    np.testing.assert_array_equal(prev_frame_index(np.arange(4)), [0, 0, 1, 2])
    cur, prev, ep, t = frame_pairs(np.array([0, 4]), np.array([3, 5]), include_last=True)
    np.testing.assert_array_equal(cur, np.r_[0:4, 4:10])
    np.testing.assert_array_equal(prev, [0, 0, 1, 2, 4, 4, 5, 6, 7, 8])
    np.testing.assert_array_equal(ep, [0] * 4 + [1] * 6)
    np.testing.assert_array_equal(t, np.r_[0:4, 0:6])


def test_steps_to_go_labels_first_frame_T_goal_frame_0():
    fs = toy_features((3, 5))
    bins = StepsToGoBins(t_max=100, num_bins=50)
    ex = stg_examples(fs, np.array([0, 1]), np.array([7, 9]), bins)
    assert len(ex) == 4 + 6                                   # every frame, the goal frame included
    np.testing.assert_array_equal(ex.label, [3, 2, 1, 0, 5, 4, 3, 2, 1, 0])
    first, goal = np.array([0, 4]), np.array([3, 9])
    np.testing.assert_array_equal(ex.label[first], fs.lengths)   # frame 0: T steps to go
    np.testing.assert_array_equal(ex.label[goal], [0, 0])        # goal frame: 0
    np.testing.assert_array_equal(ex.target, bins.encode(ex.label))
    np.testing.assert_array_equal(ex.cur[goal], [3, 9])          # the goal frame's own features
    np.testing.assert_array_equal(ex.prev[first], ex.cur[first])
    np.testing.assert_array_equal(ex.text, [7] * 4 + [9] * 6)


def test_bc_examples_pair_frame_t_with_action_t():
    fs = toy_features((3, 5))
    ex = bc_examples(fs, np.array([1]), np.array([0, 1]))        # episode 1 only
    assert len(ex) == 5                                           # T actions, no goal-frame example
    np.testing.assert_array_equal(ex.cur, fs.starts[1] + np.arange(5))
    np.testing.assert_array_equal(ex.prev, fs.starts[1] + np.array([0, 0, 1, 2, 3]))
    np.testing.assert_array_equal(ex.target, np.stack([np.ones(5), np.arange(5)], 1))  # (episode, t)


def test_batch_split_evenly_between_objectives():
    assert split_batch(128) == (64, 64)
    assert split_batch(7) == (3, 4)
    with pytest.raises(ValueError):
        split_batch(1)
    rng = np.random.default_rng(0)
    n_bc, n_stg = split_batch(128)
    bc, stg = EpochSampler(100, rng), EpochSampler(30, rng)
    seen = np.concatenate([bc(n_bc) for _ in range(25)])          # 1600 = 16 full passes
    assert np.bincount(seen, minlength=100).tolist() == [16] * 100  # without replacement per pass
    assert len(stg(n_stg)) == 64 and stg.epochs == 3


def test_split_by_episode_is_deterministic_and_disjoint():
    tr, va = split_episodes(50, 0.1, seed=3)
    assert len(va) == 5 and len(tr) == 45 and not set(tr) & set(va)
    tr2, va2 = split_episodes(50, 0.1, seed=3)
    np.testing.assert_array_equal(va, va2)
    assert not np.array_equal(split_episodes(50, 0.1, seed=4)[1], va)
    assert len(split_episodes(3, 0.1, seed=0)[1]) == 1              # at least one val episode


def test_lr_schedule_warms_up_then_decays():
    cfg = SFTConfig(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    lrs = [lr_at(s, 100, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[-1] == pytest.approx(1e-4, rel=0.05)


# ------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> Path:
    from efm_ros.data.collect import CollectConfig, collect_demos

    out = tmp_path_factory.mktemp("demos")
    summary = collect_demos(CollectConfig(out=str(out), episodes=6, seed=0, max_steps=60, fsync=False),
                            workers=1, progress=False)
    assert summary.episodes == 6
    return out


def test_feature_cache_matches_backbone_and_is_reused(demos, tmp_path):
    import torch

    from efm_ros.data import list_episodes, read_episode
    from efm_ros.learn.features import cached_episode_features
    from efm_ros.model.network import EFM, EFMConfig

    paths = list_episodes(demos)[:2]
    model = EFM(EFMConfig())
    fs = cached_episode_features(paths, model, tmp_path, progress=False)
    ep = read_episode(paths[1])
    with torch.no_grad():
        ref = model.backbone_features(torch.from_numpy(ep.frames[:4])).numpy()
    rows = fs.features[fs.starts[1]:fs.starts[1] + 4]
    assert np.abs(rows - ref).max() < 1e-3                  # ONNX backbone == torch backbone
    assert fs.lengths[1] == ep.num_steps and fs.instructions[1] == ep.instruction
    np.testing.assert_array_equal(fs.tokens[fs.token_starts[1]:fs.token_starts[1] + fs.lengths[1]], ep.tokens)
    again = cached_episode_features(paths, model, tmp_path, progress=False)
    assert again.meta == fs.meta and len(list(tmp_path.iterdir())) == 1   # hit: same entry, no new one


def test_train_sft_end_to_end(demos, tmp_path):
    from efm_ros.learn.sft import main
    from efm_ros.model import export
    from efm_ros.model.network import load_checkpoint

    run = tmp_path / "run"
    argv = ["--demos", str(demos), "--out", str(run), "--steps", "30", "--eval-every", "10", "--batch-size", "32",
            "--warmup-steps", "3", "--lr", "3e-3", "--val-fraction", "0.34", "--calibration-failures", "2",
            "--threads", "2", "--no-progress"]
    assert main(argv) == 0
    for name in ("config.json", "policy.safetensors", "reward_model.safetensors", "train_meta.json",
                 "instructions.npz", "metrics.csv", "curves.png"):
        assert (run / name).is_file(), name
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [10, 20, 30]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"]) - 0.3   # it learns
    meta = json.loads((run / "train_meta.json").read_text())
    assert meta["episodes"] == {**meta["episodes"], "train": 4, "val": 2}
    assert meta["success_k"] >= 1 and meta["success_threshold"] > 0 and meta["control_rate_hz"] == 10.0
    assert meta["metrics"]["policy_step"] in (10, 20, 30)
    policy, reward_model = load_checkpoint(run / "policy.safetensors"), load_checkpoint(run / "reward_model.safetensors")
    assert policy.config == reward_model.config and policy.config.trunk == "keypoint"   # the default head
    assert export.main([str(run), "--out", str(tmp_path / "model")]) == 0
    manifest = json.loads((tmp_path / "model" / "manifest.json").read_text())
    assert manifest["success"]["threshold_steps"] == pytest.approx(meta["success_threshold"])
    assert manifest["training"]["data_hash"] == meta["data_hash"]


def test_shift_moves_every_frame_of_an_episode_alike_and_repeats_the_border():
    from efm_ros.learn.features import shift_frames, view_shift

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (3, 12, 12, 3), dtype=np.uint8)
    out = shift_frames(frames, 2, -3)                          # 2 right, 3 up
    assert out.shape == frames.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, 0:9, 2:12], frames[:, 3:12, 0:10])   # content moved, every frame alike
    np.testing.assert_array_equal(out[:, 9:, 2:], np.repeat(frames[:, 11:12, 0:10], 3, axis=1))   # bottom row repeated
    np.testing.assert_array_equal(out[:, :, 0], out[:, :, 2])                      # left column repeated
    assert shift_frames(frames, 0, 0) is frames
    shifts = {view_shift(f"e{i:05d}", 1, 4) for i in range(200)}
    assert all(-4 <= dx <= 4 and -4 <= dy <= 4 for dx, dy in shifts) and len(shifts) > 40   # spread over the square
    assert view_shift("e00007", 2, 4) == view_shift("e00007", 2, 4)                      # reproducible
    assert [view_shift("e00007", v, 4) for v in (1, 2, 3)] != [view_shift("e00007", 1, 4)] * 3


def test_shifted_view_is_a_cache_of_its_own_with_view_zeros_rows(demos, tmp_path):
    import torch

    from efm_ros.data import list_episodes, read_episode
    from efm_ros.learn.features import ShiftedView, SymmetricView, cached_episode_features, shift_frames, view_shift
    from efm_ros.learn.symmetry import transform_frames
    from efm_ros.model.network import EFM, EFMConfig

    paths = list_episodes(demos)[:2]
    model = EFM(EFMConfig())
    plain = cached_episode_features(paths, model, tmp_path, progress=False)
    view = cached_episode_features(paths, model, tmp_path, progress=False, view=ShiftedView(1, 4))
    assert len(list(tmp_path.iterdir())) == 2 and view.meta["shift"] == {"view": 1, "pixels": 4}
    assert view.episode_ids == plain.episode_ids and np.array_equal(view.starts, plain.starts)
    np.testing.assert_array_equal(view.tokens, plain.tokens)          # the same actions: a shift does not change them
    ep = read_episode(paths[1])
    with torch.no_grad():
        ref = model.backbone_features(torch.from_numpy(shift_frames(ep.frames[:3], *view_shift(ep.episode_id, 1, 4)))).numpy()
    np.testing.assert_allclose(view.features[view.starts[1]:view.starts[1] + 3], ref, atol=1e-3)
    turned = cached_episode_features(paths, model, tmp_path, progress=False, view=SymmetricView("rot90"))
    assert len(list(tmp_path.iterdir())) == 3 and turned.meta["symmetry"] == "rot90"
    with torch.no_grad():
        ref = model.backbone_features(torch.from_numpy(transform_frames(ep.frames[:3], "rot90"))).numpy()
    np.testing.assert_allclose(turned.features[turned.starts[1]:turned.starts[1] + 3], ref, atol=1e-3)
    with pytest.raises(ValueError, match="shifted view"):
        ShiftedView(1, 0)
    with pytest.raises(ValueError, match="unknown symmetry"):
        SymmetricView("rot45")


def test_train_sft_with_shifted_views_trains_on_every_view_and_validates_on_the_recording(demos, tmp_path):
    from efm_ros.learn.sft import main

    base = ["--demos", str(demos), "--steps", "10", "--eval-every", "10", "--batch-size", "16", "--val-fraction", "0.34",
            "--calibration-failures", "0", "--threads", "2", "--no-progress", "--cache-dir", str(tmp_path / "cache")]
    assert main([*base, "--out", str(tmp_path / "plain")]) == 0
    assert main([*base, "--out", str(tmp_path / "shifted"), "--shift-views", "2", "--shift-pixels", "3"]) == 0
    assert len(list((tmp_path / "cache").glob("*/meta.json"))) == 3     # the recording and two shifted views
    plain, shifted = (json.loads((tmp_path / r / "train_meta.json").read_text()) for r in ("plain", "shifted"))
    assert shifted["sft_config"]["shift_views"] == 2 and shifted["episodes"] == plain["episodes"]
    rows = {r: list(csv.DictReader(open(tmp_path / r / "metrics.csv")))[-1] for r in ("plain", "shifted")}
    assert float(rows["shifted"]["epoch"]) == pytest.approx(float(rows["plain"]["epoch"]) / 3, abs=2e-3)   # 3x the examples
    assert main([*base, "--out", str(tmp_path / "bad"), "--shift-views", "-1"]) == 2
    assert main([*base, "--out", str(tmp_path / "mirrored"), "--symmetries", "flip_lr", "rot90"]) == 0
    mirrored = json.loads((tmp_path / "mirrored" / "train_meta.json").read_text())
    assert mirrored["sft_config"]["symmetries"] == ["flip_lr", "rot90"] and mirrored["episodes"] == plain["episodes"]
    row = list(csv.DictReader(open(tmp_path / "mirrored" / "metrics.csv")))[-1]
    assert float(row["epoch"]) == pytest.approx(float(rows["plain"]["epoch"]) / 3, abs=2e-3)
    assert len(list((tmp_path / "cache").glob("*/meta.json"))) == 5     # + a cache per symmetry
    assert main([*base, "--out", str(tmp_path / "bad"), "--symmetries", "rot45"]) == 2
    assert main([*base, "--out", str(tmp_path / "bad"), "--symmetries", "flip_lr", "--symmetry-phrases",
                 '{"rot90": {}}']) == 2                                   # phrases for a symmetry not asked for


def test_mirrored_examples_turn_the_actions_and_the_instruction_but_not_steps_to_go():
    from efm_ros.learn.sft import SFTConfig, mirrored_examples, stg_examples
    from efm_ros.learn.symmetry import transform_tokens
    from efm_ros.model.bins import StepsToGoBins
    from efm_ros.model.network import EFMConfig

    fs = toy_features([3, 2])
    text = np.array([0, 1], np.int64)
    bc, stg = bc_examples(fs, np.array([0, 1]), text, future=2), stg_examples(fs, np.array([0, 1]), text, StepsToGoBins())
    instructions = ["go to the left side", "go to the right side", "go home"]
    mapped = {"go to the left side": "go to the right side", "go to the right side": "go to the left side"}
    config = EFMConfig()
    mbc, mstg = mirrored_examples(bc, stg, "flip_lr", mapped, instructions, config, SFTConfig())
    np.testing.assert_array_equal(mbc.text, 1 - bc.text)
    np.testing.assert_array_equal(mbc.target, transform_tokens(bc.target, "flip_lr", config.action_spec))
    np.testing.assert_array_equal(mbc.future, transform_tokens(bc.future, "flip_lr", config.action_spec))
    assert not np.array_equal(mbc.target, bc.target)
    np.testing.assert_array_equal(mstg.target, stg.target)
    np.testing.assert_array_equal(mstg.text, 1 - stg.text)


def test_examples_moved_point_at_another_views_rows():
    fs = toy_features([3, 2])
    ex = bc_examples(fs, np.array([0, 1]), np.zeros(2, np.int64))
    moved = ex.moved(100)
    np.testing.assert_array_equal(moved.cur, ex.cur + 100)
    np.testing.assert_array_equal(moved.prev, ex.prev + 100)
    np.testing.assert_array_equal(moved.final, ex.final + 100)
    np.testing.assert_array_equal(moved.target, ex.target)


def test_model_config_overrides_reach_the_network(tmp_path):
    from efm_ros.learn.sft import build_parser, main

    args = build_parser().parse_args(["--demos", "d", "--out", "o", "--model-config", '{"trunk": "flatten"}'])
    assert json.loads(args.model_config) == {"trunk": "flatten"}
    with pytest.raises(ValueError, match="unknown EFMConfig key"):   # a typo fails before any work
        main(["--demos", str(tmp_path), "--out", str(tmp_path / "run"), "--model-config", '{"trunc": "flatten"}',
              "--no-progress"])


def test_examples_point_at_their_episodes_goal_frame():
    fs = toy_features((3, 5))
    bins = StepsToGoBins(t_max=100, num_bins=50)
    bc = bc_examples(fs, np.array([0, 1]), np.array([0, 1]))
    stg = stg_examples(fs, np.array([1]), np.array([0, 1]), bins)
    np.testing.assert_array_equal(bc.final, [3] * 3 + [9] * 5)   # rows of frame T of episodes 0 and 1
    np.testing.assert_array_equal(stg.final, [9] * 6)


def test_goal_frame_loss_learns_where_the_target_ends_and_trains_nothing_it_exports():
    """The hindsight auxiliary (SFTConfig.goal_frame_weight): "nothing changes" scores ~1, the
    decoder learns the goal frame's difference through the head's feature map, and the EFM's own
    parameters (what export writes) do not include the decoder."""
    import torch

    from efm_ros.learn.sft import GoalFrameLoss
    from efm_ros.model.network import EFM, EFMConfig

    torch.manual_seed(0)
    model = EFM(EFMConfig(backbone="efficientnet_lite0", pretrained=False, image_size=32, trunk_channels=8,
                          keypoints=4, hidden=16, prev_dropout=0.0))
    c, h, w = model.feature_shape
    fs = toy_features((3, 5))
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(len(fs.features), c, h, w, generator=g)
    # the goal frame of each episode differs from its other frames by one bright cell, episode-specific
    for e, (s, n) in enumerate(zip(fs.starts, fs.lengths)):
        feats[s + n] = feats[s] + 0.0
        feats[s:s + n] = feats[s]
        feats[s + n, :, e, e] += 3.0
    ex = bc_examples(fs, np.array([0, 1]), np.array([0, 1]))
    loss = GoalFrameLoss(model, feats, ex)
    text = torch.stack([torch.full((384,), float(e)) for e in (0, 1)])[torch.from_numpy(ex.text)]
    cur = feats[torch.from_numpy(ex.cur)]
    with torch.no_grad():
        zero = (((feats[torch.from_numpy(ex.final)] - cur) / loss.scale) ** 2).mean().item()
    assert 0.5 < zero < 1.5
    params = list(model.trunk.parameters()) + list(loss.parameters())
    opt = torch.optim.Adam(params, 1e-2)
    first = None
    for _ in range(300):
        value = loss(model.trunk.feature_map(cur, cur, text), cur, ex.final)
        first = value.item() if first is None else first
        opt.zero_grad()
        value.backward()
        opt.step()
    assert value.item() < 0.2 * first
    exported = {id(p) for p in model.parameters()}
    assert not any(id(p) in exported for p in loss.parameters())
    with pytest.raises(ValueError, match="keypoint"):
        GoalFrameLoss(EFM(EFMConfig(pretrained=False, image_size=32, trunk="flatten")), feats, ex)


def test_future_action_tokens_follow_the_episode_and_stop_at_its_end():
    fs = toy_features((3, 5))                          # tokens encode (episode, t)
    ex = bc_examples(fs, np.array([0, 1]), np.array([0, 1]), future=2)
    assert ex.future.shape == (8, 2, 2)
    np.testing.assert_array_equal(ex.future[0], [[0, 1], [0, 2]])       # episode 0, t 0: a_1, a_2
    np.testing.assert_array_equal(ex.future[1], [[0, 2], [-1, -1]])     # t 1: a_2, then the episode has ended
    np.testing.assert_array_equal(ex.future[2], [[-1, -1], [-1, -1]])   # t 2 = T-1: nothing after it
    np.testing.assert_array_equal(ex.future[3], [[1, 1], [1, 2]])       # episode 1 never reads episode 0's tokens
    assert bc_examples(fs, np.array([0]), np.array([0])).future is None


def test_future_actions_loss_ignores_missing_steps_and_learns_the_chunk():
    import torch

    from efm_ros.learn.sft import FutureActionsLoss
    from efm_ros.model.network import EFM, EFMConfig

    torch.manual_seed(0)
    model = EFM(EFMConfig(pretrained=False, image_size=32, trunk_channels=8, keypoints=4, hidden=16, action_bins=5))
    fs = toy_features((3, 5))
    fs.tokens = fs.tokens % 5                          # valid bins
    ex = bc_examples(fs, np.array([0, 1]), np.array([0, 1]), future=3)
    loss = FutureActionsLoss(model, ex)
    z = torch.randn(len(ex), 16)
    only_missing = np.full_like(ex.future, -1)
    only_missing[:, 0] = ex.future[:, 0]
    value = loss(z, ex.future)
    assert torch.isfinite(value) and value.item() > 0
    assert torch.isfinite(loss(z, only_missing))
    w = torch.nn.Parameter(z.clone())
    opt = torch.optim.Adam([w, *loss.parameters()], 5e-2)
    first = loss(w, ex.future).item()
    for _ in range(200):
        v = loss(w, ex.future)
        opt.zero_grad()
        v.backward()
        opt.step()
    assert v.item() < 0.1 * first
    with pytest.raises(ValueError, match="keypoint"):
        FutureActionsLoss(EFM(EFMConfig(pretrained=False, image_size=32, trunk="flatten")), ex)


def test_symmetric_instructions_come_from_the_robot_or_the_users_phrases():
    from efm_ros.learn.sft import robot_instruction_list
    from efm_ros.learn.symmetry import SymmetryError

    ins = ["push the red block to the left side", "push the red block to the blue block"]
    listed, mapped = robot_instruction_list("efm_ros.sim.tabletop:TabletopRobot", {}, 96, ins, ["flip_lr"])
    assert ins[0] in listed and mapped == {"flip_lr": {ins[0]: "push the red block to the right side", ins[1]: ins[1]}}
    with pytest.raises(SymmetryError, match="cannot say"):            # a real arm's bags: no backend to ask
        robot_instruction_list("", {}, 96, ["go left"], ["flip_lr"])
    _, mapped = robot_instruction_list("", {}, 96, ["go left"], ["flip_lr", "rot180"],
                                       {"flip_lr": {"left": "right", "right": "left"}, "rot180": {}})
    assert mapped == {"flip_lr": {"go left": "go right"}, "rot180": {"go left": "go left"}}
