"""Robots by dotted path: the Gymnasium adapter (with a Gymnasium-style env defined here) and make_robot."""
from __future__ import annotations

import importlib.util
import math
from types import SimpleNamespace

import numpy as np
import pytest

from efm_ros.robots import Robot, make_robot
from efm_ros.robots.gymnasium import GymnasiumRobot


class PointEnv:
    """A Gymnasium-style 2-D point reacher: state observations, float RGB render, Box(-0.5, 0.5) actions."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 5}

    def __init__(self, render_mode: str | None = None, size: int = 40, success_key: str = "is_success"):
        self.render_mode, self.size, self.success_key = render_mode, size, success_key
        self.action_space = SimpleNamespace(shape=(2,), low=np.full(2, -0.5), high=np.full(2, 0.5), dtype=np.float32)
        self.received: list[np.ndarray] = []
        self.pos = np.zeros(2)
        self.goal = np.zeros(2)
        self.options = None

    def reset(self, seed=None, options=None):
        rng = np.random.default_rng(seed)
        self.pos, self.goal, self.options = rng.uniform(-2, 2, 2), np.zeros(2), options
        return self.pos.copy(), {}

    def step(self, action):
        self.received.append(np.array(action))
        self.pos = self.pos + np.asarray(action, dtype=np.float64)
        done = bool(np.linalg.norm(self.pos - self.goal) < 0.3)
        return self.pos.copy(), -float(np.linalg.norm(self.pos)), done, False, {self.success_key: done}

    def render(self):
        img = np.zeros((self.size, self.size, 3), np.float32)
        x, y = ((self.pos + 2.5) / 5.0 * (self.size - 1)).clip(0, self.size - 1).astype(int)
        img[y, x] = (1.0, 0.5, 0.0)
        return img


ENV = f"{__name__}:PointEnv"


def test_adapter_maps_reset_step_observe_success():
    robot = make_robot("efm_ros.robots.gymnasium:GymnasiumRobot", env=ENV, render_mode="rgb_array",
                       instruction="go home", image_size=16)
    assert isinstance(robot, Robot) and robot.action_dim == 2 and robot.control_rate_hz == 5.0
    assert robot.reset(seed=1) == "go home"
    assert robot.env.options is None
    assert robot.reset(seed=1, instruction="go to the middle") == "go to the middle"
    assert robot.env.options == {"instruction": "go to the middle"}
    img = robot.observe()
    assert img.shape == (16, 16, 3) and img.dtype == np.uint8 and img.max() > 0
    assert not robot.success()
    robot.step([1.0, -1.0])                      # [-1, 1] maps onto the Box bounds
    robot.step([3.0, 0.0])                       # out of range: clipped
    robot.step(np.array([0.0, 0.5], np.float32))
    np.testing.assert_allclose(robot.env.received, [[0.5, -0.5], [0.5, 0.0], [0.0, 0.25]])
    assert all(a.dtype == np.float32 for a in robot.env.received)
    # drive to the goal: success from info["is_success"], then steps are ignored until reset
    for _ in range(40):
        if robot.success():
            break
        robot.step(np.clip(-robot.env.pos / 0.5, -1, 1))
    assert robot.success() and robot.terminated
    n = len(robot.env.received)
    robot.step([1.0, 1.0])
    assert len(robot.env.received) == n
    robot.reset(seed=2)
    assert not robot.success() and not robot.terminated


def test_adapter_reads_success_key_instruction_from_info_and_full_size_images():
    robot = GymnasiumRobot(PointEnv(render_mode="rgb_array", success_key="success"), control_rate_hz=2.0)
    assert robot.control_rate_hz == 2.0
    robot.reset(seed=0)
    assert robot.observe().shape == (40, 40, 3)
    robot.env.pos = np.array([0.1, 0.0])
    robot.step([0.0, 0.0])
    assert robot.success()
    assert robot.reset(seed=0, instruction="anything") == "anything"
    robot.env.reset = lambda seed=None, options=None: (np.zeros(2), {"instruction": "reach the centre"})
    assert robot.reset(seed=0, instruction="ignored") == "reach the centre"


def test_image_observations_are_used_directly():
    class ImageEnv(PointEnv):
        def reset(self, seed=None, options=None):
            super().reset(seed, options)
            return np.full((8, 8, 4), 200, np.uint8), {}

        def render(self):
            raise AssertionError("render() must not be needed when the observation is an image")

    robot = GymnasiumRobot(ImageEnv())
    robot.reset(seed=0)
    img = robot.observe()
    assert img.shape == (8, 8, 3) and img.dtype == np.uint8 and (img == 200).all()


@pytest.mark.parametrize("bad", [[math.nan, 0.0], [0.0, -math.inf], [1.0, 2.0, 3.0], [0.5]])
def test_adapter_rejects_bad_actions(bad):
    robot = GymnasiumRobot(ENV)
    robot.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        robot.step(bad)
    assert robot.env.received == []


def test_adapter_construction_errors():
    with pytest.raises(ValueError, match="exactly one"):
        GymnasiumRobot()
    with pytest.raises(ValueError, match="environment arguments"):
        GymnasiumRobot(PointEnv(), size=10)
    with pytest.raises(ValueError, match="cannot load"):
        GymnasiumRobot("efm_ros.no_such_module:Env")
    with pytest.raises(TypeError, match="not a Gymnasium-style"):
        GymnasiumRobot(object())
    with pytest.raises(TypeError, match="action_space"):
        GymnasiumRobot(SimpleNamespace(reset=lambda **kw: None, step=lambda a: None))


@pytest.mark.skipif(importlib.util.find_spec("gymnasium") is not None, reason="gymnasium is installed")
def test_env_id_without_gymnasium_is_a_clear_error():
    with pytest.raises(ValueError, match="gymnasium package"):
        GymnasiumRobot(env_id="CartPole-v1")


def test_make_robot_builds_the_embedded_table_by_dotted_path():
    robot = make_robot("efm_ros.sim.tabletop:TabletopRobot", image_size=64)
    assert isinstance(robot, Robot)
    assert robot.observe().shape == (64, 64, 3)
    instruction = robot.reset(seed=0)
    robot.step([0.1, 0.2])
    assert isinstance(instruction, str) and isinstance(robot.success(), bool)
    with pytest.raises(ValueError, match="unknown TabletopConfig keys"):
        make_robot("efm_ros.sim.tabletop:TabletopRobot", image_sise=64)


@pytest.mark.parametrize("path", ["efm_ros.sim.tabletop:NoSuchRobot", "efm_ros.no_such_module:Robot", "TabletopRobot", ""])
def test_bad_dotted_paths_are_clear_value_errors(path):
    with pytest.raises(ValueError, match="cannot load|not a dotted path"):
        make_robot(path)
