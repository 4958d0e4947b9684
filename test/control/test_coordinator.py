"""The fleet coordinator's rules, without ROS (efm_ros.control.coordinator)."""
import pytest

from efm_ros.control.coordinator import PAUSE, PAUSE_NOW, PRACTISE, FleetCoordinator, RobotGate


def test_the_fleet_settles_only_when_every_robot_paused_and_its_last_bag_is_read():
    c = FleetCoordinator(status_timeout_s=3.0)
    assert c.resume("v1") == (1, PRACTISE, "v1")                  # the trainer's first command
    c.on_status("/robot_0", 1, False, "v1", "", now=0.0)
    c.on_status("/robot_1", 1, False, "v1", "", now=0.0)
    seq, command, _ = c.pause(now=1.0, end_running=False)
    assert (seq, command) == (2, PAUSE)
    assert c.settled(1.0, set()) == (False, ["/robot_0", "/robot_1"])      # nobody has taken the PAUSE yet
    c.on_status("/robot_0", 2, True, "v1", "e0", now=1.5)                   # paused, its episode e0 ended
    c.on_status("/robot_1", 2, False, "v1", "", now=1.5)                    # still in its episode
    assert c.settled(1.6, {"e0"}) == (False, ["/robot_1"])
    c.on_status("/robot_1", 2, True, "v1", "e1", now=2.0)
    assert c.settled(2.0, {"e0"}) == (False, ["/robot_1"])                 # e1's bag not read yet
    assert c.settled(2.1, {"e0", "e1"}) == (True, [])
    seq, command, version = c.resume("v2")
    assert (seq, command, version) == (3, PRACTISE, "v2") and c.pauses == 1
    assert c.swapped("v2", 4.0) == (False, ["/robot_0", "/robot_1"])
    c.on_status("/robot_0", 3, True, "v2", "e0", now=4.2)
    c.on_status("/robot_1", 3, True, "v2", "e1", now=4.3)
    assert c.swapped("v2", 4.3) == (True, [])
    c.practising(4.3)          # the pause lasts until every robot acts with the new version
    assert c.paused_s == pytest.approx(3.3) and c.paused_share(4.3) == pytest.approx(3.3 / 4.3)   # since robots answered
    assert c.pause(now=10.0)[1] == PAUSE_NOW and c.pauses == 2   # the default: in-flight episodes end now


def test_a_silent_robot_is_reported_and_never_holds_the_fleet_up():
    c = FleetCoordinator(status_timeout_s=3.0)
    c.on_status("/robot_0", 1, False, "v1", "", now=0.0)
    c.on_status("/robot_1", 1, False, "v1", "", now=0.0)
    c.pause(now=1.0)
    c.on_status("/robot_0", 2, True, "v1", "", now=2.0)       # robot_1 was killed during the pause
    assert c.settled(2.5, set()) == (False, ["/robot_1"])
    assert c.settled(3.5, set()) == (True, []) and c.unresponsive(3.5) == ["/robot_1"]
    c.on_status("/robot_1", 2, True, "v1", "", now=4.0)       # respawned: it counts again
    assert c.unresponsive(4.0) == [] and c.responsive(4.0) == ["/robot_0", "/robot_1"]


def test_a_robot_starts_only_when_practising_on_the_named_version():
    g = RobotGate()
    assert g.may_start("v1")                                  # no coordinator: episodes follow each other
    assert g.on_command(1, PRACTISE, "v1") and g.may_start("v1") and not g.may_start("v0")
    assert not g.on_command(1, PRACTISE, "v1")                # the same command again (latched) is not news
    assert g.on_command(2, PAUSE, "v1") and not g.may_start("v1") and not g.end_running()
    assert g.on_command(3, PRACTISE, "v2")
    assert not g.may_start("v1")                              # waits for its policy to swap
    assert g.may_start("v2")
    assert g.on_command(4, PAUSE_NOW, "v2") and not g.may_start("v2") and g.end_running()
    assert g.on_command(1, PRACTISE, "v7") and g.may_start("v7")   # a restarted trainer counts from 1
    with pytest.raises(ValueError):
        g.on_command(9, 7, "v7")
