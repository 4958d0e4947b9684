"""The Stage-2 ladder's privileged oracle: correct where used, and unreachable from the product."""
from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import numpy as np

import efm_ros
from efm_ros.learn.oracle import OracleStepsToGo, oracle_d_of
from efm_ros.sim.tabletop import TabletopRobot

PACKAGE = Path(efm_ros.__file__).parent
#: experiment code, where the oracle may live; everything else in the package is the product
EXPERIMENT_MODULES = {"learn/oracle.py", "learn/practice.py", "learn/experiment.py", "learn/actors.py",
                      "learn/pointmass.py", "learn/tablestate.py", "sim/pointmass.py"}


def test_oracle_d_is_zero_exactly_at_ground_truth_success_and_counts_the_approach():
    robot = TabletopRobot(seed=0, families=("block2block",))
    a, b = OracleStepsToGo(robot, "goal"), OracleStepsToGo(robot, "approach")
    for seed in range(30):
        robot.reset(seed=seed)
        for _ in range(5):
            robot.step(np.random.default_rng(seed).uniform(-1, 1, 2))
        da, db = a.steps_to_go(None, None, "")[0], b.steps_to_go(None, None, "")[0]
        assert (da == 0.0) == robot.success()
        assert db >= da >= 0.0


def test_rollout_can_end_on_the_oracle_and_records_its_d(sim_model_dir):
    from efm_ros.learn.actors import rollout
    from efm_ros.model.runtime import load_model

    policy = load_model(sim_model_dir)
    robot = TabletopRobot(seed=0, families=("block2block",))
    oracle = OracleStepsToGo(robot, "goal")
    ep = rollout(robot, policy, policy, seed=3, episode_id="ep", max_steps=6, oracle=oracle, stop_on_oracle=True)
    d = oracle_d_of(ep)
    assert len(d) == ep.num_steps + 1 and ep.custom_data["termination"] == "oracle"
    assert ep.events[-1].success_threshold == 0.0          # ended by the oracle's rule, not the model's s
    # without stop_on_oracle the learned detector ends it, and the oracle only watches
    ep2 = rollout(robot, policy, policy, seed=3, episode_id="ep2", max_steps=6, oracle=oracle)
    assert ep2.custom_data["termination"] == "detector" and len(oracle_d_of(ep2)) == ep2.num_steps + 1


def test_no_product_command_can_select_the_oracle():
    from efm_ros.learn.improve import ImproveConfig, build_parser

    assert not [f.name for f in dataclasses.fields(ImproveConfig) if "oracle" in f.name or "reward_source" in f.name]
    assert "oracle" not in build_parser().format_help().lower()
    assert "reward-source" not in build_parser().format_help().lower()
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in EXPERIMENT_MODULES:
            continue
        tree = ast.parse(path.read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not {m for m in imported if m.endswith(("oracle", "pointmass", "tablestate", "experiment", "practice"))}, rel
    # the launch parameters and the node configuration do not know it either
    root = PACKAGE.parent
    for f in [*root.glob("config/*.yaml"), *root.glob("launch/*.py")]:
        assert "oracle" not in f.read_text().lower(), f


def test_oracle_reward_source_feeds_the_learner(tmp_path, sim_model_dir):
    from efm_ros.learn.actors import rollout
    from efm_ros.learn.improve import ImproveConfig, Improver
    from efm_ros.model.runtime import load_model

    policy = load_model(sim_model_dir)
    robot = TabletopRobot(seed=0, families=("block2block",))
    oracle = OracleStepsToGo(robot, "goal")
    imp = Improver(sim_model_dir, sim_model_dir, tmp_path / "si", ImproveConfig(updates=1, batch_size=8),
                   reward_source=oracle_d_of)
    ep = rollout(robot, policy, policy, seed=4, episode_id="ep", max_steps=10, oracle=oracle, stop_on_oracle=True)
    assert imp.add_episode(ep) == "used"
    d = oracle_d_of(ep)
    from efm_ros.learn.objectives import episode_returns

    np.testing.assert_allclose(imp.buffer.returns[0], episode_returns(d, 0.9)[1], rtol=1e-5)
    assert json.loads(json.dumps(ep.custom_data))  # bag-safe strings


def test_rung_b_learns_from_the_successes_the_oracle_ended(tmp_path, sim_model_dir):
    """Rung b (learned reward + oracle termination): a success that the privileged oracle ended is
    ground truth and is trained on although the reward model's d need not show it; the product's
    Improver refuses the same claim (a SUCCESS its frozen model's d does not show)."""
    from efm_ros.learn.actors import rollout
    from efm_ros.learn.improve import ImproveConfig, Improver
    from efm_ros.learn.calibrate import previous_frames
    from efm_ros.model.runtime import load_model

    policy = load_model(sim_model_dir)
    robot = TabletopRobot(seed=0, families=("block2block",))
    ep = rollout(robot, policy, policy, seed=5, episode_id="ep", max_steps=8,
                 oracle=OracleStepsToGo(robot, "goal"), stop_on_oracle=True)
    ep.outcome = "success"                     # as when the oracle's goal test ends it
    cfg = ImproveConfig(updates=1, batch_size=8)
    d = policy.steps_to_go(ep.frames, previous_frames(ep.frames), ep.instruction)[0]
    assert d[-1] > policy.success_threshold                 # the learned detector would not have fired
    rung_b = Improver(sim_model_dir, sim_model_dir, tmp_path / "b", cfg, termination_by_oracle=True)
    assert rung_b.add_episode(ep) == "used"
    product = Improver(sim_model_dir, sim_model_dir, tmp_path / "d", cfg)
    assert product.add_episode(ep) == "inconsistent"
