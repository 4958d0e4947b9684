"""The scripted demonstrator and the episode runner the demo collector uses."""
from __future__ import annotations

import numpy as np
import pytest

from efm_ros.sim.demonstrator import (DEFAULT_MAX_STEPS, DemonstratorConfig, RandomPolicy, ScriptedDemonstrator,
                                      run_demo_episode, run_episode)
from efm_ros.sim.instructions import parse_instruction
from efm_ros.sim.tabletop import TabletopRobot

IMAGE = 32  # small frames keep the tests fast; the physics and the demonstrator do not depend on it


@pytest.fixture(scope="module")
def demos():
    robot, demonstrator = TabletopRobot(image_size=IMAGE), ScriptedDemonstrator()
    return [run_demo_episode(robot, demonstrator, seed=seed) for seed in range(48)]


def test_demonstrator_succeeds_at_least_90_percent_within_the_step_limit(demos):
    rate = np.mean([d.success for d in demos])
    lengths = np.array([d.steps for d in demos if d.success])
    assert rate >= 0.9, rate
    assert lengths.max() <= DEFAULT_MAX_STEPS
    assert 25 <= lengths.mean() <= 70, lengths.mean()
    assert {parse_instruction(d.instruction).family for d in demos} == {"block2block", "block2location"}


def test_rollout_shapes_and_steps_to_go(demos):
    for d in demos[:10]:
        assert d.frames.shape == (d.steps + 1, IMAGE, IMAGE, 3) and d.frames.dtype == np.uint8
        assert d.actions.shape == (d.steps, 2) and d.actions.dtype == np.float32
        assert np.all(np.linalg.norm(d.actions, axis=1) <= 1.0 + 1e-6)
        np.testing.assert_array_equal(d.steps_to_go(), np.arange(d.steps, -1, -1))
        assert d.frames.flags.writeable  # stacked copies, not the robot's read-only cache


def test_a_demo_ends_at_its_first_successful_step_and_replays_exactly(demos):
    robot = TabletopRobot(image_size=IMAGE, seed=99)
    for d in [d for d in demos if d.success][:5]:
        assert robot.reset(seed=d.seed) == d.instruction
        assert np.array_equal(robot.observe(), d.frames[0]) and not robot.success()
        for t, action in enumerate(d.actions):
            robot.step(action)
            assert np.array_equal(robot.observe(), d.frames[t + 1])
            assert robot.success() is (t == d.steps - 1)


def test_demos_are_deterministic_per_seed():
    robot = TabletopRobot(image_size=IMAGE)
    a = run_demo_episode(robot, ScriptedDemonstrator(), seed=5)
    b = run_demo_episode(TabletopRobot(image_size=IMAGE, seed=1), ScriptedDemonstrator(), seed=5)
    c = run_demo_episode(robot, ScriptedDemonstrator(), seed=6)
    assert a.instruction == b.instruction and np.array_equal(a.actions, b.actions) and np.array_equal(a.frames, b.frames)
    assert a.instruction != c.instruction or not np.array_equal(a.actions[:5], c.actions[:5])


def test_demonstrator_is_imperfect_on_purpose():
    robot = TabletopRobot(image_size=IMAGE)
    clean = ScriptedDemonstrator(noise_std=0.0, speed_range=(1.0, 1.0), start_detour_prob=0.0, detour_prob=0.0)
    sloppy = ScriptedDemonstrator()
    seeds = range(100, 124)
    clean_len = [run_demo_episode(robot, clean, seed=s).steps for s in seeds]
    sloppy_len = [run_demo_episode(robot, sloppy, seed=s).steps for s in seeds]
    assert np.mean(sloppy_len) > 1.25 * np.mean(clean_len)
    # an instruction can be forced, and the clean demonstrator still solves it
    ep = run_demo_episode(robot, clean, seed=3, instruction="move the yellow block to the red block")
    assert ep.instruction == "move the yellow block to the red block" and ep.success


def test_the_novel_bar_is_never_demonstrated():
    bar_robot = TabletopRobot(variant="novel_bar", image_size=IMAGE)
    with pytest.raises(ValueError, match="novel"):
        run_demo_episode(bar_robot, ScriptedDemonstrator(), seed=0)
    with pytest.raises(ValueError, match="never demonstrated"):
        ScriptedDemonstrator().reset(0, parse_instruction("push the bar to the center"))
    with pytest.raises(ValueError, match="never demonstrated"):
        run_episode(bar_robot, ScriptedDemonstrator(), seed=0)


def test_random_policy_gives_failed_rollouts_of_full_length():
    robot = TabletopRobot(image_size=IMAGE)
    rollouts = [run_episode(robot, RandomPolicy(), seed=s, max_steps=40) for s in range(10)]
    failed = [r for r in rollouts if not r.success]
    assert len(failed) >= 8
    assert all(r.steps == 40 and r.frames.shape[0] == 41 for r in failed)
    again = run_episode(robot, RandomPolicy(), seed=0, max_steps=40)
    assert np.array_equal(again.actions, rollouts[0].actions)
    moved = np.abs(np.diff(rollouts[0].frames.astype(int), axis=0)).sum(axis=(1, 2, 3))
    assert (moved > 0).mean() > 0.8  # it does move


def test_bad_arguments():
    with pytest.raises(ValueError):
        DemonstratorConfig(noise_std=-1.0)
    with pytest.raises(TypeError):
        ScriptedDemonstrator(nois_std=0.1)
    with pytest.raises(ValueError):
        run_episode(TabletopRobot(image_size=IMAGE), RandomPolicy(), seed=0, max_steps=0)
    with pytest.raises(RuntimeError):
        ScriptedDemonstrator().act({})
