"""Stage 2 end to end on the embedded robot: on-policy episodes -> REINFORCE update -> new version."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from efm_ros.data.bag import write_episode
from efm_ros.learn.actors import rollout
from efm_ros.learn.improve import ImproveConfig, Improver
from efm_ros.model.export import load_model_checkpoints
from efm_ros.model.runtime import load_model
from efm_ros.sim.tabletop import TabletopRobot

SMALL = dict(updates=2, batch_size=16)  # N·B = 32 transitions instead of 1024, same code path


def _episodes(model_dir, n, seed0, max_steps=8):
    policy = load_model(model_dir)
    robot = TabletopRobot(seed=0, families=("block2block",))
    return [rollout(robot, policy, policy, seed=seed0 + i, episode_id=f"ep_{seed0 + i:04d}", max_steps=max_steps)
            for i in range(n)]


@pytest.fixture(scope="module")
def episodes_dir(tmp_path_factory, sim_model_dir):
    d = tmp_path_factory.mktemp("episodes")
    for ep in _episodes(sim_model_dir, 5, 100):
        write_episode(d, ep)
    return d


def test_one_iteration_updates_the_head_only_and_publishes_a_verified_version(tmp_path, sim_model_dir, episodes_dir):
    out = tmp_path / "si"
    imp = Improver(sim_model_dir, sim_model_dir, out, ImproveConfig(**SMALL))
    initial = imp.version
    assert imp.ingest_dir(episodes_dir) == 5 and imp.counts["episodes_used"] == 5
    assert imp.ready() and len(imp.buffer) >= 32
    head0 = {k: v.clone() for k, v in imp.policy.state_dict().items()}
    row = imp.publish(imp.update())
    # the offline rewards from the frozen model equal what the (in-process) reward node computed
    assert row["reward_check_max_abs_diff"] < 1e-3
    assert np.isfinite(row["loss"]) and row["episodes"] == 5 and 0.0 <= row["detector_success_rate"] <= 1.0
    after = imp.policy.state_dict()
    changed = [k for k in after if not torch.equal(after[k], head0[k])]
    assert changed and not any(k.startswith("backbone") for k in changed), "the vision backbone must stay frozen"
    assert len(imp.buffer) == 0, "the buffer is cleared after the N updates"
    vdir = out / "versions" / "v0001"
    model = load_model(vdir)  # verifies the manifest
    assert model.version == imp.version == "si-v0001"
    policy, _ = load_model_checkpoints(vdir)
    assert all(torch.equal(policy.state_dict()[k], after[k]) for k in after)
    assert (out / "metrics.csv").exists() and (out / "curves.png").exists()
    # the iteration's row describes the episodes of the version that ACTED (the starting policy),
    # so with one row the guard can only name that version, and its directory is the starting one
    best = json.loads((out / "best.json").read_text())
    assert best["version"] == initial and Path(best["directory"]) == Path(sim_model_dir).resolve()
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert rows[0]["version"] == rows[0]["version_trained_on"] == initial and rows[0]["new_version"] == "si-v0001"
    assert "gt_success_rate" in rows[0]
    assert float(rows[0]["gt_reached_rate"]) >= float(rows[0]["gt_success_rate"])

    # strictly on-policy: an episode of the previous version is now skipped, one of the new is used
    old = _episodes(sim_model_dir, 1, 200)[0]
    assert imp.add_episode(old).startswith("skipped") and imp.counts["episodes_off_policy"] == 1
    new = _episodes(vdir, 1, 201)[0]
    assert imp.add_episode(new) == "used"
    cut = _episodes(vdir, 1, 202)[0]
    cut.termination_reason = "logger_shutdown"
    assert imp.add_episode(cut) == "unfinished"
    cut.termination_reason = "input lost: no camera/image for 2.1 s"   # ended by the liveness FAULT
    assert imp.add_episode(cut) == "unfinished" and imp.counts["episodes_unfinished"] == 2
    # a forged SUCCESS (anyone on the graph can publish one): the frozen model's d does not show it
    forged = _episodes(vdir, 1, 203)[0]
    if forged.outcome != "success":
        forged.outcome = "success"
        assert imp.add_episode(forged) == "inconsistent" and imp.counts["episodes_inconsistent"] == 1
    # the rule itself: the last k frames of the model's own d at or below s
    s_, k_ = imp.reward.success_threshold, max(imp.reward.success_k, 1)
    forged.outcome = "success"
    assert imp._success_is_real(forged, np.array([30.0] * 5 + [s_ - 0.1] * k_))
    assert not imp._success_is_real(forged, np.array([30.0] * 5 + [s_ - 0.1] * (k_ - 1) + [s_ + 1.0]))
    # a forged START opens a bag whose StepsToGo stream is another episode's: not its robot's facts
    good_d = np.array([30.0] * 5 + [s_ - 0.1] * k_)
    forged.outcome = "timeout"
    n = len(forged.steps_to_go.present)
    forged.steps_to_go.episode_ids = [forged.episode_id] * n
    assert imp._success_is_real(forged, good_d)
    forged.steps_to_go.episode_ids = [forged.episode_id] * (n - 3) + ["robot_0_the_real_one"] * 3
    assert not imp._success_is_real(forged, good_d)


def _run_improve(cmd_prefix, episodes_dir, model_dir, out, env):
    cmd = [*cmd_prefix, "-m", "efm_ros.learn.improve", "--episodes-dir", str(episodes_dir), "--policy", str(model_dir),
           "--reward-model", str(model_dir), "--out", str(out), "--iterations", "1", "--updates", "2",
           "--batch-size", "16", "--poll-s", "0.1"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return load_model_checkpoints(Path(out) / "versions" / "v0001")[0].state_dict()


def test_torchrun_two_processes_give_the_single_process_result(tmp_path, sim_model_dir, episodes_dir, python_env):
    env = dict(python_env, OMP_NUM_THREADS="1")
    single = _run_improve([sys.executable], episodes_dir, sim_model_dir, tmp_path / "one", env)
    port = str(29500 + os.getpid() % 1000)
    ddp = _run_improve([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_port", port], episodes_dir, sim_model_dir, tmp_path / "two", env)
    assert single.keys() == ddp.keys()
    worst = max(float((single[k].float() - ddp[k].float()).abs().max()) for k in single)
    assert worst < 1e-5, f"DDP result differs from one process by {worst}"
    moved = max(float((single[k].float() - v.float()).abs().max())
                for k, v in load_model_checkpoints(sim_model_dir)[0].state_dict().items())
    assert moved > 1e-6, "the update did nothing, so the comparison would prove nothing"


def test_in_process_practice_spends_its_budget_and_switches_versions(tmp_path, sim_model_dir):
    from efm_ros.learn.practice import practise_sim

    res = practise_sim(sim_model_dir, sim_model_dir, tmp_path / "practice", episode_budget=10,
                       config=ImproveConfig(**SMALL), workers=1, max_steps=8, progress=False)
    assert res.episodes == 10 and res.iterations >= 1
    assert res.final_version_dir == tmp_path / "practice" / "versions" / f"v{res.iterations:04d}"
    assert load_model(res.final_version_dir).version == f"practice-v{res.iterations:04d}"
    # episodes after the first update were collected by the new version, so they were used too
    assert all(h["episodes"] > 0 for h in res.history)
    # each row is tagged with the version whose episodes it describes: the start, then each new one
    assert res.iterations >= 2
    assert [h["version"] for h in res.history][1:] == [f"practice-v{i:04d}" for i in range(1, res.iterations)]
    assert all(h["new_version"] == f"practice-v{h['iteration']:04d}" for h in res.history)


def test_an_episode_the_detector_ends_on_its_first_tick_is_recorded_and_counted(tmp_path, sim_model_dir):
    from efm_ros.data.reader import read_episode

    policy = load_model(sim_model_dir)

    class AtGoalEverywhere:  # the same reward model with a threshold every d passes: success on tick 0
        success_threshold, success_k, version = 1e9, 1, policy.version
        steps_to_go = staticmethod(policy.steps_to_go)

    ep = rollout(TabletopRobot(seed=0), policy, AtGoalEverywhere(), seed=5, episode_id="ep_empty", max_steps=8)
    assert ep.num_steps == 0 and ep.outcome == "success" and ep.actions.shape == (0, 2) and len(ep.frames) == 1
    back = read_episode(write_episode(tmp_path / "eps", ep))
    assert back.num_steps == 0 and back.outcome == "success"
    imp = Improver(sim_model_dir, sim_model_dir, tmp_path / "si", ImproveConfig(**SMALL))
    assert imp.add_episode(back) == "empty" and imp.counts["episodes_empty"] == 1 and len(imp.buffer) == 0


def test_choose_best_prefers_the_audit_model_and_never_uses_ground_truth():
    from efm_ros.learn.improve import choose_best

    rows = [{"version": f"si-v{i:04d}", "episode_length": 50.0, "detector_success_rate": det, "gt_success_rate": 0.0,
             "gt_reached_rate": gt, "audit_progress": prog} for i, (det, gt, prog) in
            enumerate([(0.1, 0.3, 5.0), (0.2, 0.4, 9.0), (0.9, 0.0, 1.0)], start=1)]
    best = choose_best(rows, window=1)
    assert best["version"] == "si-v0002" and best["measure"].startswith("audit model progress")
    assert best["ground_truth_best"] == "si-v0002" and best["directory"] == "versions/v0002"
    # without an audit model: the detector success rate (here fooled: v0003 exploits the reward model)
    plain = [{k: v for k, v in r.items() if k != "audit_progress"} for r in rows]
    assert choose_best(plain, window=1)["version"] == "si-v0003"
    # the window smooths one lucky iteration away
    assert choose_best(rows, window=3)["version"] == "si-v0002"


def test_audit_model_scores_every_episode(tmp_path, sim_model_dir, episodes_dir):
    imp = Improver(sim_model_dir, sim_model_dir, tmp_path / "si", ImproveConfig(**SMALL, audit_model=str(sim_model_dir)))
    imp.ingest_dir(episodes_dir)
    row = imp.publish(imp.update())
    d = imp.history[0]
    assert np.isfinite(row["audit_progress"]) and np.isfinite(d["audit_final_d"])
    assert json.loads((tmp_path / "si" / "best.json").read_text())["measure"].startswith("audit model progress")


def _random_buffer(policy, n: int, return_scale: float = 1.0) -> dict:
    """n transitions of random features, instruction embeddings, tokens and returns (seed 0)."""
    rng = np.random.default_rng(0)
    shape = policy.feature_shape
    return {"features_cur": rng.normal(size=(n, *shape)).astype(np.float32),
            "features_prev": rng.normal(size=(n, *shape)).astype(np.float32),
            "text": rng.normal(size=(n, 384)).astype(np.float32),
            "tokens": rng.integers(0, 21, (n, 2)), "returns": return_scale * rng.normal(size=n).astype(np.float32)}


@pytest.mark.parametrize("layers, trained", [("mlp", {"mlp", "action_head", "text_proj"}),
                                              ("action_head", {"action_head"})])
def test_train_layers_leave_the_other_layers_as_stage1_left_them(sim_model_dir, layers, trained):
    from efm_ros.learn.improve import ReinforceLearner

    policy, _ = load_model_checkpoints(sim_model_dir)
    before = {k: v.clone() for k, v in policy.trunk.state_dict().items()}
    learner = ReinforceLearner(policy, ImproveConfig(updates=1, batch_size=8, train_layers=layers, lr=1e-2))
    data = _random_buffer(policy, 8)
    learner.update(data)
    after = policy.trunk.state_dict()
    changed = {k.split(".")[0] for k in after if not torch.equal(after[k], before[k])}
    assert changed and changed <= trained and "action_head" in changed, changed


def test_the_tilt_moves_only_the_action_head_within_its_subspace_and_folds_exactly(sim_model_dir):
    """train_layers "tilt" (a departure): only the action head changes, by ΔW whose bins lie in the
    span of (c, c²) of the bin centres; the folded head computes what the hooked one did."""
    from efm_ros.learn.improve import ActionTilt, ReinforceLearner

    policy, _ = load_model_checkpoints(sim_model_dir)
    before = {k: v.clone() for k, v in policy.trunk.state_dict().items()}
    learner = ReinforceLearner(policy, ImproveConfig(updates=2, batch_size=8, train_layers="tilt", lr=1e-2))
    data = _random_buffer(policy, 16)
    stats = learner.update(data)
    assert stats["kl_update_mean"] > 0
    after = policy.trunk.state_dict()
    assert {k.split(".")[0] for k in after if not torch.equal(after[k], before[k])} == {"action_head"}
    assert not learner.tilt.V.any() and not policy.trunk.action_head._forward_hooks   # folded, detached
    dims, bins = policy.trunk.action_shape
    dw = torch.cat([after["action_head.weight"] - before["action_head.weight"],
                    (after["action_head.bias"] - before["action_head.bias"])[:, None]], 1).reshape(dims, bins, -1)
    phi = learner.tilt.phi.double()
    proj = phi @ torch.linalg.pinv(phi)                                   # onto span(c, c²) over the bins
    resid = dw.double() - torch.einsum("kl,dlh->dkh", proj, dw.double())
    assert resid.abs().max() < 1e-5 * dw.abs().max() and dw.abs().max() > 0

    x = [torch.from_numpy(data[k][:4]).float() for k in ("features_cur", "features_prev", "text")]
    for temperature in (False, True):
        tilt = ActionTilt(policy.trunk.action_head, (dims, bins), policy.config.action_spec.centers,
                          temperature=temperature)
        with torch.no_grad():
            plain = policy.head(*x)[0]
            tilt.V.normal_()
            if temperature:
                tilt.rho.copy_(torch.tensor([0.7, -0.4])[:dims])
            hook = tilt.attach()
            hooked = policy.head(*x)[0]
            hook.remove()
            tilt.fold()
            torch.testing.assert_close(policy.head(*x)[0], hooked, rtol=1e-4, atol=1e-4)
            assert not tilt.V.any() and (tilt.rho is None or not tilt.rho.any())
            assert not torch.allclose(hooked, plain)


def test_the_tilt_temperature_scales_each_dimension_and_learns(sim_model_dir):
    """tilt_temperature (a departure): ρ_d multiplies dimension d's logits by exp(ρ_d) (with V = 0 the
    policy is the same one at a lower temperature), and an update with it trains ρ; without the tilt it
    is refused."""
    from efm_ros.learn.improve import ActionTilt, ReinforceLearner

    policy, _ = load_model_checkpoints(sim_model_dir)
    dims, bins = policy.trunk.action_shape
    data = _random_buffer(policy, 16)
    x = [torch.from_numpy(data[k][:4]).float() for k in ("features_cur", "features_prev", "text")]
    tilt = ActionTilt(policy.trunk.action_head, (dims, bins), policy.config.action_spec.centers, temperature=True)
    with torch.no_grad():
        plain = policy.head(*x)[0]
        tilt.rho.fill_(np.log(2.0))
        hook = tilt.attach()
        hooked = policy.head(*x)[0]
        hook.remove()
    torch.testing.assert_close(hooked.softmax(-1), (2 * plain).softmax(-1), rtol=1e-5, atol=1e-6)

    learner = ReinforceLearner(policy, ImproveConfig(updates=2, batch_size=8, train_layers="tilt",
                                                     tilt_temperature=True, lr=1e-2))
    seen = []
    learner.optimizer.register_step_pre_hook(lambda opt, *a: seen.append(learner.tilt.rho.grad.abs().sum().item()))
    learner.update(data)
    assert seen and max(seen) > 0
    scaled = ReinforceLearner(policy, ImproveConfig(train_layers="tilt", tilt_temperature=True, tilt_temperature_lr=10.0,
                                                    lr=1e-3))
    scaled._set_lr(2e-3)                                   # the adaptive lr keeps the temperature's multiple
    assert [g["lr"] for g in scaled.optimizer.param_groups] == pytest.approx([2e-3, 2e-2])
    assert scaled.optimizer.param_groups[1]["params"] == [scaled.tilt.rho]
    with pytest.raises(ValueError, match="tilt_temperature"):
        ReinforceLearner(policy, ImproveConfig(tilt_temperature=True))


def test_the_trust_region_keeps_the_update_near_the_acting_policy(sim_model_dir):
    """kl_coef (a departure) bounds how far an update moves π from the version that acted, on the
    same data and minibatches; kl_update_mean reports that distance for every update."""
    from efm_ros.learn.improve import ReinforceLearner

    moved = {}
    for beta in (0.0, 10.0):
        policy, _ = load_model_checkpoints(sim_model_dir)
        data = _random_buffer(policy, 64, return_scale=5.0)
        stats = ReinforceLearner(policy, ImproveConfig(updates=4, batch_size=16, lr=3e-3, kl_coef=beta)).update(data)
        moved[beta] = stats["kl_update_mean"]
        assert stats["kl_update_max"] >= stats["kl_update_mean"] > 0
    assert moved[10.0] < 0.8 * moved[0.0], moved  # (Adam: the first step is the same; the pull acts after it)


def test_target_kl_stops_the_update_at_its_distance_and_adapts_the_step(sim_model_dir):
    """target_kl (a departure): an iteration stops its N steps once π moved past the target on the
    buffer's states, and the next iteration's lr shrinks when the target came within N/2 steps,
    grows when all N steps stayed under half of it."""
    from efm_ros.learn.improve import ReinforceLearner, adapt_lr

    policy, _ = load_model_checkpoints(sim_model_dir)
    data = _random_buffer(policy, 128, return_scale=5.0)
    free = ReinforceLearner(policy, ImproveConfig(updates=8, batch_size=16, lr=3e-3)).update(data)
    assert free["steps"] == 8
    target = free["kl_update_mean"] / 20
    policy, _ = load_model_checkpoints(sim_model_dir)
    learner = ReinforceLearner(policy, ImproveConfig(updates=8, batch_size=16, lr=3e-3, target_kl=target))
    stats = learner.update(data)
    assert stats["steps"] < 8 and stats["kl_update_mean"] > target          # stopped at the step that crossed it
    assert stats["kl_update_mean"] < free["kl_update_mean"] / 2
    assert learner.lr == pytest.approx(3e-3 / 1.5) and stats["lr"] == 3e-3
    assert learner.optimizer.param_groups[0]["lr"] == learner.lr
    assert adapt_lr(1.0, 0.01, 16, 16, 0.1) == 1.5 and adapt_lr(1.0, 0.07, 16, 16, 0.1) == 1.0
    assert adapt_lr(1.0, 0.2, 9, 16, 0.1) == 1.0 and adapt_lr(1.0, 0.2, 8, 16, 0.1) == pytest.approx(1 / 1.5)


def test_the_ridge_baseline_is_cross_fitted_and_removes_what_the_state_explains():
    """baseline "ridge" (a departure): b(s) of each half of the buffer comes from a fit on the other
    half only, and a return that is a linear function of h(s) plus noise is left with the noise."""
    from efm_ros.learn.improve import ridge_baseline

    rng = np.random.default_rng(0)
    h = rng.normal(size=(4000, 16))
    value, noise = h @ rng.normal(size=16) + 3.0, 0.5 * rng.normal(size=4000)
    b, r2 = ridge_baseline(h, value + noise)
    assert r2 > 0.9 and np.std(value + noise - b) < 0.6
    # cross-fitting: a half's baseline does not move when that half's own returns change
    y = value + noise
    y2 = y.copy()
    y2[2000:] = rng.normal(size=2000) * 100
    b2, _ = ridge_baseline(h, y2)
    np.testing.assert_allclose(b2[2000:], b[2000:])
    _, r2_noise = ridge_baseline(h, rng.normal(size=4000))
    assert r2_noise < 0.01        # nothing to explain: no in-sample optimism


def test_the_learner_subtracts_the_baseline_and_reports_it(sim_model_dir):
    from efm_ros.learn.improve import ReinforceLearner

    policy, _ = load_model_checkpoints(sim_model_dir)
    stats = ReinforceLearner(policy, ImproveConfig(updates=2, batch_size=16, baseline="ridge")).update(
        _random_buffer(policy, 64))
    assert "baseline_r2" in stats and stats["steps"] == 2
    with pytest.raises(ValueError, match="unknown baseline"):
        ReinforceLearner(policy, ImproveConfig(baseline="critic"))


def test_the_tilt_degree_sets_its_subspace(sim_model_dir):
    """tilt_degree: φ_j = c^j for j = 1..degree, each centred over the bins (a tilt never changes
    the logits by a constant), and a degree the bins cannot hold is refused."""
    from efm_ros.learn.improve import ActionTilt

    policy, _ = load_model_checkpoints(sim_model_dir)
    dims, bins = policy.trunk.action_shape
    centers = policy.config.action_spec.centers
    tilt = ActionTilt(policy.trunk.action_head, (dims, bins), centers, degree=4)
    assert tilt.phi.shape == (bins, 4) and tilt.V.shape == (dims, 4, policy.trunk.action_head.in_features + 1)
    assert torch.allclose(tilt.phi.mean(0), torch.zeros(4), atol=1e-6)
    assert torch.linalg.matrix_rank(tilt.phi) == 4
    with pytest.raises(ValueError, match="degree"):
        ActionTilt(policy.trunk.action_head, (dims, bins), centers, degree=bins)


def test_step_by_agreement_takes_no_step_when_the_halves_disagree(sim_model_dir):
    """step_by_agreement (a departure): the KL target is scaled by cos(g_first half, g_second half);
    returns that reward a token in one half of the buffer and punish it in the other give no step."""
    from efm_ros.learn.improve import ReinforceLearner

    for sign, moves in ((1.0, True), (-1.0, False)):
        policy, _ = load_model_checkpoints(sim_model_dir)
        data = _random_buffer(policy, 128)
        data["tokens"][:] = 3
        data["returns"] = np.r_[np.ones(64), sign * np.ones(64)].astype(np.float32)
        before = {k: v.clone() for k, v in policy.trunk.state_dict().items()}
        stats = ReinforceLearner(policy, ImproveConfig(updates=4, batch_size=16, lr=1e-3, target_kl=0.01,
                                                       train_layers="tilt", step_by_agreement=True)).update(data)
        changed = any(not torch.equal(v, before[k]) for k, v in policy.trunk.state_dict().items())
        assert (stats["agreement"] > 0.9) is moves and changed is moves and (stats["steps"] > 0) is moves, stats


def test_every_learner_option_is_a_command_line_flag_of_its_own_type():
    """efm-ros improve takes every ImproveConfig field as a flag, booleans as --x / --no-x."""
    from efm_ros.learn.improve import build_parser, config_from_args

    base = ["--episodes-dir", "e", "--policy", "p", "--reward-model", "r", "--out", "o"]
    cfg = config_from_args(build_parser().parse_args(base + ["--train-layers", "tilt", "--target-kl", "0.03",
                                                             "--batch-size", "512", "--step-by-agreement"]))
    assert (cfg.train_layers, cfg.target_kl, cfg.batch_size, cfg.step_by_agreement) == ("tilt", 0.03, 512, True)
    assert config_from_args(build_parser().parse_args(base + ["--no-step-by-agreement"])).step_by_agreement is False
    assert config_from_args(build_parser().parse_args(base)) == ImproveConfig()


def test_acting_logits_computed_as_episodes_arrive_give_the_same_update(sim_model_dir):
    """The Improver computes π of the acting version per episode as it arrives (off the fleet's
    critical path) and measures the update's KL after publishing: the update is the same as when
    the learner computes both itself."""
    from efm_ros.learn.improve import ReinforceLearner

    data = _random_buffer(load_model_checkpoints(sim_model_dir)[0], 96, return_scale=5.0)
    results = []
    for precompute in (False, True):
        torch.manual_seed(0)
        policy, _ = load_model_checkpoints(sim_model_dir)
        learner = ReinforceLearner(policy, ImproveConfig(updates=4, batch_size=16, lr=3e-3))
        batch = dict(data)
        if precompute:
            learner.defer_metrics = True
            halves = [slice(0, 40), slice(40, 96)]       # two "episodes"
            batch["acting_logits"] = np.concatenate([learner.acting_logits(data["features_cur"][h], data["features_prev"][h],
                                                                           data["text"][h]) for h in halves])
        stats = learner.update(batch)
        assert ("kl_update_mean" in stats) is not precompute
        stats.update(learner.final_metrics())
        results.append((stats, [p.detach().clone() for p in policy.parameters()]))
    (a, pa), (b, pb) = results
    assert a["kl_update_mean"] == pytest.approx(b["kl_update_mean"], rel=1e-4) and a["kl_update_mean"] > 0
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(pa, pb))
