"""The "state" rung of the Stage-2 ladder: the embedded table with PRIVILEGED state observations.

    efm-ros experiment ladder --rung state --out runs/ladder/state        # oracle B reward (rung a)
    efm-ros experiment ladder --rung state --state-reward model ...       # the learned d (rung b)

Between the pointmass (rung 0: our learner works) and rung (a) on camera frames (it does not
lift): the same table, task, demonstrator, oracle reward and termination as rung (a), but the
policy sees the true simulator state instead of a 96 px frame. Stage 1, Stage 2 and the
evaluation are rung 0's (:mod:`efm_ros.learn.pointmass`: ``fit_heads``, ``ReinforceLearner``,
``episode_returns``), so this rung separates "REINFORCE cannot improve pushing on this table at
this budget" from "the camera policy cannot perceive well enough for its gradient to say much".

Observation (``state_vector``; every coordinate in table units, 0..1): the pusher's (x, y), the
target's (x, y), the goal point's (x, y), then every object's (x, y, cos θ, sin θ) in the table's
fixed object order. Task identity is in the target and goal entries, so the instruction input is
a constant (``text_dim`` 1, as on the pointmass).

Everything here reads simulator ground truth: experiment code only, never a product input.
"""
from __future__ import annotations

import numpy as np

from efm_ros.learn.oracle import OracleStepsToGo
from efm_ros.learn.pointmass import StateTask
from efm_ros.model.bins import T_MAX
from efm_ros.sim.pointmass import StateEpisode

DEMO_FAMILIES = ("block2block", "block2location")
"""Stage-1 demonstrations: both block families, as the camera protocol's ``collect-demos``"""
PRACTICE_FAMILIES = ("block2block",)
"""practice and evaluation: Block2Block, as rung (a)"""


def state_vector(state: dict) -> np.ndarray:
    """``TabletopRobot.state()`` -> the privileged observation (float32, table units)."""
    size = state["table_size"]
    objects = state["objects"]
    parts = [state["ee"] / size, objects[state["task"].target]["position"] / size, state["goal"] / size]
    for o in objects.values():
        parts.append(np.array([*(o["position"] / size), np.cos(o["angle"]), np.sin(o["angle"])]))
    return np.concatenate(parts).astype(np.float32)


def state_dim(**robot_kwargs) -> int:
    from efm_ros.sim.tabletop import TabletopRobot

    return len(state_vector(TabletopRobot(seed=0, **robot_kwargs).state()))


class TableStates:
    """``n`` embedded tables stepped together, observed as :func:`state_vector` (the
    :class:`StateTask` environment protocol); ``oracle_d`` is rung (a)'s privileged d."""

    def __init__(self, n: int, seed: int, families=PRACTICE_FAMILIES, oracle: str = "approach", **robot_kwargs):
        from efm_ros.sim.tabletop import TabletopRobot

        self.rng = np.random.default_rng(seed)
        self.robots = [TabletopRobot(seed=0, families=tuple(families), **robot_kwargs) for _ in range(n)]
        self.oracles = [OracleStepsToGo(r, oracle) for r in self.robots]
        self.reset()

    def reset(self, rows=None) -> np.ndarray:
        for i in range(len(self.robots)) if rows is None else rows:
            self.robots[int(i)].reset(seed=int(self.rng.integers(2**63 - 1)))
        return self.observe()

    def observe(self) -> np.ndarray:
        return np.stack([state_vector(r.state()) for r in self.robots])

    def step(self, actions: np.ndarray) -> None:
        for r, a in zip(self.robots, np.asarray(actions, np.float64)):
            r.step(a)

    def success(self) -> np.ndarray:
        return np.array([r.success() for r in self.robots])

    def oracle_d(self) -> np.ndarray:
        return np.array([o.d() for o in self.oracles])


def demonstrations(num: int, seed: int, families=DEMO_FAMILIES, max_steps: int = T_MAX,
                   **robot_kwargs) -> list[StateEpisode]:
    """``num`` successful scripted demonstrations as state episodes, seeded per index and attempt
    exactly as ``efm-ros collect-demos`` seeds its bags (so index i is the same layout and noise)."""
    from efm_ros.data.collect import episode_seed
    from efm_ros.sim.demonstrator import ScriptedDemonstrator
    from efm_ros.sim.tabletop import TabletopRobot, check_action

    robot = TabletopRobot(seed=0, families=tuple(families), **robot_kwargs)
    demo = ScriptedDemonstrator()
    out: list[StateEpisode] = []
    index = 0
    while len(out) < num:
        for attempt in range(100):
            s = episode_seed(seed, index, attempt)
            robot.reset(seed=s)
            demo.reset(s, robot.task)
            states, actions = [state_vector(robot.state())], []
            for _ in range(max_steps):
                a = check_action(demo.act(robot.state()), robot.action_dim)
                robot.step(a)
                actions.append(a)
                states.append(state_vector(robot.state()))
                if robot.success():
                    break
            if robot.success():
                out.append(StateEpisode(np.stack(states), np.stack(actions).astype(np.float32), True))
                break
        index += 1
    return out


def table_task(oracle: str = "approach", **robot_kwargs) -> StateTask:
    """The embedded table as a state task: demonstrations of both block families, practice and
    evaluation on Block2Block, episodes of at most T_MAX steps, actions in [-1, 1]² (the robot's)."""
    return StateTask("table-state", state_dim(**robot_kwargs), 1.0, T_MAX,
                     lambda n, seed: TableStates(n, seed, oracle=oracle, **robot_kwargs),
                     lambda num, seed: demonstrations(num, seed, **robot_kwargs))
