"""The embedded robot: a LanguageTable-like top-down pushing table (pymunk physics, OpenCV camera).

A round end effector (EE), moved kinematically, pushes objects on a walled square table seen by a
camera straight above it. Two variants:

- ``"blocks"`` (default): four blocks, each named by its colour and with its own shape
  (red square, green pentagon, blue hexagon, yellow triangle); Block2Block and Block2Location
  instructions (:mod:`efm_ros.sim.instructions`).
- ``"novel_bar"``: the paper's BananaTable analogue. All blocks are replaced by ONE 16 x 3 cm bar
  with little rotational friction: pushed near its middle it translates, pushed near a tip it spins
  away. Only "push the bar to the <location>" instructions. The scripted demonstrator refuses it,
  so it never appears in demonstrations (:mod:`efm_ros.sim.demonstrator`).

Units and axes. Lengths are centimetres, time seconds, angles radians. Table coordinates have their
origin at the top-left corner of the camera image, x to the right, y downwards, so a table point
(x, y) is drawn at column x * px_per_cm, row y * px_per_cm. An action is a 2-vector of normalised
EE displacement: ``a[0]`` moves the EE right, ``a[1]`` moves it down in the image; ``|a| = 1``
moves it ``max_step_cm`` (2 cm) in one control step (20 cm/s at 10 Hz). Actions longer than 1 are
scaled to unit length (direction kept), so every component ends in [-1, 1]; NaN/inf or a wrong
length raises ValueError before anything reaches the physics.

Physics: zero gravity in the table plane; table friction is a pivot joint (sliding) and a gear joint
(spinning) from the static body to each object with ``max_bias = 0`` and ``max_force`` = the
Coulomb friction force / torque; walls are thick static boxes. The EE is a disc dragged along the
commanded path by a kinematic drive body through a strong but finite joint (a position-controlled
arm): in free space and while pushing it moves exactly ``a * max_step_cm`` per step, but it cannot
crush a block jammed against a wall (a purely kinematic EE would squeeze the block through it).
Its centre stays ``ee_radius_cm`` inside the walls. Each control step runs
``round(physics_hz / control_rate_hz)`` fixed substeps.

Rendering: objects drawn anti-aliased (sub-pixel vertices) on a canvas ``supersample`` times the
output size, then shrunk with INTER_AREA; RGB uint8. No goal marker is ever drawn into
observations (the goal is only in the instruction); ``render(show_goal=True)`` adds one for debug
frames.

Determinism: a fresh pymunk space per episode, objects added in a fixed order, all randomness from
``np.random.default_rng(seed)``: the same seed and the same actions give bit-identical frames.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import cv2
import numpy as np
import pymunk

from efm_ros.robots import validate_action
from efm_ros.sim import instructions as ins
from efm_ros.vision.preprocess import IMAGE_SIZE

VARIANTS: tuple[str, ...] = ("blocks", "novel_bar")
PRACTICE_FAMILIES: dict[str, tuple[str, ...]] = {"blocks": ("block2block",), "novel_bar": ("bar2location",)}
"""each variant's practice (and evaluation) task: Block2Block, the paper's, and the novel bar's only task"""

GRAVITY_CM_S2 = 981.0
"""only sets the table friction forces (the table plane itself has no gravity)"""
OBJECT_MASS = 1.0
"""mass of every pushable object (arbitrary unit; only ratios of forces matter)"""
TABLE_MU = 0.3
"""object-table Coulomb friction: blocks stop within ~0.7 cm once the EE stops pushing"""
CONTACT_FRICTION = 0.5
"""friction between EE, objects and walls"""
EE_MASS = 1.0
"""mass of the end effector disc"""
EE_MAX_FORCE = 20.0 * TABLE_MU * OBJECT_MASS * GRAVITY_CM_S2
"""strength of the EE drive: moves all objects at once, but a jam against a wall stops it"""
WALL_THICKNESS_CM = 10.0
"""thick walls so that nothing squeezed by the EE can tunnel out of the table"""
SPAWN_GAP_CM = 2.0
"""minimum free gap between objects (circumcircles) and between objects and the EE at reset"""

TABLE_RGB = (214, 206, 188)
RIM_RGB = (120, 112, 98)
EE_RGB = (55, 55, 60)
EE_TOP_RGB = (140, 140, 150)
GOAL_RGB = (255, 255, 255)


@dataclass(frozen=True)
class ObjectSpec:
    """Shape, appearance and table friction of one pushable object."""

    name: str
    """instruction name: a colour, or "bar" """
    vertices: tuple[tuple[float, float], ...]
    """convex polygon in body coordinates (cm), centroid at the origin"""
    rgb: tuple[int, int, int]
    """fill colour"""
    spin_lever_cm: float
    """table friction torque = TABLE_MU * mass * g * spin_lever_cm (about 0.55 x circumradius for
    a uniform block; far less for the bar, which therefore spins easily)"""

    @property
    def radius(self) -> float:
        """circumradius, cm"""
        return float(max(math.hypot(x, y) for x, y in self.vertices))

    @property
    def inradius(self) -> float:
        """distance from the centroid to the nearest edge, cm"""
        v = np.asarray(self.vertices, dtype=np.float64)
        edges = np.roll(v, -1, axis=0) - v
        return float(min(abs(e[0] * p[1] - e[1] * p[0]) / math.hypot(*e) for p, e in zip(v, edges)))


def _regular_polygon(n: int, radius: float) -> tuple[tuple[float, float], ...]:
    return tuple((radius * math.cos(2 * math.pi * k / n + math.pi / n),
                  radius * math.sin(2 * math.pi * k / n + math.pi / n)) for k in range(n))


BLOCKS: tuple[ObjectSpec, ...] = (
    ObjectSpec("red", _regular_polygon(4, 4.0), (215, 50, 45), 0.55 * 4.0),
    ObjectSpec("green", _regular_polygon(5, 4.0), (55, 170, 75), 0.55 * 4.0),
    ObjectSpec("blue", _regular_polygon(6, 3.8), (45, 90, 215), 0.55 * 3.8),
    ObjectSpec("yellow", _regular_polygon(3, 4.6), (235, 195, 35), 0.5 * 4.6),
)
"""the blocks variant, in physics/drawing order; names match instructions.COLORS"""
BAR_SPEC = ObjectSpec("bar", ((-8.0, -1.5), (8.0, -1.5), (8.0, 1.5), (-8.0, 1.5)), (150, 80, 195), 1.2)
"""the novel object: 16 x 3 cm with 30 % of a uniform bar's friction torque (lever 1.2 of ~4.1 cm):
pushed within ~1 cm of its middle it translates, pushed 2 cm or more off-centre it spins away"""


@dataclass(frozen=True)
class TabletopConfig:
    """Everything that shapes the table; unknown keys are an error."""

    variant: str = "blocks"
    """"blocks" (4 coloured blocks) or "novel_bar" (one bar, never demonstrated)"""
    image_size: int = IMAGE_SIZE
    """side of the square RGB observation, pixels"""
    control_rate_hz: float = 10.0
    """control steps per second of simulated time"""
    physics_hz: float = 100.0
    """physics substeps per second; a control step runs round(physics_hz / control_rate_hz) of them"""
    max_step_cm: float = 2.0
    """EE displacement per control step for an action of norm 1, cm"""
    table_size_cm: float = 50.0
    """side of the square table (inside the walls), cm"""
    ee_radius_cm: float = 2.0
    """radius of the round end effector, cm"""
    families: tuple[str, ...] | None = None
    """instruction families drawn at reset; None: both block families, or bar2location for novel_bar"""
    family_weights: tuple[float, ...] | None = None
    """relative draw probability of each family; None: uniform (50/50 for the two block families)"""
    supersample: int = 2
    """render at this multiple of image_size, then shrink with INTER_AREA (anti-aliasing)"""
    block2block_success_cm: float = ins.BLOCK2BLOCK_SUCCESS_CM
    """ground-truth success: target-reference centre distance, cm (evaluation only)"""
    location_success_cm: float = ins.LOCATION_SUCCESS_CM
    """ground-truth success: object centre to location point distance, cm (evaluation only)"""

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; expected one of {VARIANTS}")
        if self.families is not None:
            object.__setattr__(self, "families", tuple(self.families))
        allowed = self.variant_families
        families = self.task_families
        if not families or any(f not in allowed for f in families):
            raise ValueError(f"families {families} not available in variant {self.variant!r}; "
                             f"choose from {allowed}")
        if self.family_weights is not None:
            weights = tuple(float(w) for w in self.family_weights)
            if len(weights) != len(families) or min(weights) < 0 or sum(weights) <= 0:
                raise ValueError(f"family_weights {weights} must be {len(families)} non-negative "
                                 f"numbers, not all zero (families {families})")
            object.__setattr__(self, "family_weights", weights)
        if int(self.image_size) != self.image_size or self.image_size < 8:
            raise ValueError(f"image_size must be an integer >= 8, got {self.image_size}")
        if int(self.supersample) != self.supersample or self.supersample < 1:
            raise ValueError(f"supersample must be an integer >= 1, got {self.supersample}")
        for name in ("control_rate_hz", "physics_hz", "max_step_cm", "table_size_cm", "ee_radius_cm",
                     "block2block_success_cm", "location_success_cm"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value}")
        if self.table_size_cm < 30.0:
            raise ValueError(f"table_size_cm must be >= 30 (room for the objects), got {self.table_size_cm}")

    @property
    def variant_families(self) -> tuple[str, ...]:
        """the instruction families this variant's objects allow"""
        return ("bar2location",) if self.variant == "novel_bar" else ins.BLOCK_FAMILIES

    @property
    def task_families(self) -> tuple[str, ...]:
        """the families drawn at reset: ``families``, or all of the variant's if None"""
        return self.variant_families if self.families is None else self.families

    @property
    def substeps(self) -> int:
        """physics substeps per control step"""
        return max(1, round(self.physics_hz / self.control_rate_hz))

    @property
    def object_specs(self) -> tuple[ObjectSpec, ...]:
        """the objects on the table in this variant"""
        return (BAR_SPEC,) if self.variant == "novel_bar" else BLOCKS


def make_config(config: TabletopConfig | None = None, **overrides: Any) -> TabletopConfig:
    """``config`` (default: TabletopConfig()) with ``overrides`` applied; a mistyped key raises."""
    valid = {f.name for f in fields(TabletopConfig)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(f"unknown TabletopConfig keys {unknown}; valid keys: {sorted(valid)}")
    return replace(config or TabletopConfig(), **overrides)


def check_action(action: Any, dim: int = 2) -> np.ndarray:
    """Validate an action and bound it: float64 vector of norm <= 1.

    Raises ValueError for a wrong number of elements or any NaN/inf. A vector longer than 1 is
    scaled to unit length (direction kept), which also puts every component in [-1, 1].
    """
    a = validate_action(action, dim)
    norm = math.hypot(*a) if dim == 2 else float(np.linalg.norm(a))
    return a / norm if norm > 1.0 else a


class TabletopRobot:
    """The embedded robot (implements :class:`efm_ros.robots.Robot`).

    ``TabletopRobot(image_size=64)`` or ``TabletopRobot(TabletopConfig(...), seed=3)``; keyword
    overrides are :class:`TabletopConfig` fields. The robot is reset once on construction (with
    ``seed``), so it can be observed at once. ``reset(seed=None)`` draws the episode seed from a
    generator seeded by the constructor's ``seed``.
    """

    action_dim = 2

    def __init__(self, config: TabletopConfig | None = None, *, seed: int | None = None,
                 **overrides: Any) -> None:
        self.config = make_config(config, **overrides)
        self._seeds = np.random.default_rng(seed)
        self._specs = {s.name: s for s in self.config.object_specs}
        self._local = {s.name: np.asarray(s.vertices, dtype=np.float64) for s in self.config.object_specs}
        self._backgrounds: dict[int, np.ndarray] = {}
        self._frame: np.ndarray | None = None
        self.reset(seed=None if seed is None else int(seed))

    # ----------------------------------------------------------------------------------- Robot API
    @property
    def control_rate_hz(self) -> float:
        return float(self.config.control_rate_hz)

    @property
    def image_size(self) -> int:
        return int(self.config.image_size)

    @property
    def task(self) -> ins.Task:
        """the current episode's parsed instruction"""
        return self._task

    @property
    def instruction(self) -> str:
        return self._task.instruction

    @property
    def t(self) -> int:
        """control steps since the last reset"""
        return self._t

    @property
    def episode_seed(self) -> int:
        """the seed the current episode was reset with"""
        return self._episode_seed

    @property
    def object_names(self) -> tuple[str, ...]:
        return tuple(self._specs)

    def reset(self, seed: int | None = None, instruction: str | None = None) -> str:
        """Start an episode: new layout, EE placed, instruction drawn (or parsed if given).

        Objects never overlap and the instruction's goal does not hold at the start. Raises
        ValueError for an instruction unknown or not available in this variant.
        """
        cfg = self.config
        if seed is None:
            seed = int(self._seeds.integers(2**63 - 1))
        rng = np.random.default_rng(int(seed))
        if instruction is None:
            task = ins.sample_task(rng, cfg.task_families, cfg.family_weights)
        else:
            task = ins.parse_instruction(instruction)
            if task.family not in cfg.task_families:
                raise ValueError(f"instruction {instruction!r} ({task.family}) is not available on this "
                                 f"table (variant {cfg.variant!r}, families {cfg.task_families})")
        positions, angles, ee = self._sample_layout(rng, task)
        self._build_space(positions, angles, ee)
        self._task, self._episode_seed, self._t = task, int(seed), 0
        return task.instruction

    def step(self, action: Any) -> None:
        """Move the EE by ``action * max_step_cm`` (see :func:`check_action`) over one control step."""
        a = check_action(action, self.action_dim)
        cfg = self.config
        ee = self._ee.position
        lo, hi = cfg.ee_radius_cm, cfg.table_size_cm - cfg.ee_radius_cm
        tx = min(max(ee.x + a[0] * cfg.max_step_cm, lo), hi)
        ty = min(max(ee.y + a[1] * cfg.max_step_cm, lo), hi)
        rate, n = cfg.control_rate_hz, cfg.substeps
        velocity = ((tx - ee.x) * rate, (ty - ee.y) * rate)  # cm/s, to arrive at the end of the step
        self._ee_drive.position = ee  # the commanded motion starts where the EE really is
        self._ee_drive.velocity = self._ee.velocity = velocity  # feed-forward: no start-up lag
        for _ in range(n):
            self._space.step(1.0 / (rate * n))
        self._ee_drive.velocity = self._ee.velocity = (0.0, 0.0)  # the arm stops at the target
        self._keep_on_table()
        self._t += 1
        self._frame = None

    def observe(self) -> np.ndarray:
        """Camera frame, RGB uint8 (image_size, image_size, 3); cached until the next step/reset.

        The returned array is read-only; copy it to modify it.
        """
        if self._frame is None:
            self._frame = self.render()
            self._frame.flags.writeable = False
        return self._frame

    def success(self) -> bool:
        """Ground-truth success of the current instruction. EVALUATION ONLY: never a reward."""
        return ins.is_success(self._task, self.positions(), self.config.table_size_cm,
                              block2block_cm=self.config.block2block_success_cm,
                              location_cm=self.config.location_success_cm)

    # --------------------------------------------------------------- optional backend API
    @classmethod
    def practice_kwargs(cls, kwargs: dict) -> dict:
        """Practice and evaluation draw the variant's practice task unless families are given:
        Block2Block (the paper's practice task) on "blocks", the bar on "novel_bar"."""
        if kwargs.get("families") is None:
            kwargs = {**kwargs, "families": PRACTICE_FAMILIES[kwargs.get("variant") or "blocks"]}
        return kwargs

    def instructions(self) -> list[str]:
        """Every instruction this table can draw (its task families), in a fixed order."""
        return ins.all_instructions(self.config.task_families)

    def transformed_instruction(self, instruction: str, matrix) -> str:
        """The instruction of the same task on this table mirrored or turned by ``matrix`` (image-aligned,
        about the centre; the table is square and looks the same either way): ``train-sft --symmetries``."""
        return ins.transform_instruction(instruction, matrix)

    @property
    def family(self) -> str:
        """the current instruction's task family"""
        return self._task.family

    def expert(self):
        """The scripted demonstrator bound to this table (:class:`efm_ros.robots.Expert`)."""
        from efm_ros.sim.demonstrator import TabletopExpert

        return TabletopExpert(self)

    def noisy_expert(self):
        """A very noisy, detour-prone demonstrator (near misses: the hardest negatives for calibrating
        the success detector); None on the novel-bar table, which is never demonstrated."""
        from efm_ros.sim.demonstrator import ScriptedDemonstrator, TabletopExpert

        if self.config.variant == "novel_bar":
            return None
        return TabletopExpert(self, ScriptedDemonstrator(noise_std=0.7, detour_prob=0.15, start_detour_prob=0.5))

    # ------------------------------------------------------------------------------------- extras
    def positions(self) -> dict[str, np.ndarray]:
        """object name -> centre (x, y), cm"""
        return {name: np.array(tuple(body.position)) for name, body in self._bodies.items()}

    def state(self) -> dict[str, Any]:
        """Ground truth for the scripted demonstrator and for evaluation (never a policy input).

        Keys: ``t`` (steps since reset), ``ee`` (EE centre, cm), ``ee_radius``, ``table_size``,
        ``max_step`` (EE displacement of a unit action, cm),
        ``objects`` (name -> {"position", "angle", "radius"}), ``task``, ``goal`` (goal point, cm),
        ``goal_distance`` (target centre to goal point, cm), ``success_radius`` (cm), ``success``.
        """
        cfg = self.config
        objects = {name: {"position": np.array(tuple(body.position)), "angle": float(body.angle),
                          "radius": self._specs[name].radius} for name, body in self._bodies.items()}
        positions = {name: o["position"] for name, o in objects.items()}
        radius = ins.success_radius(self._task, cfg.block2block_success_cm, cfg.location_success_cm)
        distance = ins.goal_distance(self._task, positions, cfg.table_size_cm)
        return {
            "t": self._t,
            "ee": np.array(tuple(self._ee.position)),
            "ee_radius": float(cfg.ee_radius_cm),
            "table_size": float(cfg.table_size_cm),
            "max_step": float(cfg.max_step_cm),
            "objects": objects,
            "task": self._task,
            "goal": ins.goal_point(self._task, positions, cfg.table_size_cm),
            "goal_distance": distance,
            "success_radius": radius,
            "success": distance <= radius,
        }

    def set_state(self, ee: Sequence[float] | None = None,
                  positions: Mapping[str, Sequence[float]] | None = None,
                  angles: Mapping[str, float] | None = None) -> None:
        """Place the EE and/or objects directly (cm, radians), at rest. For tests and tools.

        Does not check for overlaps; the physics pushes overlapping shapes apart on the next step.
        """
        for label, mapping in (("positions", positions or {}), ("angles", angles or {})):
            unknown = sorted(set(mapping) - set(self._bodies))
            if unknown:
                raise ValueError(f"unknown objects in {label}: {unknown}; objects: {list(self._bodies)}")
        size = self.config.table_size_cm
        for name, xy in (positions or {}).items():
            x, y = (float(v) for v in xy)
            if not (0.0 < x < size and 0.0 < y < size):
                raise ValueError(f"position of {name} {(x, y)} is off the table (0..{size} cm)")
            self._bodies[name].position = (x, y)
        for name, angle in (angles or {}).items():
            if not math.isfinite(angle):
                raise ValueError(f"angle of {name} must be finite")
            self._bodies[name].angle = float(angle)
        if ee is not None:
            lo, hi = self.config.ee_radius_cm, size - self.config.ee_radius_cm
            x, y = (float(v) for v in ee)
            if not (lo <= x <= hi and lo <= y <= hi):
                raise ValueError(f"EE position {(x, y)} outside its workspace [{lo}, {hi}] cm")
            self._ee.position = self._ee_drive.position = (x, y)
        self._ee.velocity = self._ee_drive.velocity = (0.0, 0.0)
        for body in self._bodies.values():
            body.velocity, body.angular_velocity = (0.0, 0.0), 0.0
        self._frame = None

    def render(self, size: int | None = None, *, show_goal: bool = False) -> np.ndarray:
        """A fresh RGB uint8 frame of side ``size`` (default image_size); ``show_goal`` marks the
        goal point (debug only; observations never show it)."""
        size = self.image_size if size is None else int(size)
        ss = self.config.supersample
        canvas_px = size * ss
        k = canvas_px / self.config.table_size_cm * 16.0  # px per cm, in 1/16 px (cv2 shift=4)
        canvas = self._background(canvas_px)
        edge = max(1, ss)
        for name, body in self._bodies.items():
            spec = self._specs[name]
            c, s = math.cos(body.angle), math.sin(body.angle)
            local = self._local[name]
            world = local @ np.array([[c, s], [-s, c]]) + (body.position.x, body.position.y)
            pts = np.rint(world * k).astype(np.int32)
            cv2.fillConvexPoly(canvas, pts, spec.rgb, cv2.LINE_AA, 4)
            cv2.polylines(canvas, [pts], True, tuple(int(0.65 * v) for v in spec.rgb), edge, cv2.LINE_AA, 4)
        center = (int(round(self._ee.position.x * k)), int(round(self._ee.position.y * k)))
        r = self.config.ee_radius_cm * k
        cv2.circle(canvas, center, int(round(r)), EE_RGB, -1, cv2.LINE_AA, 4)
        cv2.circle(canvas, center, int(round(0.55 * r)), EE_TOP_RGB, -1, cv2.LINE_AA, 4)
        if show_goal:
            goal = ins.goal_point(self._task, self.positions(), self.config.table_size_cm)
            radius = ins.success_radius(self._task, self.config.block2block_success_cm,
                                        self.config.location_success_cm)
            cv2.circle(canvas, (int(round(goal[0] * k)), int(round(goal[1] * k))), int(round(radius * k)),
                       GOAL_RGB, edge, cv2.LINE_AA, 4)
        if ss > 1:
            canvas = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)
        return canvas

    # ---------------------------------------------------------------------------------- internals
    def _background(self, canvas_px: int) -> np.ndarray:
        """A copy of the empty table at this canvas size (drawn once, then cached)."""
        bg = self._backgrounds.get(canvas_px)
        if bg is None:
            bg = np.empty((canvas_px, canvas_px, 3), np.uint8)
            bg[:] = RIM_RGB
            rim = max(1, round(0.6 / self.config.table_size_cm * canvas_px))  # a 0.6 cm dark rim
            bg[rim:canvas_px - rim, rim:canvas_px - rim] = TABLE_RGB
            self._backgrounds[canvas_px] = bg
        return bg.copy()

    def _sample_layout(self, rng: np.random.Generator, task: ins.Task):
        """Non-overlapping object centres/angles and an EE position where ``task`` is not done."""
        cfg = self.config
        size, specs = cfg.table_size_cm, cfg.object_specs
        goal_free = ins.success_radius(task, cfg.block2block_success_cm, cfg.location_success_cm)
        location = None if task.location is None else ins.location_point(task.location, size)
        for _ in range(10_000):
            positions: dict[str, np.ndarray] = {}
            for spec in specs:
                margin = spec.radius + 5.0  # room for the EE between object and wall
                for _ in range(200):
                    p = rng.uniform(margin, size - margin, 2)
                    if all(np.linalg.norm(p - q) >= spec.radius + self._specs[n].radius + SPAWN_GAP_CM
                           for n, q in positions.items()):
                        break
                else:
                    break
                positions[spec.name] = p
            if len(positions) < len(specs):
                continue
            distance = ins.goal_distance(task, positions, size)
            if distance < goal_free + 4.0:
                continue  # the goal must be clearly not reached at the start
            if location is not None and any(
                    np.linalg.norm(p - location) < goal_free + self._specs[n].radius + 1.0
                    for n, p in positions.items() if n != task.target):
                continue  # keep the goal region free of other objects
            for _ in range(200):
                ee = rng.uniform(cfg.ee_radius_cm, size - cfg.ee_radius_cm, 2)
                if all(np.linalg.norm(ee - p) >= self._specs[n].radius + cfg.ee_radius_cm + SPAWN_GAP_CM
                       for n, p in positions.items()):
                    break
            else:
                continue
            angles = {spec.name: float(rng.uniform(0.0, 2.0 * math.pi)) for spec in specs}
            return positions, angles, ee
        raise RuntimeError(f"could not place the objects for {task.instruction!r}")  # pragma: no cover

    def _build_space(self, positions: Mapping[str, np.ndarray], angles: Mapping[str, float],
                     ee: np.ndarray) -> None:
        cfg = self.config
        space = pymunk.Space()
        space.gravity = (0.0, 0.0)
        static = space.static_body
        size, w = cfg.table_size_cm, WALL_THICKNESS_CM
        for x0, y0, x1, y1 in ((-w, -w, 0.0, size + w), (size, -w, size + w, size + w),
                               (0.0, -w, size, 0.0), (0.0, size, size, size + w)):
            wall = pymunk.Poly(static, [(x0, y0), (x1, y0), (x1, y1), (x0, y1)])
            wall.friction = CONTACT_FRICTION
            space.add(wall)
        friction_force = TABLE_MU * OBJECT_MASS * GRAVITY_CM_S2
        self._bodies: dict[str, pymunk.Body] = {}
        for spec in cfg.object_specs:
            body = pymunk.Body(OBJECT_MASS, pymunk.moment_for_poly(OBJECT_MASS, spec.vertices))
            body.position = tuple(positions[spec.name])
            body.angle = angles[spec.name]
            shape = pymunk.Poly(body, spec.vertices)
            shape.friction = CONTACT_FRICTION
            slide = pymunk.PivotJoint(static, body, (0.0, 0.0), (0.0, 0.0))
            slide.max_bias, slide.max_force = 0.0, friction_force
            spin = pymunk.GearJoint(static, body, 0.0, 1.0)
            spin.max_bias, spin.max_force = 0.0, friction_force * spec.spin_lever_cm
            space.add(body, shape, slide, spin)
            self._bodies[spec.name] = body
        # the EE: a disc dragged by a kinematic drive body through a strong but finite joint (a
        # position-controlled arm): it follows commands exactly in free space but cannot crush a
        # block jammed against a wall
        self._ee_drive = pymunk.Body(body_type=pymunk.Body.KINEMATIC)
        self._ee_drive.position = tuple(ee)
        self._ee = pymunk.Body(EE_MASS, math.inf)
        self._ee.position = tuple(ee)
        tip = pymunk.Circle(self._ee, cfg.ee_radius_cm)
        tip.friction = CONTACT_FRICTION
        drive = pymunk.PivotJoint(self._ee_drive, self._ee, (0.0, 0.0), (0.0, 0.0))
        drive.max_force = EE_MAX_FORCE
        space.add(self._ee_drive, self._ee, tip, drive)
        self._space = space
        self._frame = None

    def _keep_on_table(self) -> None:
        """Safety net: an object whose centre was squeezed through a wall is put back, at rest."""
        size = self.config.table_size_cm
        for name, body in self._bodies.items():
            x, y = body.position
            if not (math.isfinite(x) and math.isfinite(y)):
                raise RuntimeError(f"physics produced a non-finite position for {name}")
            if not (0.0 < x < size and 0.0 < y < size):
                r = self._specs[name].inradius
                body.position = (min(max(x, r), size - r), min(max(y, r), size - r))
                body.velocity, body.angular_velocity = (0.0, 0.0), 0.0
