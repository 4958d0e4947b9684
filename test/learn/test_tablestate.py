"""The ladder's "state" rung: the embedded table observed as privileged state.

It must be the same task as rung (a) with only the observation changed: the same demonstrations
(layouts, instructions and actions of collect-demos' episode i), the same oracle d (0 exactly on
ground-truth success), and the rung-0 rollout loop recording that d per frame.
"""
from __future__ import annotations

import numpy as np
import torch

from efm_ros.learn.tablestate import TableStates, demonstrations, state_vector, table_task


def test_the_state_vector_is_pusher_target_goal_then_every_object_in_table_units():
    env = TableStates(1, seed=3)
    st = env.robots[0].state()
    v = env.observe()[0]
    size = st["table_size"]
    assert v.shape == (6 + 4 * len(st["objects"]),) and v.dtype == np.float32
    np.testing.assert_allclose(v[:2], st["ee"] / size, rtol=1e-6)
    np.testing.assert_allclose(v[2:4], st["objects"][st["task"].target]["position"] / size, rtol=1e-6)
    np.testing.assert_allclose(v[4:6], st["goal"] / size, rtol=1e-6)
    assert np.all((v[:6] >= 0) & (v[:6] <= 1))
    np.testing.assert_array_equal(state_vector(st), v)


def test_state_demonstrations_are_collect_demos_episodes_and_end_at_the_goal():
    from efm_ros.data.collect import episode_seed
    from efm_ros.sim.demonstrator import run_demo_episode
    from efm_ros.sim.tabletop import TabletopRobot

    demos = demonstrations(6, seed=0)
    assert len(demos) == 6 and all(d.success for d in demos)
    robot = TabletopRobot(seed=0, families=("block2block", "block2location"))
    first = next(r for r in (run_demo_episode(robot, seed=episode_seed(0, 0, a)) for a in range(100)) if r.success)
    np.testing.assert_allclose(demos[0].actions, first.actions, atol=1e-6)   # the bag's actions, step for step
    for d in demos:
        assert len(d.states) == len(d.actions) + 1
        assert np.linalg.norm(d.states[-1, 2:4] - d.states[-1, 4:6]) < np.linalg.norm(d.states[0, 2:4] - d.states[0, 4:6])


def test_rollouts_record_the_oracle_d_per_frame_and_it_is_zero_exactly_on_success():
    from efm_ros.learn.pointmass import PointmassConfig, _model_config, rollouts
    from efm_ros.model.network import EFM

    task = table_task("approach")
    states = np.concatenate([d.states for d in task.demonstrations(4, 1)])
    torch.manual_seed(0)
    model = EFM(_model_config(PointmassConfig(action_bins=21), states, task)).eval()
    eps = rollouts(model, model, 6, seed=5, envs=3, task=task)
    assert len(eps) == 6
    for e in eps:
        assert len(e["oracle_d"]) == len(e["d"]) == e["steps"] + 1 == len(e["tokens"]) + 1
        assert np.all(e["oracle_d"] >= 0) and np.all(e["oracle_d"][:-1] > 0)   # ended at the first success
        assert (e["oracle_d"][-1] == 0) == e["success"]
        assert e["success"] or e["steps"] == task.max_steps


def test_the_state_rung_runs_from_the_ladder_command_and_records_both_stages(tmp_path):
    import json

    from efm_ros.learn.experiment import main

    rec = tmp_path / "ladder.json"
    assert main(["ladder", "--rung", "state", "--oracle", "approach", "--seeds", "0", "--demos-count", "20",
                 "--sft-steps", "200", "--si-transitions", "2048", "--eval-episodes", "12", "--threads", "1",
                 "--improve", '{"batch_size": 32, "updates": 4}', "--tag", "tiny", "--out", str(tmp_path / "s"),
                 "--record", str(rec)]) == 0
    entry = json.loads(rec.read_text())["state:tiny"]
    assert entry["state_reward"] == "oracle" and entry["improve"]["batch_size"] == 32
    seed = entry["seeds"]["0"]
    assert seed["stage1"]["demos"] == 20 and seed["before"]["episodes"] == seed["after"]["episodes"] == 12
    assert seed["history"] and seed["history"][-1]["transitions_spent"] >= 2048
    assert (tmp_path / "s" / "seed0" / "curves.png").exists()
