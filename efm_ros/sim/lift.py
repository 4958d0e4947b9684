"""A second embedded robot: a kinematic pick-and-place arm over a 3-D box workspace (OpenCV camera).

Deliberately unlike the top-down pushing table (:mod:`efm_ros.sim.tabletop`): the end effector
(EE) moves in 3-D, has a two-finger gripper, and the camera looks at the scene obliquely, so height
matters and is visible. On the table stand three cubes (red, green, blue) at random,
non-overlapping places in the front part of the table, and two open trays at the back, the
"left bin" (orange) and the "right bin" (purple). Three instruction families (all templates:
:func:`all_instructions`):

- ``"place"``: "put the <colour> cube in the <left|right> bin" -- success: the cube rests, released,
  inside the named bin;
- ``"stack"``: "stack the <colour> cube on the <colour> cube" -- success: the cube rests, released,
  on top of the other one with its centre over the other's top face;
- ``"lift"``: "lift the <colour> cube" -- success: the cube is held and its bottom is higher than
  ``lift_height_cm`` (8 cm).

The start layout never satisfies its instruction (cubes start on the table, outside the bins, not
stacked, not held; the gripper starts open).

Units and axes. Lengths are centimetres. World coordinates: origin at the front-left corner of the
table top, x to the right, y away from the camera (depth), z up; the workspace is the box
[0, 30] x [0, 30] x [0, 20] cm (``workspace_cm``). The EE position is the grasp point between
the two fingers, 1 cm above the fingertips. An action is a 4-vector ``(dx, dy, dz, grip)``, each component
clipped to [-1, 1] (NaN/inf or a wrong length raises ValueError before anything changes). The
first three move the EE by ``a[:3] * max_step_cm`` (2 cm, i.e. 20 cm/s at 10 Hz) after the xyz
vector is scaled down to norm 1 if longer (so the arm speed is bounded), then clamped to the
workspace (EE at least ``ee_min_z_cm`` above the table; a held cube stays inside the box).
``grip > 0`` commands the gripper closed, ``grip <= 0`` open; the gripper acts at the end of the
step, after the motion.

Kinematics, no physics engine. Closing the gripper (open -> closed) while the EE is within
``grasp_radius_cm`` of a free cube's centre grabs the nearest such cube, which then moves rigidly
with the EE (keeping its offset at the grab). Opening releases it and it drops straight down: onto
the table, onto the floor of a bin if its centre is over that bin (a cube over the rim slides in;
one whose centre is outside but whose footprint overlaps the rim is nudged off it), or onto the top
of any free cube whose footprint it overlaps. Nothing collides with the EE or with a held cube
(they pass through everything but the table); a cube resting on a cube that is grabbed drops to
what is below it. Cubes are axis-aligned (no yaw).

Camera: one square RGB image from a pinhole camera in front of and above the table (centred on
x, looking down at about 50 degrees), so height shows as vertical displacement and perspective.
The table fills the image width; everything is in view except the top of the workspace near its
back edge (above about 15 cm at y = 30 cm).
Shadows of the EE and of a held cube (light straight above; darker the lower the object) fall on
the table or bin floor below them; a vertical arm column above the gripper helps read the EE
height. The gripper fingers are drawn wide apart when open and together when closed (around a held
cube). Boxes are drawn with per-face shading in painter's order (far to near), anti-aliased
(sub-pixel vertices, ``cv2.LINE_AA``) on a canvas ``supersample`` times the output size, then
shrunk with INTER_AREA. No goal is drawn: the goal is only in the instruction.

Determinism: all randomness from ``np.random.default_rng(seed)``; the episode's layout does not
depend on whether the instruction was given or drawn; the same seed and the same actions give
bit-identical frames. ``reset(seed=None)`` draws the episode seed from a generator seeded by the
constructor's ``seed``.

The scripted expert (:meth:`LiftRobot.expert`, :class:`LiftExpert`) reads the privileged state;
like :meth:`LiftRobot.state` and :meth:`LiftRobot.success` it is for demonstrations and evaluation,
never a policy input.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

import cv2
import numpy as np

from efm_ros.robots import validate_action

FAMILIES: tuple[str, ...] = ("place", "stack", "lift")
"""the instruction families, in the order :func:`all_instructions` lists them"""
COLORS: tuple[str, ...] = ("red", "green", "blue")
"""the cubes, in state/drawing order"""
BINS: tuple[str, ...] = ("left", "right")
"""the bins, in state/drawing order"""

CUBE_RGB: dict[str, tuple[int, int, int]] = {"red": (215, 50, 45), "green": (55, 170, 75), "blue": (45, 90, 215)}
BIN_RGB: dict[str, tuple[int, int, int]] = {"left": (235, 150, 40), "right": (145, 80, 185)}
BACKDROP_RGB = (62, 66, 76)
TABLE_RGB = (205, 200, 190)
TABLE_LINE_RGB = (188, 182, 170)
TABLE_EDGE_RGB = (120, 110, 98)
COLUMN_RGB = (150, 152, 160)
WRIST_RGB = (95, 97, 108)
FINGER_RGB = (45, 45, 52)

FINGER_WIDTH_CM = 0.6
"""finger thickness along x, cm"""
FINGER_DEPTH_CM = 1.0
"""finger extent along y, cm"""
FINGER_BELOW_CM = 1.0
"""the fingertips reach this far below the grasp point (EE position), cm"""
FINGER_ABOVE_CM = 1.6
"""the fingers reach this far above the grasp point, to the wrist, cm"""
WRIST_HEIGHT_CM = 1.2
"""height of the wrist block above the fingers, cm"""
COLUMN_HALF_CM = 0.55
"""half-width of the square arm column that carries the wrist, cm"""
OPEN_GAP_EXTRA_CM = 2.2
"""the open finger gap is the cube size plus this, cm"""
CLOSED_GAP_CM = 0.3
"""finger gap when closed on nothing, cm"""
TABLE_THICKNESS_CM = 2.0
"""the table slab's visible front face, cm"""

# box corners: index = 4 * ix + 2 * iy + iz, each 0 (min) or 1 (max)
_CORNERS = np.array([[ix, iy, iz] for ix in (0, 1) for iy in (0, 1) for iz in (0, 1)], dtype=np.float64)
# faces: (axis, side, corner indices, shade): visible when the camera is beyond that side
_FACES: tuple[tuple[int, int, tuple[int, ...], float], ...] = (
    (0, 0, (0, 2, 3, 1), 0.68), (0, 1, (4, 6, 7, 5), 0.68),
    (1, 0, (0, 4, 5, 1), 0.84), (1, 1, (2, 6, 7, 3), 0.74),
    (2, 0, (0, 4, 6, 2), 0.50), (2, 1, (1, 5, 7, 3), 1.00),
)


# ------------------------------------------------------------------------------------ instructions
@dataclass(frozen=True)
class LiftTask:
    """One parsed instruction."""

    family: str
    """"place", "stack" or "lift" """
    target: str
    """the cube to move (a colour)"""
    destination: str | None = None
    """place: a bin ("left"/"right"); stack: the cube below (a colour); lift: None"""

    def __post_init__(self) -> None:
        if self.family not in FAMILIES or self.target not in COLORS:
            raise ValueError(f"bad task {self}")
        ok = {"place": self.destination in BINS,
              "stack": self.destination in COLORS and self.destination != self.target,
              "lift": self.destination is None}[self.family]
        if not ok:
            raise ValueError(f"bad destination {self.destination!r} for a {self.family} task")

    @property
    def instruction(self) -> str:
        if self.family == "place":
            return f"put the {self.target} cube in the {self.destination} bin"
        if self.family == "stack":
            return f"stack the {self.target} cube on the {self.destination} cube"
        return f"lift the {self.target} cube"


def all_tasks(families: tuple[str, ...] | list[str] = FAMILIES) -> list[LiftTask]:
    """Every task of ``families``, in a fixed order (families in FAMILIES order, then colours)."""
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown families {unknown}; choose from {FAMILIES}")
    tasks: list[LiftTask] = []
    for family in FAMILIES:
        if family not in families:
            continue
        for color in COLORS:
            if family == "place":
                tasks += [LiftTask("place", color, b) for b in BINS]
            elif family == "stack":
                tasks += [LiftTask("stack", color, c) for c in COLORS if c != color]
            else:
                tasks.append(LiftTask("lift", color))
    return tasks


def all_instructions(families: tuple[str, ...] | list[str] = FAMILIES) -> list[str]:
    """Every instruction of ``families``, in a fixed order (15 for all three families)."""
    return [t.instruction for t in all_tasks(families)]


def normalize_instruction(text: str) -> str:
    """Lower case, single spaces, no surrounding blanks or final full stop."""
    return " ".join(str(text).lower().strip().rstrip(".").split())


# ------------------------------------------------------------------------------------------ config
@dataclass(frozen=True)
class LiftConfig:
    """Everything that shapes the lift world (image size and control rate are robot arguments)."""

    workspace_cm: tuple[float, float, float] = (30.0, 30.0, 20.0)
    """(x, y, z) extent of the box the EE moves in; the table top is its floor, cm"""
    max_step_cm: float = 2.0
    """EE displacement per control step for an xyz action of norm 1, cm"""
    cube_size_cm: float = 3.0
    """side of each cube, cm"""
    grasp_radius_cm: float = 1.5
    """closing grabs a free cube whose centre is within this distance of the EE, cm"""
    lift_height_cm: float = 8.0
    """lift success: the held cube's bottom is above this height, cm"""
    bin_inner_cm: float = 8.0
    """inside side of each square bin, cm"""
    bin_wall_cm: float = 0.5
    """thickness of the bin walls, cm"""
    bin_height_cm: float = 1.6
    """height of the bin rims above the table, cm"""
    bin_floor_cm: float = 0.4
    """height of the bin floors above the table, cm"""
    bin_jitter_cm: float = 1.5
    """each bin's centre moves up to this much in x and y from its nominal place per episode, cm"""
    ee_min_z_cm: float = 1.0
    """lowest EE (grasp point) height, cm; the fingertips are FINGER_BELOW_CM lower"""
    spawn_gap_cm: float = 2.0
    """minimum free gap between cubes, and between cubes and bins, at reset, cm"""
    families: tuple[str, ...] = FAMILIES
    """the instruction families this robot draws and accepts"""
    supersample: int = 2
    """render at this multiple of image_size, then shrink with INTER_AREA (anti-aliasing)"""

    def __post_init__(self) -> None:
        object.__setattr__(self, "workspace_cm", tuple(float(v) for v in self.workspace_cm))
        object.__setattr__(self, "families", tuple(self.families))
        if len(self.workspace_cm) != 3:
            raise ValueError(f"workspace_cm must be (x, y, z), got {self.workspace_cm}")
        if not self.families or len(set(self.families)) != len(self.families) or any(
                f not in FAMILIES for f in self.families):
            raise ValueError(f"families must be distinct names from {FAMILIES}, got {self.families}")
        for name in ("max_step_cm", "cube_size_cm", "grasp_radius_cm", "lift_height_cm", "bin_inner_cm",
                     "bin_wall_cm", "bin_height_cm", "ee_min_z_cm", "spawn_gap_cm"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value}")
        for name in ("bin_floor_cm", "bin_jitter_cm"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a non-negative number, got {value}")
        if int(self.supersample) != self.supersample or self.supersample < 1:
            raise ValueError(f"supersample must be an integer >= 1, got {self.supersample}")
        x, y, z = self.workspace_cm
        if not (x >= 20 and y >= 20 and z >= 10):
            raise ValueError(f"workspace_cm must be at least (20, 20, 10), got {self.workspace_cm}")
        if self.bin_floor_cm >= self.bin_height_cm:
            raise ValueError("bin_floor_cm must be below bin_height_cm")
        if self.bin_inner_cm < self.cube_size_cm + 1.0:
            raise ValueError("bin_inner_cm must leave room for a cube (cube_size_cm + 1)")
        if self.lift_height_cm + self.cube_size_cm + 1.0 > z:
            raise ValueError(f"lift_height_cm {self.lift_height_cm} leaves no room under the workspace top {z}")
        for bx, by in self.bin_nominal_centres:
            reach = self.bin_outer_half_cm + self.bin_jitter_cm
            if not (reach <= bx <= x - reach and reach <= by <= y - reach):
                raise ValueError(f"the bins do not fit in the workspace {self.workspace_cm}")
        if self.bin_nominal_centres[1][0] - self.bin_nominal_centres[0][0] < 2 * (self.bin_outer_half_cm +
                                                                                   self.bin_jitter_cm):
            raise ValueError(f"the bins overlap in the workspace {self.workspace_cm}")

    @property
    def half_cm(self) -> float:
        """half a cube side, cm"""
        return 0.5 * self.cube_size_cm

    @property
    def bin_outer_half_cm(self) -> float:
        """half the outer side of a bin (inner + walls), cm"""
        return 0.5 * self.bin_inner_cm + self.bin_wall_cm

    @property
    def bin_nominal_centres(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """left and right bin centres before jitter, cm (at the back of the table)"""
        x, y, _ = self.workspace_cm
        by = y - self.bin_outer_half_cm - self.bin_jitter_cm - 1.0
        return (0.25 * x, by), (0.75 * x, by)


def make_config(config: LiftConfig | None = None, **overrides: Any) -> LiftConfig:
    """``config`` (default: LiftConfig()) with ``overrides`` applied; an unknown key raises TypeError."""
    valid = {f.name for f in fields(LiftConfig)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise TypeError(f"LiftRobot got unknown keyword arguments {unknown}; valid: seed, image_size, "
                        f"control_rate_hz, config and the LiftConfig fields {sorted(valid)}")
    return replace(config or LiftConfig(), **overrides)


def check_action(action: Any) -> np.ndarray:
    """Validate a (dx, dy, dz, grip) action: float64 4-vector, components clipped to [-1, 1], xyz norm <= 1.

    Raises ValueError for a wrong number of elements or any NaN/inf.
    """
    a = np.clip(validate_action(action, 4, "(dx, dy, dz, grip)"), -1.0, 1.0)
    norm = math.sqrt(a[0] * a[0] + a[1] * a[1] + a[2] * a[2])
    if norm > 1.0:
        a[:3] /= norm
    return a


# ------------------------------------------------------------------------------------------- robot
class LiftRobot:
    """The pick-and-place robot (implements :class:`efm_ros.robots.Robot`).

    ``LiftRobot(seed=0, image_size=64)``; other keyword arguments are :class:`LiftConfig` fields
    (or pass ``config=LiftConfig(...)``); an unknown keyword raises TypeError. The robot is reset
    once on construction (with ``seed``), so it can be observed at once.
    """

    action_dim = 4

    def __init__(self, *, seed: int | None = None, image_size: int = 64, control_rate_hz: float = 10.0,
                 config: LiftConfig | None = None, **config_overrides: Any) -> None:
        self.config = make_config(config, **config_overrides)
        if int(image_size) != image_size or image_size < 8:
            raise ValueError(f"image_size must be an integer >= 8, got {image_size}")
        if not (math.isfinite(control_rate_hz) and control_rate_hz > 0):
            raise ValueError(f"control_rate_hz must be a positive number, got {control_rate_hz}")
        self.image_size = int(image_size)
        self.control_rate_hz = float(control_rate_hz)
        self._tasks = all_tasks(self.config.families)
        self._by_text = {t.instruction: t for t in self._tasks}
        self._seeds = np.random.default_rng(seed)
        self._setup_camera()
        self._shade_cache: dict[tuple[int, int, int], list[tuple[int, int, int]]] = {}
        self._frame: np.ndarray | None = None
        self.reset(seed=None if seed is None else int(seed))

    # ----------------------------------------------------------------------------------- Robot API
    @property
    def instruction(self) -> str:
        return self._task.instruction

    @property
    def family(self) -> str:
        """the current instruction's family: "place", "stack" or "lift" """
        return self._task.family

    @property
    def task(self) -> LiftTask:
        return self._task

    @property
    def t(self) -> int:
        """control steps since the last reset"""
        return self._t

    @property
    def episode_seed(self) -> int:
        """the seed the current episode was reset with"""
        return self._episode_seed

    def instructions(self) -> list[str]:
        """Every instruction this robot can draw (and accepts), in a fixed order."""
        return [t.instruction for t in self._tasks]

    def reset(self, seed: int | None = None, instruction: str | None = None) -> str:
        """Start an episode: bins jittered, cubes placed, EE placed (gripper open), instruction drawn.

        ``instruction`` must be one of :meth:`instructions` (case, spacing and a final full stop
        are ignored); ValueError otherwise. The layout depends on the seed only.
        """
        task = None
        if instruction is not None:
            task = self._by_text.get(normalize_instruction(instruction))
            if task is None:
                raise ValueError(f"unknown instruction {instruction!r}; this robot accepts {len(self._tasks)} "
                                 f"instructions such as {self._tasks[0].instruction!r} "
                                 f"(see LiftRobot.instructions())")
        if seed is None:
            seed = int(self._seeds.integers(2**63 - 1))
        rng = np.random.default_rng(int(seed))
        drawn = self._tasks[int(rng.integers(len(self._tasks)))]  # drawn even when given: same layout
        self._task = drawn if task is None else task
        self._episode_seed, self._t = int(seed), 0
        self._sample_layout(rng)
        self._static: dict[int, tuple[np.ndarray, list]] = {}
        self._frame = None
        if self.success():  # pragma: no cover - the layout rules make this impossible
            raise RuntimeError(f"start layout already satisfies {self.instruction!r}")
        return self.instruction

    def step(self, action: Any) -> None:
        """Move the EE by ``a[:3] * max_step_cm`` (clamped), then open/close the gripper (see module doc)."""
        a = check_action(action)
        cfg = self.config
        lo, hi = self._ee_bounds()
        self._ee = np.minimum(np.maximum(self._ee + a[:3] * cfg.max_step_cm, lo), hi)
        if self._held is not None:
            self._cubes[self._held] = self._ee + self._offset
        closed = bool(a[3] > 0.0)
        if closed and not self._closed:
            self._grab()
        elif not closed and self._closed and self._held is not None:
            self._release()
        self._closed = closed
        self._t += 1
        self._frame = None

    def observe(self) -> np.ndarray:
        """Camera frame, RGB uint8 (image_size, image_size, 3); cached (read-only) until the next step/reset."""
        if self._frame is None:
            self._frame = self.render()
            self._frame.flags.writeable = False
        return self._frame

    def success(self) -> bool:
        """Ground-truth success of the current instruction. EVALUATION ONLY: never a reward."""
        task, cfg = self._task, self.config
        i = COLORS.index(task.target)
        cube, h = self._cubes[i], cfg.half_cm
        if task.family == "lift":
            return self._held == i and bool(cube[2] - h > cfg.lift_height_cm)
        if self._held == i:
            return False
        if task.family == "place":
            b = self._bins[BINS.index(task.destination)]
            inner = 0.5 * cfg.bin_inner_cm
            return bool(abs(cube[0] - b[0]) <= inner and abs(cube[1] - b[1]) <= inner)
        j = COLORS.index(task.destination)
        below = self._cubes[j]
        return bool(self._held != j and abs(cube[0] - below[0]) <= h and abs(cube[1] - below[1]) <= h
                    and abs((cube[2] - h) - (below[2] + h)) < 1e-6)

    # ------------------------------------------------------------------------------------- extras
    def expert(self, **kwargs: Any) -> LiftExpert:
        """A scripted expert bound to this robot (keyword arguments: :class:`LiftExpert`'s)."""
        return LiftExpert(self, **kwargs)

    def state(self) -> dict[str, Any]:
        """Privileged ground truth, for experts, oracles and debugging (never a policy input).

        Keys: ``t``, ``ee`` (grasp point xyz, cm), ``gripper`` (1.0 closed, 0.0 open), ``held``
        (colour of the held cube or None), ``cubes`` (colour -> centre xyz, cm), ``cube_size``,
        ``bins`` (name -> centre xyz of the bin floor, cm), ``bin_inner``, ``workspace``,
        ``max_step``, ``instruction``, ``family``, ``target``, ``destination``, ``success``.
        """
        cfg = self.config
        return {
            "t": self._t,
            "ee": self._ee.copy(),
            "gripper": 1.0 if self._closed else 0.0,
            "held": None if self._held is None else COLORS[self._held],
            "cubes": {c: self._cubes[i].copy() for i, c in enumerate(COLORS)},
            "cube_size": float(cfg.cube_size_cm),
            "bins": {b: np.array([*self._bins[k], cfg.bin_floor_cm]) for k, b in enumerate(BINS)},
            "bin_inner": float(cfg.bin_inner_cm),
            "workspace": np.array(cfg.workspace_cm),
            "max_step": float(cfg.max_step_cm),
            "instruction": self.instruction,
            "family": self.family,
            "target": self._task.target,
            "destination": self._task.destination,
            "success": self.success(),
        }

    def render(self, size: int | None = None) -> np.ndarray:
        """A fresh RGB uint8 frame of side ``size`` (default image_size)."""
        size = self.image_size if size is None else int(size)
        canvas_px = size * self.config.supersample
        background, walls = self._static_layer(canvas_px)
        canvas = background.copy()
        k = canvas_px * 16.0  # normalised image units -> 1/16 px (cv2 shift=4)
        cfg = self.config
        h = cfg.half_cm
        # shadows on the ground below the EE and a held cube (light straight above)
        ee = self._ee
        gap = self._finger_gap()
        half_w = 0.5 * gap + FINGER_WIDTH_CM
        self._draw_shadow(canvas, k, ee[0], ee[1], half_w, 0.5 * FINGER_DEPTH_CM, ee[2] - FINGER_BELOW_CM)
        if self._held is not None:
            c = self._cubes[self._held]
            self._draw_shadow(canvas, k, c[0], c[1], h, h, c[2] - h)
        # painter's order, far to near: free cubes, the gripper (with any held cube), bin wall pieces
        items: list[tuple[float, int, Any]] = [(d, 0, w) for d, w in walls]
        depth = self._depth_axis
        for i in range(len(COLORS)):
            if i != self._held:
                items.append((float(self._cubes[i] @ depth), 1, i))
        items.append((float(ee @ depth), 2, None))
        items.sort(key=lambda it: -it[0])
        for _, kind, payload in items:
            if kind == 0:
                for pts, rgb in payload:
                    cv2.fillConvexPoly(canvas, pts, rgb, cv2.LINE_AA, 4)
            elif kind == 1:
                c = self._cubes[payload]
                self._draw_box(canvas, k, c - h, c + h, CUBE_RGB[COLORS[payload]])
            else:
                self._draw_gripper(canvas, k, gap)
        if canvas_px != size:
            canvas = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)
        return canvas

    # ---------------------------------------------------------------------------------- internals
    def _sample_layout(self, rng: np.random.Generator) -> None:
        cfg = self.config
        x, y, _ = cfg.workspace_cm
        h, ho = cfg.half_cm, cfg.bin_outer_half_cm
        nominal = np.array(cfg.bin_nominal_centres)
        self._bins = nominal + rng.uniform(-cfg.bin_jitter_cm, cfg.bin_jitter_cm, (2, 2))
        lo, hi = h + 1.5, np.array([x, y]) - h - 1.5
        for _ in range(1000):
            cubes: list[np.ndarray] = []
            for _ in range(200):
                p = rng.uniform(lo, hi)
                if any(np.max(np.abs(p - b)) < ho + h + cfg.spawn_gap_cm for b in self._bins):
                    continue
                if any(np.max(np.abs(p - q)) < cfg.cube_size_cm + cfg.spawn_gap_cm for q in cubes):
                    continue
                cubes.append(p)
                if len(cubes) == len(COLORS):
                    break
            if len(cubes) == len(COLORS):
                break
        else:  # pragma: no cover - the config checks leave plenty of room
            raise RuntimeError("could not place the cubes")
        self._cubes = np.array([[p[0], p[1], h] for p in cubes])
        self._held: int | None = None
        self._offset = np.zeros(3)
        self._closed = False
        margin = 3.0
        z_lo = min(8.0, cfg.workspace_cm[2] - 1.0)
        z_hi = min(14.0, cfg.workspace_cm[2])
        self._ee = np.array([rng.uniform(margin, x - margin), rng.uniform(margin, y - margin),
                             rng.uniform(z_lo, z_hi)])

    def _ee_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.config
        lo = np.array([0.0, 0.0, cfg.ee_min_z_cm])
        hi = np.array(cfg.workspace_cm)
        if self._held is not None:  # the held cube stays inside the box
            h, off = cfg.half_cm, self._offset
            lo = np.maximum(lo, h - off)
            hi = np.minimum(hi, hi - h - off)
        return lo, hi

    def _grab(self) -> None:
        if self._held is not None:
            return
        d = np.linalg.norm(self._cubes - self._ee, axis=1)
        i = int(np.argmin(d))
        if d[i] <= self.config.grasp_radius_cm:
            self._held = i
            self._offset = self._cubes[i] - self._ee
            self._settle()  # whatever rested on it drops

    def _release(self) -> None:
        i, self._held = self._held, None
        self._cubes[i, :2] = self._off_rims(self._cubes[i, :2])
        self._settle()

    def _off_rims(self, xy: np.ndarray) -> np.ndarray:
        """Where a released cube lands in xy: slid into a bin it is over, nudged off a rim it overlaps."""
        cfg = self.config
        h, ho = cfg.half_cm, cfg.bin_outer_half_cm
        slack = 0.5 * cfg.bin_inner_cm - h
        p = xy.copy()
        for b in self._bins:
            d = p - b
            if max(abs(d[0]), abs(d[1])) < ho:
                p = b + np.clip(d, -slack, slack)
            elif abs(d[0]) < ho + h and abs(d[1]) < ho + h:
                axis = 0 if abs(d[0]) - ho >= abs(d[1]) - ho else 1
                p[axis] = b[axis] + math.copysign(ho + h, d[axis])
        x, y, _ = cfg.workspace_cm
        return np.clip(p, [h, h], [x - h, y - h])

    def _ground(self, xy: np.ndarray) -> float:
        """Height of the table or bin floor under a point, cm."""
        half_inner = 0.5 * self.config.bin_inner_cm
        for b in self._bins:
            if abs(xy[0] - b[0]) <= half_inner and abs(xy[1] - b[1]) <= half_inner:
                return float(self.config.bin_floor_cm)
        return 0.0

    def _settle(self) -> None:
        """Drop every free cube straight down onto the ground or the free cubes below it."""
        size, h = self.config.cube_size_cm, self.config.half_cm
        free = sorted((i for i in range(len(COLORS)) if i != self._held), key=lambda i: (self._cubes[i, 2], i))
        done: list[int] = []
        for i in free:
            c = self._cubes[i]
            z = self._ground(c[:2])
            for j in done:
                o = self._cubes[j]
                if abs(c[0] - o[0]) < size and abs(c[1] - o[1]) < size:
                    z = max(z, o[2] + h)
            c[2] = z + h
            done.append(i)

    def _finger_gap(self) -> float:
        cfg = self.config
        if not self._closed:
            return cfg.cube_size_cm + OPEN_GAP_EXTRA_CM
        return cfg.cube_size_cm if self._held is not None else CLOSED_GAP_CM

    # --------------------------------------------------------------------------------- rendering
    def _setup_camera(self) -> None:
        """A pinhole camera in front of and above the table, about 50 degrees down, centred on x.

        Scaled so that the table's front edge spans 96 % of the image width and the table slab's
        bottom edge sits 2 % above the image's bottom; the space above the table shows heights
        (the whole workspace height at the front, up to about 15 cm at the back).
        """
        x, y, z = self.config.workspace_cm
        eye = np.array([0.5 * x, -0.45 * y, 1.6 * z])
        look = np.array([0.5 * x, 0.45 * y, 0.0])
        f = (look - eye) / np.linalg.norm(look - eye)
        r = np.cross(f, [0.0, 0.0, 1.0])
        r /= np.linalg.norm(r)
        rot = np.stack([r, np.cross(f, r), f])  # camera axes: right, down, forward
        t = TABLE_THICKNESS_CM
        slab = np.array([[0.0, 0.0, -t], [x, 0.0, -t], [0.0, y, 0.0], [x, y, 0.0]])
        cam = (slab - eye) @ rot.T
        uv = cam[:, :2] / cam[:, 2:]
        lo, hi = uv.min(axis=0), uv.max(axis=0)
        scale = 0.96 / float(hi[0] - lo[0])
        # normalised image coords (0..1, x right, y down) = cam[:2] / cam[2] + c, cam = P @ A.T + b
        self._eye = eye
        self._proj_a = rot * np.array([[scale], [scale], [1.0]])
        self._proj_b = -eye @ self._proj_a.T
        self._proj_c = np.array([0.5 - 0.5 * (lo[0] + hi[0]) * scale, 0.98 - hi[1] * scale])
        self._depth_axis = f

    def _project(self, pts: np.ndarray, k: float) -> np.ndarray:
        """World points (N, 3) -> int32 canvas coordinates in 1/16 px (N, 2)."""
        cam = pts @ self._proj_a.T + self._proj_b
        uv = cam[:, :2] / cam[:, 2:] + self._proj_c
        return np.rint(uv * k).astype(np.int32)

    def _shades(self, rgb: tuple[int, int, int]) -> list[tuple[int, int, int]]:
        s = self._shade_cache.get(rgb)
        if s is None:
            s = [tuple(int(round(v * face[3])) for v in rgb) for face in _FACES]
            self._shade_cache[rgb] = s
        return s

    def _box_polys(self, lo: np.ndarray, hi: np.ndarray, k: float, rgb: tuple[int, int, int],
                   hidden: tuple[tuple[int, int], ...] = ()) -> list[tuple[np.ndarray, tuple[int, int, int]]]:
        """The camera-facing faces of an axis-aligned box (less the ``hidden`` (axis, side) ones)."""
        pts = self._project(lo + _CORNERS * (hi - lo), k)
        eye, shades = self._eye, self._shades(rgb)
        out = []
        for f, (axis, side, idx, _) in enumerate(_FACES):
            if (axis, side) in hidden:
                continue
            if (eye[axis] > hi[axis]) if side else (eye[axis] < lo[axis]):
                out.append((pts[list(idx)], shades[f]))
        return out

    def _draw_box(self, canvas: np.ndarray, k: float, lo: np.ndarray, hi: np.ndarray,
                  rgb: tuple[int, int, int]) -> None:
        for pts, color in self._box_polys(lo, hi, k, rgb):
            cv2.fillConvexPoly(canvas, pts, color, cv2.LINE_AA, 4)

    def _draw_shadow(self, canvas: np.ndarray, k: float, x: float, y: float, hx: float, hy: float,
                     bottom: float) -> None:
        ground = self._ground(np.array([x, y]))
        height = max(0.0, bottom - ground)
        if height <= 1e-6:
            return  # resting: the object itself covers its footprint
        base = TABLE_RGB if ground == 0.0 else self._bin_floor_rgb(self._bin_under(x, y))
        dark = 0.55 + 0.3 * min(1.0, height / self.config.workspace_cm[2])
        pts = self._project(np.array([[x - hx, y - hy, ground], [x + hx, y - hy, ground],
                                      [x + hx, y + hy, ground], [x - hx, y + hy, ground]]), k)
        cv2.fillConvexPoly(canvas, pts, tuple(int(v * dark) for v in base), cv2.LINE_AA, 4)

    def _bin_under(self, x: float, y: float) -> int:
        half_inner = 0.5 * self.config.bin_inner_cm
        for n, b in enumerate(self._bins):
            if abs(x - b[0]) <= half_inner and abs(y - b[1]) <= half_inner:
                return n
        return 0  # pragma: no cover

    @staticmethod
    def _bin_floor_rgb(n: int) -> tuple[int, int, int]:
        return tuple(int(0.55 * v + 0.45 * 235) for v in BIN_RGB[BINS[n]])

    def _draw_gripper(self, canvas: np.ndarray, k: float, gap: float) -> None:
        cfg = self.config
        ee = self._ee
        top = ee[2] + FINGER_ABOVE_CM
        column_top = cfg.workspace_cm[2] + 12.0
        open_half = 0.5 * (cfg.cube_size_cm + OPEN_GAP_EXTRA_CM) + FINGER_WIDTH_CM
        c = COLUMN_HALF_CM
        self._draw_box(canvas, k, np.array([ee[0] - c, ee[1] - c, top + WRIST_HEIGHT_CM]),
                       np.array([ee[0] + c, ee[1] + c, column_top]), COLUMN_RGB)
        hy = 0.5 * FINGER_DEPTH_CM + 0.2
        self._draw_box(canvas, k, np.array([ee[0] - open_half, ee[1] - hy, top]),
                       np.array([ee[0] + open_half, ee[1] + hy, top + WRIST_HEIGHT_CM]), WRIST_RGB)
        fy = 0.5 * FINGER_DEPTH_CM
        fingers = []
        for sign in (-1.0, 1.0):
            x0 = ee[0] + sign * 0.5 * gap
            x1 = x0 + sign * FINGER_WIDTH_CM
            lo = np.array([min(x0, x1), ee[1] - fy, ee[2] - FINGER_BELOW_CM])
            hi = np.array([max(x0, x1), ee[1] + fy, top])
            fingers.append((abs(0.5 * (x0 + x1) - self._eye[0]), lo, hi))
        fingers.sort(key=lambda f: -f[0])  # the finger farther from the camera first
        self._draw_box(canvas, k, fingers[0][1], fingers[0][2], FINGER_RGB)
        if self._held is not None:
            h = cfg.half_cm
            cube = self._cubes[self._held]
            self._draw_box(canvas, k, cube - h, cube + h, CUBE_RGB[COLORS[self._held]])
        self._draw_box(canvas, k, fingers[1][1], fingers[1][2], FINGER_RGB)

    def _static_layer(self, canvas_px: int) -> tuple[np.ndarray, list]:
        """The episode's empty scene (backdrop, table, bin floors) and its bin wall pieces (depth, polygons)."""
        cached = self._static.get(canvas_px)
        if cached is not None:
            return cached
        cfg = self.config
        k = canvas_px * 16.0
        x, y, _ = cfg.workspace_cm
        bg = np.empty((canvas_px, canvas_px, 3), np.uint8)
        bg[:] = BACKDROP_RGB
        table = self._project(np.array([[0, 0, 0], [x, 0, 0], [x, y, 0], [0, y, 0]], np.float64), k)
        front = self._project(np.array([[0, 0, 0], [x, 0, 0], [x, 0, -TABLE_THICKNESS_CM],
                                        [0, 0, -TABLE_THICKNESS_CM]], np.float64), k)
        cv2.fillConvexPoly(bg, front, TABLE_EDGE_RGB, cv2.LINE_AA, 4)
        cv2.fillConvexPoly(bg, table, TABLE_RGB, cv2.LINE_AA, 4)
        step = 5.0
        lines = [((g, 0.0), (g, y)) for g in np.arange(step, x - 1e-6, step)]
        lines += [((0.0, g), (x, g)) for g in np.arange(step, y - 1e-6, step)]
        thickness = max(1, cfg.supersample // 2)
        for (x0, y0), (x1, y1) in lines:
            p = self._project(np.array([[x0, y0, 0.0], [x1, y1, 0.0]]), k)
            cv2.line(bg, tuple(int(v) for v in p[0]), tuple(int(v) for v in p[1]), TABLE_LINE_RGB, thickness,
                     cv2.LINE_AA, 4)
        walls: list[tuple[float, list]] = []
        hi_ = 0.5 * cfg.bin_inner_cm
        ho, w, top = cfg.bin_outer_half_cm, cfg.bin_wall_cm, cfg.bin_height_cm
        for n, (bx, by) in enumerate(self._bins):
            fz = cfg.bin_floor_cm
            floor = self._project(np.array([[bx - hi_, by - hi_, fz], [bx + hi_, by - hi_, fz],
                                            [bx + hi_, by + hi_, fz], [bx - hi_, by + hi_, fz]]), k)
            cv2.fillConvexPoly(bg, floor, self._bin_floor_rgb(n), cv2.LINE_AA, 4)
            rgb = BIN_RGB[BINS[n]]
            # four walls (front/back span the full outer side), each cut into pieces for the depth sort
            boxes = [((bx - ho, by - ho), (bx + ho, by - ho + w)), ((bx - ho, by + ho - w), (bx + ho, by + ho)),
                     ((bx - ho, by - hi_), (bx - hi_, by + hi_)), ((bx + hi_, by - hi_), (bx + ho, by + hi_))]
            for (x0, y0), (x1, y1) in boxes:
                pieces = 4
                along = 0 if (x1 - x0) > (y1 - y0) else 1
                for p in range(pieces):
                    lo = np.array([x0, y0, 0.0])
                    hi = np.array([x1, y1, top])
                    span = (hi[along] - lo[along]) / pieces
                    start, stop = lo[along], hi[along]
                    # neighbouring pieces overlap a little, so no anti-aliased seam shows between them
                    lo[along] = max(start, start + p * span - 0.15)
                    hi[along] = min(stop, start + (p + 1) * span + 0.15)
                    cuts = ((along, 0),) * (p > 0) + ((along, 1),) * (p < pieces - 1)  # inner ends
                    depth = float(0.5 * (lo + hi) @ self._depth_axis)
                    walls.append((depth, self._box_polys(lo, hi, k, rgb, cuts)))
        self._static[canvas_px] = (bg, walls)
        return bg, walls


# ------------------------------------------------------------------------------------------ expert
class LiftExpert:
    """A scripted expert bound to a :class:`LiftRobot`; reads its privileged state directly.

    Reactive: each :meth:`act` looks at the state and picks a waypoint -- above the target cube,
    down to it, close; then lift (lift family: straight up past the lift height, holding), or
    carry at a safe height over the destination (the named bin's floor, or the top of the other
    cube), descend, open. If a grasp misses or a cube is dropped it simply tries again. Imperfect
    on purpose, seeded by :meth:`reset`: a per-episode speed, hover height, carry clearance and
    grasp/drop offsets, plus Gaussian noise on every motion step (smaller near a waypoint).

    ``act()`` returns float32 (dx, dy, dz, grip) in [-1, 1], xyz norm <= 1.
    """

    def __init__(self, robot: LiftRobot, *, noise_std: float = 0.12,
                 speed_range: tuple[float, float] = (0.7, 1.0)) -> None:
        if not (0.0 < speed_range[0] <= speed_range[1] <= 1.0):
            raise ValueError(f"speed_range must satisfy 0 < low <= high <= 1, got {speed_range}")
        if not (math.isfinite(noise_std) and noise_std >= 0):
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        self.robot = robot
        self.noise_std = float(noise_std)
        self.speed_range = (float(speed_range[0]), float(speed_range[1]))
        self.reset(0)

    def reset(self, seed: int) -> None:
        """Start a new episode's behaviour (call after the robot's reset)."""
        rng = np.random.default_rng(int(seed))
        self._rng = rng
        self._speed = float(rng.uniform(*self.speed_range))
        self._hover = float(rng.uniform(2.0, 4.5))        # above the cube top before descending, cm
        self._clearance = float(rng.uniform(1.0, 3.0))    # carried cube bottom above obstacles, cm
        self._lift_extra = float(rng.uniform(1.5, 3.5))   # lift: bottom this far above the lift height, cm
        self._grasp_offset = rng.uniform(-0.3, 0.3, 3)    # aim point relative to the cube centre, cm
        self._grasp_offset[2] = abs(self._grasp_offset[2])
        self._drop_offset = rng.uniform(-1.0, 1.0, 2)     # place: aim in the bin (scaled to the room), cm

    def act(self) -> np.ndarray:
        r = self.robot
        cfg = r.config
        task = r._task
        ee, h = r._ee, cfg.half_cm
        i = COLORS.index(task.target)
        cube = r._cubes[i]
        if r._held == i:
            bottom = cube[2] - h
            if task.family == "lift":
                goal_bottom = cfg.lift_height_cm + self._lift_extra
                return self._move(np.array([ee[0], ee[1], ee[2] + goal_bottom - bottom]), grip=1.0)
            if task.family == "place":
                b = r._bins[BINS.index(task.destination)]
                room = 0.5 * cfg.bin_inner_cm - h
                dest = b + self._drop_offset * 0.5 * room
                rest = cfg.bin_floor_cm
                obstacle = cfg.bin_height_cm
            else:
                below = r._cubes[COLORS.index(task.destination)]
                dest = below[:2] + 0.25 * self._drop_offset * h
                rest = below[2] + h
                obstacle = rest
            release_bottom = rest + 0.4
            carry_bottom = max(obstacle, release_bottom) + self._clearance
            err = dest - cube[:2]
            if math.hypot(*err) > 0.5:
                if bottom < carry_bottom - 0.5:  # up first, then across
                    target = np.array([ee[0], ee[1], ee[2] + carry_bottom - bottom])
                else:
                    target = np.array([ee[0] + err[0], ee[1] + err[1], ee[2] + carry_bottom - bottom])
                return self._move(target, grip=1.0)
            target = np.array([ee[0] + err[0], ee[1] + err[1], ee[2] + release_bottom - bottom])
            if abs(bottom - release_bottom) < 0.4:
                return self._still(grip=-1.0)  # open: the cube drops into place
            return self._move(target, grip=1.0)
        if r._closed:  # holding nothing useful (a missed grasp, or the wrong cube): open
            return self._still(grip=-1.0)
        if r.success():  # placed or stacked: back off upwards, open
            return self._move(ee + np.array([0.0, 0.0, 3.0]), grip=-1.0)
        aim = cube + self._grasp_offset
        aim[2] = max(aim[2], cfg.ee_min_z_cm)
        horizontal = math.hypot(aim[0] - ee[0], aim[1] - ee[1])
        if horizontal > 0.6:
            above = np.array([aim[0], aim[1], cube[2] + h + self._hover])
            if ee[2] < cube[2] + h and horizontal > 2.0:  # low and far: rise while approaching
                above[2] = max(above[2], ee[2])
            return self._move(above, grip=-1.0)
        if np.linalg.norm(aim - ee) < 0.5:
            return self._still(grip=1.0)  # close: grabs the cube
        return self._move(aim, grip=-1.0)

    def _still(self, grip: float) -> np.ndarray:
        return np.array([0.0, 0.0, 0.0, grip], dtype=np.float32)

    def _move(self, target: np.ndarray, grip: float) -> np.ndarray:
        delta = (np.asarray(target, dtype=np.float64) - self.robot._ee) / self.robot.config.max_step_cm
        dist = float(np.linalg.norm(delta))
        if dist > self._speed:
            delta *= self._speed / dist
        noise = self._rng.normal(0.0, self.noise_std, 3) * min(1.0, dist / 1.5)
        v = delta + noise
        n = float(np.linalg.norm(v))
        if n > 1.0:
            v /= n
        return np.array([v[0], v[1], v[2], grip], dtype=np.float32).clip(-1.0, 1.0)
