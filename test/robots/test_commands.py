import math

import numpy as np
import pytest

from efm_ros.robots.commands import CommandValidator, action_to_twist, twist_to_action


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


def test_twist_conversion_round_trip():
    a = twist_to_action(0.1, -0.05, max_speed_mps=0.2)
    np.testing.assert_allclose(a, [0.5, -0.25])
    assert action_to_twist(a, 0.2) == pytest.approx((0.1, -0.05))
    with pytest.raises(ValueError):
        twist_to_action(0.1, 0.1, 0.0)
