"""The embedded table: determinism, actions, images, reset layouts, config, the novel bar."""
from __future__ import annotations

import hashlib
import math
import subprocess
import sys

import numpy as np
import pytest

from efm_ros.robots import Robot
from efm_ros.sim.instructions import COLORS, LOCATIONS, location_point
from efm_ros.sim.tabletop import BAR_SPEC, BLOCKS, TabletopRobot, check_action


def _run(robot: TabletopRobot, seed: int, actions: np.ndarray) -> list[np.ndarray]:
    robot.reset(seed=seed)
    frames = [robot.observe().copy()]
    for a in actions:
        robot.step(a)
        frames.append(robot.observe().copy())
    return frames


def _digest(frames) -> str:
    h = hashlib.sha256()
    for f in frames:
        h.update(f.tobytes())
    return h.hexdigest()


ACTIONS = np.random.default_rng(7).uniform(-1.2, 1.2, (60, 2))  # some out of range on purpose

DIGEST_SCRIPT = """
import hashlib, numpy as np
from efm_ros.sim.tabletop import TabletopRobot
r = TabletopRobot(seed=1)
r.reset(seed=11)
h = hashlib.sha256(r.observe().tobytes())
for a in np.random.default_rng(7).uniform(-1.2, 1.2, (60, 2)):
    r.step(a)
    h.update(r.observe().tobytes())
print(h.hexdigest())
"""


def test_same_seed_and_actions_give_identical_frames():
    a, b = TabletopRobot(seed=1), TabletopRobot(seed=2)
    frames_a = _run(a, 11, ACTIONS)
    frames_b = _run(b, 11, ACTIONS)
    assert all(np.array_equal(x, y) for x, y in zip(frames_a, frames_b))
    assert not np.array_equal(frames_a[0], frames_a[-1])  # the actions did move something
    # the same robot again, after other episodes, and a different seed differs
    _run(a, 5, ACTIONS[:10])
    assert _digest(_run(a, 11, ACTIONS)) == _digest(frames_a)
    assert not np.array_equal(_run(a, 12, ACTIONS)[0], frames_a[0])
    # and another process (as the collector's workers are) gets the very same bytes
    out = subprocess.run([sys.executable, "-c", DIGEST_SCRIPT], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == _digest(frames_a)


def test_reset_without_seed_follows_the_constructor_seed():
    a, b, c = TabletopRobot(seed=3), TabletopRobot(seed=3), TabletopRobot(seed=4)
    assert [a.reset() for _ in range(3)] == [b.reset() for _ in range(3)]
    assert a.episode_seed == b.episode_seed != c.episode_seed
    assert np.array_equal(a.observe(), b.observe())


def test_observation_shape_dtype_size_and_content():
    robot = TabletopRobot(seed=0)
    assert isinstance(robot, Robot) and robot.action_dim == 2 and robot.control_rate_hz == 10.0
    img = robot.observe()
    assert img.shape == (96, 96, 3) and img.dtype == np.uint8
    assert robot.observe() is img and not img.flags.writeable  # cached until the next step
    small = TabletopRobot(seed=0, image_size=64).observe()
    assert small.shape == (64, 64, 3) and small.dtype == np.uint8
    assert robot.render(256).shape == (256, 256, 3)
    # every block's colour is visible somewhere in the frame (RGB order, not BGR)
    for spec in BLOCKS:
        dist = np.abs(img.astype(int) - np.array(spec.rgb)).sum(axis=2)
        assert (dist < 40).sum() >= 10, spec.name
    # the debug goal marker is never part of an observation
    assert np.array_equal(robot.render(), img)
    assert not np.array_equal(robot.render(show_goal=True), img)


def test_actions_move_the_ee_in_documented_units_and_are_bounded():
    robot = TabletopRobot(seed=0)
    robot.set_state(ee=(25.0, 25.0), positions={"red": (40, 25), "green": (42, 8), "blue": (8, 42), "yellow": (42, 42)})
    cases = [((0.3, -0.4), (0.6, -0.8)),   # in range: a * 2 cm, +x right, +y down
             ((5.0, 0.0), (2.0, 0.0)),     # out of range: scaled to norm 1
             ((3.0, 4.0), (1.2, 1.6)),     # the direction is kept
             ((0.0, 0.0), (0.0, 0.0))]
    for action, expected in cases:
        before = robot.state()["ee"]
        robot.step(action)
        np.testing.assert_allclose(robot.state()["ee"] - before, expected, atol=1e-9)
    np.testing.assert_allclose(check_action([-7.0, 0.0]), [-1.0, 0.0])
    assert np.all(np.abs(check_action([0.9, 0.9])) <= 1.0) and math.hypot(*check_action([0.9, 0.9])) <= 1.0 + 1e-12
    # the EE stays on the table however hard it is pushed into a wall
    for _ in range(30):
        robot.step((-1.0, -1.0))
    np.testing.assert_allclose(robot.state()["ee"], [2.0, 2.0])


@pytest.mark.parametrize("bad", [[math.nan, 0.0], [0.0, math.inf], [-math.inf, 0.5], [1.0, 2.0, 3.0], [1.0], [],
                                 "left", [[0.1, 0.2], [0.3, 0.4]]])
def test_bad_actions_raise_and_change_nothing(bad):
    robot = TabletopRobot(seed=0)
    frame, state = robot.observe().copy(), robot.state()
    with pytest.raises(ValueError, match="action"):
        robot.step(bad)
    assert robot.t == 0 and np.array_equal(robot.observe(), frame)
    np.testing.assert_array_equal(robot.state()["ee"], state["ee"])


def test_reset_layouts_do_not_overlap_and_goal_is_not_reached():
    robot = TabletopRobot(seed=0)
    size = robot.config.table_size_cm
    for seed in range(150):
        robot.reset(seed=seed)
        s = robot.state()
        objs = s["objects"]
        assert not robot.success() and not s["success"]
        assert s["goal_distance"] > s["success_radius"] + 3.9
        names = list(objs)
        for i, n in enumerate(names):
            p, r = objs[n]["position"], objs[n]["radius"]
            assert r < p[0] < size - r and r < p[1] < size - r
            assert np.linalg.norm(s["ee"] - p) >= r + s["ee_radius"]
            for m in names[i + 1:]:
                assert np.linalg.norm(p - objs[m]["position"]) >= r + objs[m]["radius"]
        if robot.task.location is not None:  # the goal region is free of other blocks
            goal = location_point(robot.task.location, size)
            for n in names:
                if n != robot.task.target:
                    assert np.linalg.norm(objs[n]["position"] - goal) > s["success_radius"] + objs[n]["radius"]


def test_reset_with_an_instruction_and_family_options():
    robot = TabletopRobot(seed=0)
    assert robot.reset(seed=1, instruction="Push the RED block to the blue block.") == "push the red block to the blue block"
    assert (robot.task.family, robot.task.target, robot.task.reference) == ("block2block", "red", "blue")
    with pytest.raises(ValueError, match="unknown instruction"):
        robot.reset(seed=1, instruction="push the red block off the table")
    with pytest.raises(ValueError, match="not available"):
        robot.reset(seed=1, instruction="push the bar to the center")
    only = TabletopRobot(seed=0, families=["block2block"])  # lists (from ROS parameters/YAML) are fine
    assert {only.reset() and only.task.family for _ in range(40)} == {"block2block"}
    default = TabletopRobot(seed=0)
    families = [default.reset() and default.task.family for _ in range(400)]
    assert 0.4 < families.count("block2block") / 400 < 0.6  # default 50/50
    skewed = TabletopRobot(seed=0, family_weights=(0.9, 0.1))
    families = [skewed.reset() and skewed.task.family for _ in range(400)]
    assert 0.83 < families.count("block2block") / 400 < 0.97


@pytest.mark.parametrize("kwargs, match", [
    ({"imagesize": 64}, "unknown TabletopConfig keys"),
    ({"variant": "banana"}, "unknown variant"),
    ({"families": ("bar2location",)}, "not available"),
    ({"variant": "novel_bar", "families": ("block2block",)}, "not available"),
    ({"family_weights": (1.0,)}, "family_weights"),
    ({"image_size": 4}, "image_size"),
    ({"control_rate_hz": 0.0}, "control_rate_hz"),
])
def test_bad_config_is_rejected_loudly(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TabletopRobot(**kwargs)


def test_control_rate_sets_substeps_and_keeps_step_displacement():
    robot = TabletopRobot(seed=0, control_rate_hz=5.0)
    assert robot.control_rate_hz == 5.0 and robot.config.substeps == 20
    before = robot.state()["ee"]
    robot.step((0.0, 0.0))
    np.testing.assert_array_equal(robot.state()["ee"], before)


def test_set_state_validates_names_and_positions():
    robot = TabletopRobot(seed=0)
    with pytest.raises(ValueError, match="unknown objects"):
        robot.set_state(positions={"purple": (10, 10)})
    with pytest.raises(ValueError, match="off the table"):
        robot.set_state(positions={"red": (60, 10)})
    with pytest.raises(ValueError, match="workspace"):
        robot.set_state(ee=(0.5, 10))


def test_a_block_jammed_against_a_wall_is_not_crushed_through_it():
    robot = TabletopRobot(seed=0)
    robot.set_state(ee=(12.0, 25.0), positions={"red": (6.0, 25.0), "green": (30, 10), "blue": (30, 40), "yellow": (40, 25)},
                    angles={"red": math.pi / 4})
    for _ in range(25):
        robot.step((-1.0, 0.0))
    state = robot.state()
    red, ee = state["objects"]["red"]["position"], state["ee"]
    assert BLOCKS[0].inradius - 0.2 <= red[0] <= BLOCKS[0].radius + 0.5  # resting against the wall
    assert abs(red[1] - 25.0) < 1.0  # not squeezed out sideways
    assert ee[0] > red[0] + BLOCKS[0].inradius + state["ee_radius"] - 0.5  # the EE was stopped by it


def _push(variant: str, name: str, offset_cm: float) -> tuple[float, float]:
    """Push object `name`, lying still at the table centre with angle 0, upwards for 8 steps with
    the EE `offset_cm` right of its middle, then wait 5 steps; returns (|rotation| rad, travel cm)."""
    robot = TabletopRobot(variant=variant, seed=0)
    others = {n: p for n, p in zip(("green", "blue", "yellow"), ((10, 10), (40, 10), (10, 40)))}
    positions = {name: (25.0, 25.0), **({} if variant == "novel_bar" else others)}
    robot.set_state(ee=(25.0 + offset_cm, 31.0), positions=positions, angles={name: 0.0})
    for _ in range(8):
        robot.step((0.0, -1.0))
    for _ in range(5):
        robot.step((0.0, 0.0))
    obj = robot.state()["objects"][name]
    return abs(obj["angle"]), float(np.linalg.norm(obj["position"] - (25.0, 25.0)))


def test_novel_bar_spins_when_pushed_off_centre_and_translates_when_pushed_in_the_middle():
    robot = TabletopRobot(variant="novel_bar", seed=0)
    assert robot.object_names == ("bar",) and robot.task.family == "bar2location"
    assert robot.instruction.endswith(tuple(phrase for phrase, _ in LOCATIONS.values()))
    centred_rot, centred_move = _push("novel_bar", "bar", 0.0)
    off_rot, off_move = _push("novel_bar", "bar", 4.0)
    assert centred_rot < 0.05 and centred_move > 10.0
    assert off_rot > 1.0 and off_rot > 20 * max(centred_rot, 0.01)
    assert off_move < 0.5 * centred_move
    # pushed 2 cm off-centre, the bar spins away where the red block barely turns: the bar's low
    # spin friction is what differs
    bar_rot, _ = _push("novel_bar", "bar", 2.0)
    block_rot, block_move = _push("blocks", "red", 2.0)
    assert bar_rot > 1.0 and block_rot < 0.3 * bar_rot and block_move > 10.0


def test_bar_variant_only_takes_bar_instructions():
    robot = TabletopRobot(variant="novel_bar", seed=0)
    assert robot.reset(seed=3, instruction="slide the bar to the top left corner") == "slide the bar to the top left corner"
    with pytest.raises(ValueError, match="not available"):
        robot.reset(seed=3, instruction="push the red block to the blue block")
    assert {robot.reset() and robot.task.target for _ in range(20)} == {"bar"}
    assert BAR_SPEC.name == "bar" and set(COLORS) == {s.name for s in BLOCKS}
