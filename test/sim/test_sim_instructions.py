"""Instructions: the closed set, parsing, sampling, and ground-truth success of each family."""
from __future__ import annotations

import numpy as np
import pytest

from efm_ros.sim import instructions as ins
from efm_ros.sim.tabletop import TabletopRobot

FAR = {"red": (40.0, 40.0), "green": (40.0, 8.0), "blue": (8.0, 40.0), "yellow": (25.0, 45.0)}


def test_every_instruction_parses_back_to_itself():
    every = ins.all_instructions()
    assert len(every) == len(set(every)) == 3 * (4 * 3 + 4 * 9 + 9) == 171
    for text in every:
        task = ins.parse_instruction(text)
        assert task.instruction == text
        assert ins.parse_instruction(f"  {text.upper()}. ") == task
    assert set(ins.all_instructions(ins.BLOCK_FAMILIES)) | set(ins.all_instructions(["bar2location"])) == set(every)
    assert all("bar" in t for t in ins.all_instructions(["bar2location"]))
    assert "push the red block to the blue block" in every
    assert "push the green block to the top left corner" in every


@pytest.mark.parametrize("text", ["push the purple block to the blue block", "push the red block to the red block",
                                  "push the red block to the moon", "", "push the bar to the blue block",
                                  "push the red block to the blue block please"])
def test_unknown_instructions_raise(text):
    with pytest.raises(ValueError, match="unknown instruction"):
        ins.parse_instruction(text)


def test_inconsistent_tasks_and_families_raise():
    with pytest.raises(ValueError):
        ins.Task("block2block", "red", reference="red")
    with pytest.raises(ValueError):
        ins.Task("block2location", "bar", location="center")
    with pytest.raises(ValueError):
        ins.Task("block2location", "red", location="far_away")
    with pytest.raises(ValueError):
        ins.all_instructions(["block2moon"])


def test_sampling_follows_families_and_weights():
    rng = np.random.default_rng(0)
    tasks = [ins.sample_task(rng, ins.BLOCK_FAMILIES, (3.0, 1.0)) for _ in range(2000)]
    share = sum(t.family == "block2block" for t in tasks) / len(tasks)
    assert 0.71 < share < 0.79
    assert {t.verb for t in tasks} == set(ins.VERBS) and {t.target for t in tasks} == set(ins.COLORS)
    assert {t.location for t in tasks if t.location} == set(ins.LOCATIONS)
    assert all(t.family == "bar2location" for t in (ins.sample_task(rng, ["bar2location"]) for _ in range(20)))
    with pytest.raises(ValueError):
        ins.sample_task(rng, ins.BLOCK_FAMILIES, (1.0,))


def test_block2block_success_is_centre_distance_to_the_reference_block():
    robot = TabletopRobot(seed=0)
    robot.reset(seed=0, instruction="push the red block to the blue block")
    cases = [((20.0, 25.0), (28.5, 25.0), True),    # 8.5 cm <= 9 cm
             ((20.0, 25.0), (29.5, 25.0), False),   # 9.5 cm
             ((20.0, 25.0), (25.0, 32.0), True),    # 8.6 cm, diagonal
             ((10.0, 10.0), (40.0, 40.0), False)]
    for red, blue, expected in cases:
        robot.set_state(positions={**FAR, "red": red, "blue": blue, "green": (40.0, 8.0), "yellow": (8.0, 45.0)})
        assert robot.success() is expected, (red, blue)
        assert robot.state()["success"] is expected
    # another block next to the reference does not count
    robot.set_state(positions={"red": (10.0, 10.0), "blue": (30.0, 30.0), "green": (36.0, 30.0), "yellow": (8.0, 45.0)})
    assert not robot.success()
    assert ins.is_success(ins.parse_instruction("push the green block to the blue block"), robot.positions(),
                          robot.config.table_size_cm)


def test_block2location_success_is_centre_distance_to_the_location_point():
    robot = TabletopRobot(seed=0)
    robot.reset(seed=0, instruction="push the green block to the top left corner")
    corner = ins.location_point("top_left", 50.0)
    np.testing.assert_allclose(corner, [10.0, 10.0])
    for green, expected in [((13.0, 13.9), True), ((10.0, 10.0), True), ((14.0, 14.0), False), ((40.0, 40.0), False)]:
        robot.set_state(positions={**FAR, "green": green})
        assert robot.success() is expected, green
    robot.set_state(positions={**FAR, "red": (10.0, 10.0), "green": (40.0, 8.0)})  # the wrong block there
    assert not robot.success()
    robot.reset(seed=0, instruction="move the yellow block to the bottom right corner")
    robot.set_state(positions={**FAR, "yellow": (38.0, 41.0)})
    assert robot.success()
    robot.set_state(positions={**FAR, "yellow": (25.0, 45.0)})
    assert not robot.success()


def test_bar2location_success_and_threshold_options():
    robot = TabletopRobot(variant="novel_bar", seed=0)
    robot.reset(seed=0, instruction="push the bar to the center")
    robot.set_state(positions={"bar": (25.0, 28.0)}, angles={"bar": 1.0})
    assert robot.success()
    robot.set_state(positions={"bar": (25.0, 31.0)})
    assert not robot.success()
    strict = TabletopRobot(variant="novel_bar", seed=0, location_success_cm=2.0)
    strict.reset(seed=0, instruction="push the bar to the center")
    strict.set_state(positions={"bar": (25.0, 28.0)})
    assert not strict.success()
