"""The robot interface the graph and the tools drive, and the factory that loads a backend.

A backend is any class with the :class:`Robot` methods. Select one by dotted path
(``"efm_ros.sim.tabletop:TabletopRobot"``) with ``--robot`` on every command (``collect-demos``,
``train-sft``, ``eval``, ``experiment``, ``up``) or ``backend`` in the sim node's parameters;
constructor keyword arguments come from ``--robot-args`` (a JSON object) or ``backend_args``.
Gymnasium environments plug in through :class:`efm_ros.robots.gymnasium.GymnasiumRobot`.

Required: :class:`Robot` (``action_dim``, ``control_rate_hz``, ``reset``, ``step``, ``observe``,
``success``). Optional, each used by the commands that need it:

- ``image_size`` constructor keyword: the commands pass the model's frame side (``--image-size``);
  a backend without it must render the size the model takes.
- ``instructions() -> list[str]``: every instruction ``reset()`` can draw. ``train-sft`` embeds them
  all into the exported model (so Stage 2 can be asked any of them); ``eval`` checks the model knows
  them. Without it, only the demonstrations' own instructions are embedded.
- ``transformed_instruction(instruction, matrix) -> str``: the same task's instruction with the view
  mirrored or turned by ``matrix`` (``train-sft --symmetries``; ``efm_ros.learn.symmetry``). Without it,
  ``--symmetry-phrases`` says how the instructions' words change.
- ``expert() -> Expert``: a scripted demonstrator for ``collect-demos`` (or ``--expert
  pkg.mod:factory``, called with the robot).
- ``family`` (str property): the current instruction's task family, written into bags and reports.
- ``practice_kwargs(kwargs) -> kwargs`` (classmethod): fills in the constructor arguments that
  select the practice task when the user gave none (the embedded table: Block2Block, the paper's);
  ``eval``, ``experiment`` and in-process practice apply it.
"""
from __future__ import annotations

import importlib
from typing import Any, Protocol, runtime_checkable

import numpy as np

#: the robot backend every command and the sim node use unless given another (dotted path)
DEFAULT_ROBOT = "efm_ros.sim.tabletop:TabletopRobot"


@runtime_checkable
class Robot(Protocol):
    """What efm_ros needs from a robot (real arm, embedded simulator, Gymnasium env)."""

    action_dim: int
    """length of the action vector; each component is in [-1, 1] (normalised units)"""
    control_rate_hz: float

    def reset(self, seed: int | None = None, instruction: str | None = None) -> str:
        """Start an episode; returns its instruction (drawn by the robot if None)."""

    def step(self, action: np.ndarray) -> None:
        """Apply one control step's action (clipped to [-1, 1] by the backend)."""

    def observe(self) -> np.ndarray:
        """Current camera frame: RGB uint8, shape (H, W, 3)."""

    def success(self) -> bool:
        """Ground-truth success of the current instruction. EVALUATION ONLY: never a reward."""


@runtime_checkable
class Expert(Protocol):
    """A demonstrator bound to one robot: it may read the robot's privileged state (scripted)."""

    def reset(self, seed: int) -> None:
        """Start an episode: called right after ``robot.reset``; seeds the expert's own noise."""

    def act(self) -> np.ndarray:
        """Next action (``robot.action_dim`` components in [-1, 1])."""


def load_object(path: str) -> Any:
    """Import ``"package.module:Name"`` (or ``"package.module.Name"``)."""
    module, sep, name = path.partition(":")
    if not sep:
        module, _, name = path.rpartition(".")
    if not module or not name:
        raise ValueError(f"not a dotted path 'package.module:Name': {path!r}")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load {path!r}: {exc}") from exc


def make_robot(path: str = DEFAULT_ROBOT, **kwargs: Any) -> Robot:
    """Instantiate a robot backend by dotted path and check it implements :class:`Robot`."""
    robot = load_object(path)(**kwargs)
    missing = [m for m in ("reset", "step", "observe", "success", "action_dim") if not hasattr(robot, m)]
    if missing:
        raise TypeError(f"{path} is not a Robot: missing {missing}")
    return robot


def robot_instructions(robot: Any) -> list[str] | None:
    """Every instruction the robot can draw (``robot.instructions()``), or None if it cannot say."""
    method = getattr(robot, "instructions", None)
    return [str(t) for t in method()] if callable(method) else None


def robot_transformed_instruction(robot: Any, instruction: str, matrix: Any) -> str | None:
    """The instruction of the same task with the view mirrored or turned by ``matrix``
    (``robot.transformed_instruction(instruction, matrix)``; ``efm_ros.learn.symmetry``), or None if the
    robot cannot say."""
    method = getattr(robot, "transformed_instruction", None)
    return str(method(instruction, matrix)) if callable(method) else None


def make_expert(robot: Any, path: str | None = None) -> Expert:
    """The expert that demonstrates on ``robot``: ``load_object(path)(robot)`` if a path is given,
    else ``robot.expert()``. Raises ValueError if there is neither."""
    if path:
        expert = load_object(path)(robot)
    else:
        method = getattr(robot, "expert", None)
        if not callable(method):
            raise ValueError(f"{type(robot).__name__} has no expert(): give one with --expert pkg.mod:factory "
                             "(called with the robot; returns an object with reset(seed) and act())")
        expert = method()
    if not (callable(getattr(expert, "reset", None)) and callable(getattr(expert, "act", None))):
        raise TypeError(f"{path or type(robot).__name__ + '.expert()'} did not give an Expert "
                        "(an object with reset(seed) and act())")
    return expert


def robot_family(robot: Any) -> str:
    """The current episode's task family ("" if the backend does not name one)."""
    family = getattr(robot, "family", None)
    if family is None:
        family = getattr(getattr(robot, "task", None), "family", "")
    return str(family or "")


def validate_action(action: Any, dim: int, names: str = "") -> np.ndarray:
    """An action as a float64 vector of ``dim`` finite numbers; ValueError otherwise (nothing may
    reach a robot then). ``names`` describes the components in the messages, e.g. "(dx, dy)". The
    one check every backend and :func:`check_robot_action` run before bounding in their own way."""
    what = f" {names}" if names else ""
    try:
        a = np.asarray(action, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"action must be {dim} numbers{what}, got {action!r}") from exc
    if a.shape != (dim,):
        raise ValueError(f"action must have {dim} elements{what}, got {a.size}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"action contains NaN or inf: {a.tolist()} (rejected, nothing applied)")
    return a


def check_robot_action(action: Any, dim: int) -> np.ndarray:
    """An action from an expert or a policy, validated (:func:`validate_action`): float32, clipped
    to [-1, 1]."""
    return np.clip(validate_action(action, dim), -1.0, 1.0).astype(np.float32)


def add_robot_arguments(parser: Any, *, expert: bool = False) -> None:
    """``--robot`` and ``--robot-args`` (and ``--expert``) on a command's argparse parser: one
    definition for every command."""
    parser.add_argument("--robot", default=DEFAULT_ROBOT, metavar="PKG.MOD:CLASS",
                        help=f"robot backend, a class implementing efm_ros.robots.Robot (default: {DEFAULT_ROBOT})")
    parser.add_argument("--robot-args", default="{}", metavar="JSON",
                        help='constructor keyword arguments of the robot backend, a JSON object, e.g. '
                             '\'{"families": ["block2block"]}\' (default: {})')
    if expert:
        parser.add_argument("--expert", default=None, metavar="PKG.MOD:FACTORY",
                            help="demonstrator: a callable taking the robot and returning an object with "
                                 "reset(seed) and act() (default: the robot's expert() method)")


def parse_robot_args(text: str | dict | None) -> dict:
    """``--robot-args`` -> dict; ValueError naming the problem for anything but a JSON object."""
    if text is None or isinstance(text, dict):
        return dict(text or {})
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--robot-args is not JSON ({exc}): {text!r}") from exc
    if not isinstance(value, dict):
        raise ValueError(f"--robot-args must be a JSON object, got {type(value).__name__}: {text!r}")
    return value


def practice_robot_kwargs(path: str, kwargs: dict) -> dict:
    """The backend's constructor arguments for practice and evaluation: ``kwargs`` completed by its
    optional ``practice_kwargs`` classmethod (which picks the practice task when none was given)."""
    hook = getattr(load_object(path), "practice_kwargs", None)
    return dict(hook(dict(kwargs))) if callable(hook) else dict(kwargs)
