"""Any Gymnasium-style environment as an efm_ros robot.

``GymnasiumRobot(env="my_pkg.envs:PushEnv", render_mode="rgb_array")`` builds the environment
from a dotted path with the remaining keyword arguments (or wraps an already built instance) and
maps the :class:`efm_ros.robots.Robot` calls onto the Gymnasium API:

- ``reset(seed, instruction)`` -> ``env.reset(seed=seed, options={"instruction": ...})``; the
  instruction comes from ``info["instruction"]`` if the environment sets it, else from the
  ``instruction`` the caller passed, else from the adapter's fixed ``instruction``.
- ``step(a)``: ``a`` is in [-1, 1] per component (efm_ros's normalised units); NaN/inf or a wrong
  length raise ValueError, out-of-range components are clipped, and a Box action space with finite
  bounds gets ``a`` mapped linearly onto [low, high]. After the environment reports
  ``terminated``/``truncated`` further steps are ignored until the next reset.
- ``observe()``: the observation if it is an image (or ``obs[image_key]`` for a dict
  observation), else ``env.render()``; converted to RGB uint8 and resized (INTER_AREA) to
  ``image_size`` if given.
- ``success()``: ``info["is_success"]`` or ``info["success"]`` of the last reset/step (False if
  the environment reports neither). Evaluation only, never a reward.

The ``gymnasium`` package itself is not needed, except for ``env_id`` (``gymnasium.make``).
"""
from __future__ import annotations

import importlib
from typing import Any

import cv2
import numpy as np

from efm_ros.robots import load_object, validate_action

SUCCESS_KEYS = ("is_success", "success")
"""info keys read, in this order, for ground-truth success"""


def _to_rgb_uint8(image: Any) -> np.ndarray:
    """An image array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), uint8 or float in [0, 1] -> RGB uint8."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"not an image: array of shape {img.shape}")
    img = img[:, :, :3]
    if img.dtype != np.uint8:
        if not np.issubdtype(img.dtype, np.number):
            raise ValueError(f"not an image: dtype {img.dtype}")
        scale = 255.0 if np.issubdtype(img.dtype, np.floating) and float(np.nanmax(img, initial=0.0)) <= 1.0 else 1.0
        img = np.clip(np.nan_to_num(img.astype(np.float64) * scale), 0, 255).round().astype(np.uint8)
    return np.ascontiguousarray(img)


class GymnasiumRobot:
    """A Gymnasium-style environment behind the :class:`efm_ros.robots.Robot` interface."""

    def __init__(self, env: str | Any | None = None, *, env_id: str | None = None,
                 instruction: str = "", image_size: int | None = None, image_key: str | None = None,
                 control_rate_hz: float | None = None, **env_kwargs: Any) -> None:
        """
        Args:
            env: dotted path ``"package.module:EnvClass"`` (called with ``env_kwargs``) or an
                environment instance.
            env_id: instead of ``env``, a registered id built with ``gymnasium.make`` (needs the
                ``gymnasium`` package; ``render_mode="rgb_array"`` is passed unless given).
            instruction: the instruction of every episode when the environment has none.
            image_size: resize observations to image_size x image_size (None: keep the env's size).
            image_key: for dict observations, the key holding the camera image.
            control_rate_hz: control rate; default ``env.metadata["render_fps"]``, else 10.
            env_kwargs: constructor arguments of the environment (dotted path or env_id only).
        """
        if (env is None) == (env_id is None):
            raise ValueError("give exactly one of env (dotted path or instance) and env_id")
        if env_id is not None:
            try:
                gymnasium = importlib.import_module("gymnasium")
            except ImportError as exc:
                raise ValueError(f"env_id={env_id!r} needs the gymnasium package, which is not installed") from exc
            env_kwargs.setdefault("render_mode", "rgb_array")
            env = gymnasium.make(env_id, **env_kwargs)
        elif isinstance(env, str):
            env = load_object(env)(**env_kwargs)
        elif env_kwargs:
            raise ValueError(f"environment arguments {sorted(env_kwargs)} given with an environment instance")
        for method in ("reset", "step"):
            if not callable(getattr(env, method, None)):
                raise TypeError(f"{type(env).__name__} is not a Gymnasium-style environment: no {method}()")
        self.env = env
        self.default_instruction = str(instruction)
        self.image_size = None if image_size is None else int(image_size)
        self.image_key = image_key
        self._low, self._high, self.action_dim = self._action_bounds(env)
        fps = (getattr(env, "metadata", None) or {}).get("render_fps")
        self.control_rate_hz = float(control_rate_hz or fps or 10.0)
        self._obs: Any = None
        self._info: dict = {}
        self._instruction = self.default_instruction
        self.terminated = self.truncated = False
        self.last_reward = 0.0

    @staticmethod
    def _action_bounds(env: Any) -> tuple[np.ndarray | None, np.ndarray | None, int]:
        space = getattr(env, "action_space", None)
        shape = getattr(space, "shape", None)
        if not shape:
            raise TypeError(f"{type(env).__name__} has no action_space with a shape (a continuous Box is needed)")
        dim = int(np.prod(shape))
        low = np.broadcast_to(np.asarray(getattr(space, "low", -np.inf), np.float64), shape).reshape(-1)
        high = np.broadcast_to(np.asarray(getattr(space, "high", np.inf), np.float64), shape).reshape(-1)
        if np.all(np.isfinite(low)) and np.all(np.isfinite(high)):
            return low, high, dim
        return None, None, dim

    # ----------------------------------------------------------------------------------- Robot API
    def reset(self, seed: int | None = None, instruction: str | None = None) -> str:
        options = None if instruction is None else {"instruction": instruction}
        self._obs, info = self.env.reset(seed=seed, options=options)
        self._info = dict(info or {})
        self._instruction = str(self._info.get("instruction") or instruction or self.default_instruction)
        self.terminated = self.truncated = False
        self.last_reward = 0.0
        return self._instruction

    def step(self, action: Any) -> None:
        a = validate_action(action, self.action_dim)
        if self.terminated or self.truncated:
            return
        a = np.clip(a, -1.0, 1.0)
        if self._low is not None:
            a = self._low + (a + 1.0) * 0.5 * (self._high - self._low)
        space = getattr(self.env, "action_space", None)
        shape = getattr(space, "shape", a.shape)
        dtype = getattr(space, "dtype", np.float32)
        obs, reward, terminated, truncated, info = self.env.step(a.reshape(shape).astype(dtype))
        self._obs, self._info = obs, dict(info or {})
        self.last_reward = float(reward)
        self.terminated, self.truncated = bool(terminated), bool(truncated)

    def observe(self) -> np.ndarray:
        obs = self._obs
        if isinstance(obs, dict) and self.image_key is not None:
            obs = obs[self.image_key]
        if isinstance(obs, np.ndarray) and obs.ndim == 3 and obs.shape[2] in (1, 3, 4):
            image = obs
        else:
            image = self.env.render()
            if image is None:
                raise RuntimeError("the environment's observation is not an image and render() returned "
                                   "None (construct it with render_mode='rgb_array')")
        image = _to_rgb_uint8(image)
        if self.image_size is not None and image.shape[:2] != (self.image_size, self.image_size):
            image = cv2.resize(image, (self.image_size, self.image_size), interpolation=cv2.INTER_AREA)
        return image

    def success(self) -> bool:
        for key in SUCCESS_KEYS:
            if key in self._info:
                return bool(self._info[key])
        return False

    def close(self) -> None:
        close = getattr(self.env, "close", None)
        if callable(close):
            close()
