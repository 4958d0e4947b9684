"""Record mode's logic without ROS: the teleop session (limits, watchdog, operator marks) and the
keyboard teleop's key map."""
from __future__ import annotations

import math

import numpy as np
import pytest

from efm_ros.control.teleop import TeleopPhase, TeleopSession
from efm_ros.nodes.keyboard_teleop import KeyboardTeleop
from efm_ros.robots.commands import ActionAxes


def session(axes="", dims=2, **kw) -> TeleopSession:
    return TeleopSession(ActionAxes.parse(axes, dims, max_speed_mps=0.2), "robot_0", **kw)


def run_episode(s: TeleopSession, frames: int, now: float = 0.0) -> list:
    assert s.start("e1") is None and s.begin("push the red block") is None
    out = []
    for i in range(frames):
        s.on_twist((0.1, 0.0, 0.0), (0.0, 0.0, 0.0), now=now + 0.1 * i)
        out.append(s.on_frame(now=now + 0.1 * i))
    return out


def test_a_demonstration_acts_once_per_frame_and_ends_on_the_goal_frame():
    s = session()
    acted = run_episode(s, 4)
    assert [step for _, step, _ in acted] == [0, 1, 2, 3]
    np.testing.assert_allclose(acted[0][0], [0.5, 0.0])        # 0.1 m/s of 0.2 m/s full scale
    assert s.mark("success") == (None, None) and s.phase is TeleopPhase.ENDING
    action, step, end = s.on_frame(now=1.0)                     # the goal frame: no action, the end
    assert action is None and end.success and end.steps == 4 and end.reason == "operator: success"
    assert end.instruction == "push the red block" and s.phase is TeleopPhase.IDLE


def test_discard_ends_at_once_and_operator_commands_in_the_wrong_state_are_refused():
    s = session()
    assert "no episode" in s.mark("success")[0]
    run_episode(s, 2)
    assert "mark it success or discard first" in s.start("e2")
    refusal, end = s.mark("discard")
    assert refusal is None and not end.success and end.reason == "discard" and end.steps == 2
    assert s.counts["discarded"] == 1 and s.phase is TeleopPhase.IDLE
    s.start("e3")
    assert "before the first action" in (s.begin("x") or s.mark("success")[0])
    assert "unknown mark" in s.mark("maybe")[0]


def test_commands_are_bounded_and_the_watchdog_holds_still_keeping_the_gripper():
    s = session("linear.x,linear.y,linear.z,gripper", 4, command_timeout_s=0.5)
    s.on_twist((0.6, 0.0, 0.8), (0.0, 0.0, 0.0), now=0.0)      # 5x full scale: the motion is scaled to norm 1
    assert s.on_gripper(3.0)                                      # clipped to closed
    a, held = s.action(now=0.1)
    np.testing.assert_allclose(a, [0.6, 0.0, 0.8, 1.0], rtol=1e-6)
    assert not held and s.counts["clipped_range"] == 1
    a, held = s.action(now=1.0)                                   # nothing new for 1 s: hold still, still closed
    assert held and np.allclose(a, [0.0, 0.0, 0.0, 1.0])
    assert not s.on_twist((math.nan, 0.0, 0.0), (0.0, 0.0, 0.0)) and s.counts["rejected_nan"] == 1
    assert not s.on_gripper(math.inf)
    assert not session().on_gripper(1.0)                          # no gripper axis: ignored, counted


def test_a_forgotten_episode_is_discarded_at_max_steps():
    s = session(max_steps=3)
    acted = run_episode(s, 4)
    assert acted[-1][0] is None and acted[-1][2].reason == "discard" and s.counts["max_steps"] == 1


def test_a_command_from_before_the_start_is_not_replayed():
    s = session()
    s.on_twist((0.2, 0.0, 0.0), (0.0, 0.0, 0.0), now=0.0)
    s.start("e1")
    s.begin("x")
    action, _, _ = s.on_frame(now=0.1)
    assert not action.any()


@pytest.mark.parametrize("key, velocity", [("d", (0.2, 0.0, 0.0)), ("w", (0.0, -0.2, 0.0)), ("r", (0.0, 0.0, 0.2))])
def test_keyboard_keys_move_for_the_hold_time_then_stop(key, velocity):
    k = KeyboardTeleop(speed_mps=0.2, hold_s=0.5)
    assert k.key(key, now=0.0) == (None, False)
    assert k.velocity(0.4) == velocity and k.velocity(0.6) == (0.0, 0.0, 0.0)
    k.key(key, now=1.0)
    k.key(" ", now=1.1)
    assert k.velocity(1.2) == (0.0, 0.0, 0.0)


def test_keyboard_operator_and_gripper_keys():
    k = KeyboardTeleop()
    assert k.key("n", 0.0) == ("start", False) and k.key("y", 0.0) == ("success", False)
    assert k.key("x", 0.0) == ("discard", False)
    assert k.gripper == -1.0 and k.key("g", 0.0) == (None, True) and k.gripper == 1.0
    k.key("q", 0.0)
    assert k.quit
