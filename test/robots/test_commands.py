import math

import numpy as np
import pytest

from efm_ros.robots.commands import ActionAxes, CommandValidator, default_axes


def test_valid_command_passes_unchanged():
    v = CommandValidator()
    c = v.check([0.3, -0.4])
    assert not c.rejected and c.reason is None
    np.testing.assert_allclose(c.action, [0.3, -0.4], rtol=1e-6)
    assert v.counts["accepted"] == 1 and v.rejected == 0


@pytest.mark.parametrize("bad", [[math.nan, 0.0], [0.0, math.inf], [-math.inf, 1.0]])
def test_non_finite_is_rejected_and_counted(bad):
    v = CommandValidator()
    c = v.check(bad)
    assert c.rejected and "non-finite" in c.reason
    assert v.counts["rejected_nan"] == 1 and v.rejected == 1


@pytest.mark.parametrize("bad", [[], [0.1], [0.1, 0.2, 0.3]])
def test_wrong_length_is_rejected(bad):
    v = CommandValidator()
    c = v.check(bad)
    assert c.rejected and f"got {len(bad)}" in c.reason
    assert v.counts["rejected_length"] == 1


def test_non_numeric_is_rejected():
    v = CommandValidator()
    assert v.check(["a", "b"]).rejected and v.counts["rejected_type"] == 1


def test_out_of_range_is_scaled_to_the_norm_bound_keeping_direction():
    v = CommandValidator()
    c = v.check([3.0, 4.0])  # norm 5 -> (0.6, 0.8)
    np.testing.assert_allclose(c.action, [0.6, 0.8], rtol=1e-6)
    assert "scaled" in c.reason and v.clipped == 1 and v.rejected == 0


def test_planar_twist_conversion_round_trip():
    axes = ActionAxes.parse("", 2, max_speed_mps=0.2)
    assert axes.axes == ("linear.x", "linear.y")
    linear, angular, gripper = axes.to_command([0.5, -0.25])
    np.testing.assert_allclose(linear, [0.1, -0.05, 0.0])
    assert gripper is None and not angular.any()
    action, ignored = axes.from_command(linear, angular)
    np.testing.assert_allclose(action, [0.5, -0.25])
    assert not ignored
    assert axes.from_command([0.1, 0.0, 0.3], [0.0, 0.0, 0.0])[1]   # motion on an axis it does not drive
    with pytest.raises(ValueError):
        ActionAxes(("linear.x",), max_speed_mps=0.0)


def test_cartesian_gripper_axes_bound_motion_and_gripper_apart():
    axes = ActionAxes.parse("linear.x, linear.y, linear.z, gripper", 4, max_speed_mps=0.1)
    linear, _, gripper = axes.to_command([3.0, 0.0, 4.0, 1.0])   # the motion is scaled to unit norm,
    np.testing.assert_allclose(linear, [0.06, 0.0, 0.08])         # the gripper command is not
    assert gripper == 1.0
    action, _ = axes.from_command(linear, [0.0] * 3, gripper)
    np.testing.assert_allclose(action, [0.6, 0.0, 0.8, 1.0])
    v = CommandValidator(4, axes=axes)
    assert not v.check([0.0, 0.0, 1.0, 1.0]).reason                # full speed and closed: in range
    c = v.check([0.0, 0.0, 2.0, -3.0])
    np.testing.assert_allclose(c.action, [0.0, 0.0, 1.0, -1.0]) and v.clipped == 1


@pytest.mark.parametrize("text, dims", [("linear.x", 2), ("linear.x,linear.x", 2), ("linear.q,linear.y", 2), ("", 5)])
def test_bad_axes_are_refused_with_a_clear_error(text, dims):
    with pytest.raises(ValueError, match="axes"):
        ActionAxes.parse(text, dims)


def test_default_axes_by_action_size():
    assert default_axes(3) == ("linear.x", "linear.y", "linear.z")
    assert default_axes(7)[-1] == "gripper"
