"""The lift robot: expert, start layouts, determinism, actions, grasping, stacking, bins, camera, protocol."""
from __future__ import annotations

import numpy as np
import pytest

from efm_ros.model.bins import T_MAX
from efm_ros.robots import Robot, make_robot
from efm_ros.sim.lift import FAMILIES, LiftConfig, LiftRobot, all_instructions

IMAGE = 32  # small frames keep the tests fast; the world and the expert do not depend on it


def _go(robot: LiftRobot, target, grip: float, steps: int = 60) -> None:
    """Drive the EE straight to ``target`` (cm) with ordinary actions, gripper command ``grip``."""
    for _ in range(steps):
        d = (np.asarray(target, dtype=np.float64) - robot.state()["ee"]) / robot.config.max_step_cm
        n = float(np.linalg.norm(d))
        if n < 1e-9:
            return
        robot.step([*(d / max(1.0, n)), grip])
    raise AssertionError(f"EE did not reach {target}: {robot.state()['ee']}")


def _grab(robot: LiftRobot, color: str) -> None:
    cube = robot.state()["cubes"][color]
    _go(robot, cube + [0.0, 0.0, 5.0], grip=-1.0)
    _go(robot, cube, grip=-1.0)
    robot.step([0.0, 0.0, 0.0, 1.0])
    assert robot.state()["held"] == color


def _run(robot: LiftRobot, seed: int, actions: np.ndarray) -> list[np.ndarray]:
    robot.reset(seed=seed)
    frames = [robot.observe().copy()]
    for a in actions:
        robot.step(a)
        frames.append(robot.observe().copy())
    return frames


@pytest.fixture(scope="module")
def expert_runs():
    robot = LiftRobot(seed=0, image_size=IMAGE)
    expert = robot.expert()
    runs = []
    for seed in range(30):
        robot.reset(seed=seed)
        expert.reset(seed)
        actions = []
        while not robot.success() and robot.t < T_MAX:
            a = expert.act()
            actions.append(a)
            robot.step(a)
        runs.append((robot.family, robot.success(), robot.t, np.array(actions)))
    return runs


def test_expert_succeeds_at_least_90_percent_within_t_max(expert_runs):
    rate = np.mean([ok for _, ok, _, _ in expert_runs])
    lengths = np.array([t for _, ok, t, _ in expert_runs if ok])
    assert rate >= 0.9, rate
    assert lengths.max() <= 80 and 15 <= lengths.mean() <= 60, lengths
    assert {family for family, _, _, _ in expert_runs} == set(FAMILIES)
    for _, _, _, actions in expert_runs:
        assert actions.dtype == np.float32 and actions.shape[1] == 4
        assert np.all(np.abs(actions) <= 1.0) and np.all(np.linalg.norm(actions[:, :3], axis=1) <= 1.0 + 1e-6)


def test_expert_is_seeded_and_noisy():
    robot = LiftRobot(seed=0, image_size=IMAGE)
    expert = robot.expert()

    def actions(episode_seed: int, expert_seed: int) -> np.ndarray:
        robot.reset(seed=episode_seed, instruction="put the red cube in the right bin")
        expert.reset(expert_seed)
        out = []
        for _ in range(10):
            out.append(expert.act())
            robot.step(out[-1])
        return np.array(out)

    np.testing.assert_array_equal(actions(4, 1), actions(4, 1))
    assert not np.array_equal(actions(4, 1), actions(4, 2))  # same layout, other demonstration


def test_start_layout_never_satisfies_its_instruction():
    robot = LiftRobot(seed=0, image_size=IMAGE)
    for seed in range(150):
        robot.reset(seed=seed)
        state = robot.state()
        assert not robot.success() and not state["success"]
        assert state["held"] is None and state["gripper"] == 0.0
        cubes = np.array(list(state["cubes"].values()))
        assert np.allclose(cubes[:, 2], robot.config.half_cm)  # all on the table
        gaps = np.abs(cubes[:, None, :2] - cubes[None, :, :2]).max(axis=2) + np.eye(3) * 99
        assert gaps.min() >= robot.config.cube_size_cm  # no overlaps
    for i, text in enumerate(robot.instructions()):
        for seed in (i, 100 + i):
            assert robot.reset(seed=seed, instruction=text) == text
            assert not robot.success()


def test_instructions_families_and_unknown_instructions():
    robot = LiftRobot(seed=0, image_size=IMAGE)
    every = robot.instructions()
    assert every == all_instructions() == robot.instructions()  # fixed order
    assert len(every) == len(set(every)) == 15
    assert {"put the red cube in the left bin", "stack the green cube on the blue cube",
            "lift the blue cube"} <= set(every)
    families = set()
    for text in every:
        assert robot.reset(seed=1, instruction=text) == robot.instruction == text
        families.add(robot.family)
    assert families == set(FAMILIES)
    assert robot.reset(seed=1, instruction="  Lift the RED cube. ") == "lift the red cube"
    for bad in ("put the purple cube in the left bin", "stack the red cube on the red cube", "", "lift the bar"):
        with pytest.raises(ValueError, match="unknown instruction.*such as"):
            robot.reset(seed=1, instruction=bad)
    drawn = {robot.reset(seed=s) for s in range(300)}
    assert drawn == set(every)  # uniform over all of them: 300 draws cover 15
    lift_only = LiftRobot(seed=0, image_size=IMAGE, families=("lift",))
    assert lift_only.instructions() == ["lift the red cube", "lift the green cube", "lift the blue cube"]
    with pytest.raises(ValueError):
        lift_only.reset(instruction="put the red cube in the left bin")


def test_same_seed_and_actions_give_identical_frames_other_seeds_other_layouts():
    actions = np.random.default_rng(7).uniform(-1.3, 1.3, (40, 4))  # some out of range on purpose
    a, b = LiftRobot(seed=1, image_size=IMAGE), LiftRobot(seed=2, image_size=IMAGE)
    frames_a, frames_b = _run(a, 11, actions), _run(b, 11, actions)
    assert all(np.array_equal(x, y) for x, y in zip(frames_a, frames_b))
    assert not np.array_equal(frames_a[0], frames_a[-1])
    _run(a, 5, actions[:7])
    assert all(np.array_equal(x, y) for x, y in zip(_run(a, 11, actions), frames_a))
    layouts = set()
    for seed in range(20):
        a.reset(seed=seed)
        layouts.add(np.round(np.array(list(a.state()["cubes"].values())), 6).tobytes())
    assert len(layouts) == 20
    assert not np.array_equal(_run(a, 12, actions[:1])[0], frames_a[0])
    # the layout depends on the seed only, not on whether the instruction was drawn or given
    a.reset(seed=3)
    drawn = a.state()["cubes"]
    a.reset(seed=3, instruction="lift the green cube")
    assert all(np.array_equal(drawn[c], a.state()["cubes"][c]) for c in drawn)


def test_reset_without_seed_follows_the_constructor_seed():
    a, b, c = LiftRobot(seed=3, image_size=IMAGE), LiftRobot(seed=3, image_size=IMAGE), LiftRobot(seed=4)
    assert [a.reset() for _ in range(4)] == [b.reset() for _ in range(4)]
    assert a.episode_seed == b.episode_seed != c.episode_seed
    assert np.array_equal(a.observe(), b.observe())


def test_observation_shape_dtype_read_only_cache():
    robot = LiftRobot(seed=0)
    assert robot.image_size == 64 and robot.control_rate_hz == 10.0 and robot.action_dim == 4
    img = robot.observe()
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert robot.observe() is img and not img.flags.writeable
    with pytest.raises(ValueError):
        img[0, 0, 0] = 1
    robot.step([0.0, 0.0, 0.0, 0.0])
    assert robot.observe() is not img
    assert LiftRobot(seed=0, image_size=40).observe().shape == (40, 40, 3)
    assert robot.render(128).shape == (128, 128, 3)
    # every cube's colour shows (RGB order, not BGR)
    frame = robot.render(128).astype(int)
    for rgb in ((215, 50, 45), (55, 170, 75), (45, 90, 215)):
        assert np.abs(frame - rgb).sum(axis=2).min() < 30, rgb


def test_bad_actions_raise_and_change_nothing_out_of_range_is_clipped():
    robot = LiftRobot(seed=0, image_size=IMAGE)
    robot.reset(seed=5)
    before, frame = robot.state(), robot.observe().copy()
    for bad in ([np.nan, 0, 0, 0], [0, 0, np.inf, 0], [0, 0, 0, -np.inf], [0.1, 0.2, 0.3], [0, 0, 0, 0, 0], "up"):
        with pytest.raises(ValueError):
            robot.step(bad)
    after = robot.state()
    assert after["t"] == before["t"] == 0 and np.array_equal(after["ee"], before["ee"])
    assert np.array_equal(robot.observe(), frame)
    ee = robot.state()["ee"]
    robot.step([5.0, 0.0, 0.0, 0.0])  # clipped to 1: one full step right
    np.testing.assert_allclose(robot.state()["ee"], ee + [2.0, 0.0, 0.0])
    robot.step([-1.0, -1.0, 1.0, 0.0])  # xyz scaled to norm 1: bounded speed
    np.testing.assert_allclose(robot.state()["ee"], ee + [2.0, 0.0, 0.0] + np.array([-1, -1, 1]) * 2 / np.sqrt(3))
    for _ in range(30):  # clamped to the workspace
        robot.step([0.0, 0.0, -1.0, 0.0])
    assert robot.state()["ee"][2] == robot.config.ee_min_z_cm


def test_grab_lift_and_release_drops_the_cube_back_to_the_table():
    robot = LiftRobot(seed=0, image_size=IMAGE)
    robot.reset(seed=2, instruction="lift the red cube")
    start = robot.state()["cubes"]
    # closing with nothing in reach grabs nothing
    robot.step([0.0, 0.0, 0.0, 1.0])
    assert robot.state()["held"] is None and robot.state()["gripper"] == 1.0
    robot.step([0.0, 0.0, 0.0, -1.0])
    _grab(robot, "red")
    assert not robot.success()  # held, but not high enough yet
    red = robot.state()["cubes"]["red"]
    _go(robot, robot.state()["ee"] + [1.0, 0.0, 10.0], grip=1.0)
    moved = robot.state()["cubes"]["red"]
    np.testing.assert_allclose(moved, red + [1.0, 0.0, 10.0])  # rigidly with the EE
    assert robot.success()  # lift: held, bottom above 8 cm
    for c in ("green", "blue"):
        np.testing.assert_array_equal(robot.state()["cubes"][c], start[c])
    robot.step([0.0, 0.0, 0.0, -1.0])  # open: it drops straight down onto the table
    dropped = robot.state()["cubes"]["red"]
    assert robot.state()["held"] is None and not robot.success()
    np.testing.assert_allclose(dropped, [moved[0], moved[1], robot.config.half_cm])
    # closing again high above it grabs nothing: only within the grasp radius
    robot.step([0.0, 0.0, 0.0, 1.0])
    assert robot.state()["held"] is None


def test_place_in_a_bin_and_stack_on_a_cube():
    robot = LiftRobot(seed=0, image_size=IMAGE)
    cfg = robot.config
    robot.reset(seed=6, instruction="put the green cube in the left bin")
    _grab(robot, "green")
    bin_centre = robot.state()["bins"]["left"]
    _go(robot, robot.state()["ee"] + [0.0, 0.0, 6.0], grip=1.0)
    _go(robot, [bin_centre[0] + 0.5, bin_centre[1] - 0.5, 8.0], grip=1.0)
    assert not robot.success()  # above the bin but still held
    robot.step([0.0, 0.0, 0.0, -1.0])
    assert robot.success() and robot.state()["success"]
    np.testing.assert_allclose(robot.state()["cubes"]["green"][2], cfg.bin_floor_cm + cfg.half_cm)
    # the other bin does not count
    robot.reset(seed=6, instruction="put the green cube in the right bin")
    _grab(robot, "green")
    _go(robot, [bin_centre[0], bin_centre[1], 8.0], grip=1.0)
    robot.step([0.0, 0.0, 0.0, -1.0])
    assert not robot.success()

    # released over a rim it slides into the bin; overlapping the rim from outside, it is nudged off
    robot.reset(seed=6, instruction="put the green cube in the left bin")
    inner, outer = 0.5 * cfg.bin_inner_cm, 0.5 * cfg.bin_inner_cm + cfg.bin_wall_cm
    _grab(robot, "green")
    _go(robot, [bin_centre[0] + outer - 0.2, bin_centre[1], 8.0], grip=1.0)
    robot.step([0.0, 0.0, 0.0, -1.0])
    assert robot.success()
    slid_in = [bin_centre[0] + inner - cfg.half_cm, bin_centre[1], cfg.bin_floor_cm + cfg.half_cm]
    np.testing.assert_allclose(robot.state()["cubes"]["green"], slid_in)
    _grab(robot, "green")
    _go(robot, [bin_centre[0] + outer + 0.5, bin_centre[1], 8.0], grip=1.0)
    robot.step([0.0, 0.0, 0.0, -1.0])
    assert not robot.success()
    np.testing.assert_allclose(robot.state()["cubes"]["green"],
                               [bin_centre[0] + outer + cfg.half_cm, bin_centre[1], cfg.half_cm])

    robot.reset(seed=6, instruction="stack the red cube on the blue cube")
    _grab(robot, "red")
    blue = robot.state()["cubes"]["blue"]
    _go(robot, robot.state()["ee"] + [0.0, 0.0, 6.0], grip=1.0)
    _go(robot, blue + [0.6, -0.4, 6.0], grip=1.0)
    robot.step([0.0, 0.0, 0.0, -1.0])
    red = robot.state()["cubes"]["red"]
    assert robot.success()
    np.testing.assert_allclose(red, blue + [0.6, -0.4, cfg.cube_size_cm])  # rests on top of it
    # taking the bottom cube away drops the top one onto the table
    robot.step([0.0, 0.0, 0.0, 1.0])
    _go(robot, blue + [0.0, 0.0, 0.0], grip=-1.0)
    robot.step([0.0, 0.0, 0.0, 1.0])
    assert robot.state()["held"] == "blue" and not robot.success()
    np.testing.assert_allclose(robot.state()["cubes"]["red"], red - [0.0, 0.0, cfg.cube_size_cm])


def test_camera_shows_height_and_gripper_state():
    robot = LiftRobot(seed=0, image_size=IMAGE)
    for seed in range(5):
        robot.reset(seed=seed)
        frame, ee = robot.observe().copy(), robot.state()["ee"]
        robot.step([0.0, 0.0, 0.5, 0.0])  # up 1 cm, nothing else
        np.testing.assert_allclose(robot.state()["ee"], ee + [0.0, 0.0, 1.0])
        assert not np.array_equal(robot.observe(), frame)
        frame, ee = robot.observe().copy(), robot.state()["ee"]
        robot.step([0.0, 0.0, 0.0, 1.0])  # close on nothing (the EE starts well above the cubes)
        assert robot.state()["held"] is None and np.array_equal(robot.state()["ee"], ee)
        assert np.abs(robot.observe().astype(int) - frame).sum() > 100


def test_protocol_factory_and_config_errors():
    robot = make_robot("efm_ros.sim.lift:LiftRobot", image_size=32)
    assert isinstance(robot, LiftRobot) and isinstance(robot, Robot)
    assert robot.observe().shape == (32, 32, 3)
    assert LiftRobot(seed=0, lift_height_cm=6.0).config.lift_height_cm == 6.0
    assert LiftRobot(seed=0, config=LiftConfig(max_step_cm=1.0)).config.max_step_cm == 1.0
    with pytest.raises(TypeError, match="unknown keyword"):
        LiftRobot(seed=0, gravity=9.81)
    with pytest.raises(ValueError):
        LiftRobot(seed=0, image_size=4)
    with pytest.raises(ValueError):
        LiftRobot(seed=0, families=("push",))
    with pytest.raises(ValueError):
        LiftRobot(seed=0, cube_size_cm=-1.0)
