"""Rung 0 of the Stage-2 ladder: the authors' pointmass toy through OUR Stage 1 and Stage 2.

The paper's learner (REINFORCE on Monte-Carlo returns of the frozen steps-to-go model's progress
reward, γ 0.9, c 0.05, B 64, N 16, AdamW) must turn a detouring behaviour-cloned policy into a
direct one: more successes and far shorter episodes (notebook: SFT ≈ 92 % → SI ≈ 100 %, 69 → 13
steps). At CI scale (4,000 demos, 10,000 Stage-1 steps) it measured 61 % → 100 %, 90 → 25 steps
(71 % → 100 %, 86 → 20 on an earlier machine).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from efm_ros.sim import pointmass as pm


def test_pd_controller_without_waypoints_reaches_every_goal_in_about_13_steps():
    env = pm.PointMass(400, seed=1)
    env.reset()
    steps = np.full(400, -1)
    for t in range(pm.MAX_STEPS):
        env.step(pm.pd_action(env.pos, env.vel, env.goal))
        steps[(steps < 0) & env.success()] = t + 1
    assert (steps > 0).all() and 10 <= steps.mean() <= 16


def test_demonstrations_detour_through_waypoints_and_end_at_the_goal():
    demos = pm.demonstrations(300, seed=0, waypoints=5)
    lengths = np.array([len(d.actions) for d in demos])
    assert len(demos) == 300 and lengths.min() >= 10 and lengths.max() < pm.MAX_STEPS
    assert 60 <= lengths.mean() <= 90                       # the detours: direct is ~13 steps
    for d in demos[:20]:
        assert len(d.states) == len(d.actions) + 1
        assert np.linalg.norm(d.states[-1, :2] - d.states[-1, 4:]) < pm.SUCCESS_RADIUS
        assert np.linalg.norm(d.states[-2, :2] - d.states[-2, 4:]) >= pm.SUCCESS_RADIUS


def test_state_efm_standardises_inside_the_network_and_round_trips(tmp_path):
    from efm_ros.learn.pointmass import PointmassConfig, _model_config
    from efm_ros.model.network import EFM, load_checkpoint, save_checkpoint

    states = np.random.default_rng(0).normal(3.0, 2.0, (500, pm.STATE_DIM)).astype(np.float32)
    model = EFM(_model_config(PointmassConfig(), states)).eval()
    f = model.backbone_features(torch.from_numpy(states))
    assert abs(float(f.mean())) < 1e-4 and abs(float(f.std()) - 1.0) < 1e-2
    a, s = model.head(f[:4], f[:4], torch.ones(4, 1))
    assert a.shape == (4, 2, 41) and s.shape == (4, 50)
    back = load_checkpoint(save_checkpoint(model, tmp_path / "m.safetensors"))
    assert torch.allclose(back.head(back.backbone_features(torch.from_numpy(states[:4])), f[:4], torch.ones(4, 1))[0], a)
    with pytest.raises(ValueError):
        model.backbone_features(torch.zeros(2, 5))


def test_rung0_self_improvement_lifts_success_and_removes_the_detours(tmp_path):
    from efm_ros.learn.improve import ImproveConfig
    from efm_ros.learn.pointmass import PointmassConfig, run

    cfg = PointmassConfig(demos=4000, sft_steps=10_000, si_transitions=131_072, eval_episodes=300, seed=0,
                          improve=ImproveConfig(seed=0), progress=False)
    res = run(cfg, tmp_path / "pm")
    before, after = res["before"], res["after"]
    assert 0.4 <= before["success"] <= 0.95, before              # imperfect but working
    assert after["ci95"][0] > before["ci95"][1], (before, after)   # a lift beyond both intervals
    assert after["success"] >= 0.95
    assert after["mean_length"] <= 0.5 * before["mean_length"], (before, after)
    assert (tmp_path / "pm" / "results.json").exists() and (tmp_path / "pm" / "curves.png").exists()
    # the practised policy is kept, and it is the one that was evaluated
    from efm_ros.learn.pointmass import pointmass_task, rollouts, summarise
    from efm_ros.model.network import load_checkpoint

    kept = load_checkpoint(tmp_path / "pm" / "policy_after.safetensors")
    reward = load_checkpoint(tmp_path / "pm" / "stage1" / "reward_model.safetensors")
    again = summarise(rollouts(kept, reward, cfg.eval_episodes, seed=55_000 + cfg.seed, envs=cfg.envs,
                               task=pointmass_task(cfg.waypoints)))
    assert again["success"] == after["success"], (again, after)


def test_the_stage1_cache_reuses_a_result_only_for_the_same_inputs(tmp_path, monkeypatch):
    """--stage1-cache: a Stage 1 kept under its inputs' key is reused instead of trained again; a
    change of any input (here the seed, the demonstrations or the task) is a different key."""
    import dataclasses

    from efm_ros.learn import pointmass as lp
    from efm_ros.model.network import EFM, save_checkpoint

    cfg = lp.PointmassConfig(demos=10, sft_steps=5, stage1_cache=str(tmp_path / "cache"), progress=False)
    task = lp.pointmass_task()
    keys = {lp.stage1_key(c, t) for c, t in [(cfg, task), (dataclasses.replace(cfg, seed=1), task),
                                             (dataclasses.replace(cfg, demos=11), task), (cfg, lp.pointmass_task(4))]}
    assert len(keys) == 3         # the waypoints only enter through the config, not the task name
    assert lp.stage1_key(dataclasses.replace(cfg, si_transitions=7, eval_episodes=3), task) == lp.stage1_key(cfg, task)

    trained = []

    def fake_train(c, out, t):
        trained.append(out)
        model = EFM(lp._model_config(c, np.zeros((2, pm.STATE_DIM), np.float32), t))
        for name in ("policy", "reward_model"):
            save_checkpoint(model, out / f"{name}.safetensors")
        return model, model, {"demos": c.demos}

    monkeypatch.setattr(lp, "_train_stage1", fake_train)
    first = lp.stage1(cfg, tmp_path / "a", task)
    again = lp.stage1(cfg, tmp_path / "b", task)
    assert len(trained) == 1 and again[2]["from_cache"] and "from_cache" not in first[2]
    assert (tmp_path / "b" / "policy.safetensors").read_bytes() == (tmp_path / "a" / "policy.safetensors").read_bytes()
    lp.stage1(dataclasses.replace(cfg, seed=3), tmp_path / "c", task)
    assert len(trained) == 2
