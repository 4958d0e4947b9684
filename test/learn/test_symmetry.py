"""Symmetries of the view (train-sft --symmetries): frames, actions and instructions transform together."""
from __future__ import annotations

import numpy as np
import pytest

from efm_ros.learn.symmetry import (SYMMETRIES, SymmetryError, phrase_map, resolve_symmetries, symmetry_matrix,
                                    transform_frames, transform_points, transform_tokens)
from efm_ros.model.bins import ActionBins


def _reference(frames: np.ndarray, name: str) -> np.ndarray:
    """The same transforms by numpy's own flips and turns (rot90 = clockwise on screen)."""
    return {"flip_lr": frames[:, :, ::-1], "flip_ud": frames[:, ::-1],
            "rot180": frames[:, ::-1, ::-1], "rot90": np.rot90(frames, k=-1, axes=(1, 2)),
            "rot270": np.rot90(frames, k=1, axes=(1, 2)), "transpose": frames.swapaxes(1, 2),
            "antitranspose": frames[:, ::-1, ::-1].swapaxes(1, 2)}[name]


@pytest.mark.parametrize("name", sorted(SYMMETRIES))
def test_frames_turn_like_numpys_own_flips_and_turns(name):
    frames = np.random.default_rng(0).integers(0, 256, (3, 7, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(transform_frames(frames, name), _reference(frames, name))
    m = symmetry_matrix(name)
    assert abs(round(np.linalg.det(m))) == 1 and (np.abs(m).sum(0) == 1).all()   # a signed permutation


def test_a_pixel_goes_where_its_point_goes():
    frames = np.zeros((1, 9, 9, 1), np.uint8)
    frames[0, 2, 6] = 255                                        # row 2 (y), column 6 (x)
    for name in SYMMETRIES:
        y, x = np.argwhere(transform_frames(frames, name)[0, ..., 0])[0]
        np.testing.assert_allclose(transform_points([6.5, 2.5], name, 9), [x + 0.5, y + 0.5])


def test_tokens_map_bin_centre_onto_bin_centre_and_keep_missing_actions():
    bins = ActionBins()
    tokens = np.array([[0, 10], [20, 3], [-1, -1]])
    for name in SYMMETRIES:
        out = transform_tokens(tokens, name, bins)
        np.testing.assert_allclose(bins.decode(out[:2]), bins.decode(tokens[:2]) @ symmetry_matrix(name).T)
        np.testing.assert_array_equal(out[2], [-1, -1])
    three = np.array([[4, 7, 0]])                                 # a third action dimension is left alone
    np.testing.assert_array_equal(transform_tokens(three, "flip_lr", ActionBins(dims=3), axes=(1, 2)), [[4, 13, 0]])
    with pytest.raises(SymmetryError, match="not symmetric"):
        transform_tokens(tokens, "flip_lr", ActionBins(low=0.0, high=1.0))
    with pytest.raises(SymmetryError, match="unknown symmetry"):
        transform_tokens(tokens, "rot45", bins)


def test_frames_and_actions_of_the_simulator_transform_together():
    """Where the arm moves on screen: in the transformed frames it moves as the transformed action says."""
    from efm_ros.sim.tabletop import TabletopRobot

    robot = TabletopRobot(image_size=96)
    robot.reset(seed=3)
    bins = ActionBins()
    token = np.array([[16, 7]])                                   # right and up
    before = robot.observe()
    robot.step(bins.decode(token)[0])
    after = robot.observe()

    def arm_centre(frame):                                       # the EE disc is the only pixels this colour
        from efm_ros.sim.tabletop import EE_RGB
        ys, xs = np.nonzero((np.abs(frame.astype(int) - EE_RGB).sum(-1) < 30))
        return np.array([xs.mean(), ys.mean()])

    for name in SYMMETRIES:
        f0, f1 = transform_frames(np.stack([before, after]), name)
        moved = arm_centre(f1) - arm_centre(f0)
        mapped = bins.decode(transform_tokens(token, name, bins))[0]
        assert np.dot(moved / np.linalg.norm(moved), mapped / np.linalg.norm(mapped)) > 0.98, name


def test_table_instructions_follow_the_symmetry():
    from efm_ros.sim import instructions as ins

    t = ins.transform_instruction
    assert t("push the red block to the top left corner", symmetry_matrix("flip_lr")) \
        == "push the red block to the top right corner"
    assert t("move the blue block to the left side", symmetry_matrix("rot90")) == "move the blue block to the top center"
    assert t("slide the red block to the green block", symmetry_matrix("rot90")) == "slide the red block to the green block"
    size = 50.0
    for name in SYMMETRIES:
        m = symmetry_matrix(name)
        located = [x for x in ins.all_tasks(("block2location",))]
        images = {t(x.instruction, m) for x in located}
        assert len(images) == len(located)                        # a bijection on the instructions
        for x in located:                                         # the goal point moves as the view does
            y = ins.parse_instruction(t(x.instruction, m))
            np.testing.assert_allclose(ins.location_point(y.location, size),
                                       transform_points(ins.location_point(x.location, size), name, size))
    with pytest.raises(ValueError, match="unknown instruction"):
        t("push it somewhere", symmetry_matrix("flip_lr"))


def test_phrase_map_swaps_whole_words_at_once():
    swap = phrase_map({"left": "right", "right": "left", "left bin": "right bin"})
    assert swap("put the cube in the left bin, then go right") == "put the cube in the right bin, then go left"
    assert swap("leftover") == "leftover"
    assert phrase_map({})("anything") == "anything"


def test_symmetry_names_resolve_or_are_refused():
    assert resolve_symmetries(["all"]) == sorted(SYMMETRIES) and len(SYMMETRIES) == 7
    assert resolve_symmetries(["rot90", "flip_lr"]) == ["rot90", "flip_lr"]
    with pytest.raises(SymmetryError, match="unknown"):
        resolve_symmetries(["rot45"])
    with pytest.raises(SymmetryError, match="twice"):
        resolve_symmetries(["rot90", "rot90"])
    with pytest.raises(SymmetryError, match="unknown"):
        resolve_symmetries(["all", "rot90"])
