"""Instructions of the embedded table: the task families, every instruction string, success.

Three families (``Task.family``):

- ``block2block``    "push the red block to the blue block": the paper's practice task.
- ``block2location`` "push the green block to the top left corner".
- ``bar2location``   "push the bar to the center": the novel-object variant only (the paper's
  BananaTable); it never appears in demonstrations.

The set is small and closed (3 verbs x objects x references/locations = 171 strings), so
:func:`all_instructions` lists every string a robot can ask for and text embeddings can be
computed once and cached. :func:`parse_instruction` maps a string back to its :class:`Task`.

Ground-truth success (:func:`is_success`) is for EVALUATION ONLY, never a reward or a stop
signal for learning (DESIGN.md §3):

- block2block: the target block's centre is within ``block2block_cm`` (9 cm) of the reference
  block's centre. The largest sum of two block circumradii is 8.6 cm, so any two blocks in
  contact qualify, and so do blocks a few cm apart (face to face up to ~3 cm gap).
- block2location / bar2location: the object's centre is within ``location_cm`` (5 cm) of the
  location point.

Table coordinates are centimetres, origin at the top-left corner of the table as seen in the
camera image, x to the right, y downwards; location points are fractions of the table size.
This module is pure Python + numpy (no physics, no rendering) so learners can import it cheaply.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow")
"""block names; a block is named by its colour"""
BAR = "bar"
"""name of the novel object"""
VERBS: tuple[str, ...] = ("push", "move", "slide")
"""verbs the templates use; all mean the same thing"""
FAMILIES: tuple[str, ...] = ("block2block", "block2location", "bar2location")
BLOCK_FAMILIES: tuple[str, ...] = ("block2block", "block2location")
"""families of the standard (blocks) table"""

LOCATIONS: dict[str, tuple[str, tuple[float, float]]] = {
    # key: (phrase in the instruction, (x, y) as fractions of the table size; y = 0 is the top)
    "top_left": ("top left corner", (0.2, 0.2)),
    "top_center": ("top center", (0.5, 0.2)),
    "top_right": ("top right corner", (0.8, 0.2)),
    "left": ("left side", (0.2, 0.5)),
    "center": ("center", (0.5, 0.5)),
    "right": ("right side", (0.8, 0.5)),
    "bottom_left": ("bottom left corner", (0.2, 0.8)),
    "bottom_center": ("bottom center", (0.5, 0.8)),
    "bottom_right": ("bottom right corner", (0.8, 0.8)),
}

BLOCK2BLOCK_SUCCESS_CM = 9.0
"""block2block success: centre-to-centre distance of target and reference blocks, cm"""
LOCATION_SUCCESS_CM = 5.0
"""*2location success: distance of the object's centre from the location point, cm"""


@dataclass(frozen=True)
class Task:
    """One instruction, parsed: which object goes where."""

    family: str
    """one of FAMILIES"""
    target: str
    """the object to push: a colour from COLORS, or BAR"""
    reference: str | None = None
    """block2block: the block to push the target to (a colour other than the target)"""
    location: str | None = None
    """*2location: a key of LOCATIONS"""
    verb: str = "push"
    """one of VERBS (wording only)"""

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown task family {self.family!r}; expected one of {FAMILIES}")
        if self.verb not in VERBS:
            raise ValueError(f"unknown verb {self.verb!r}; expected one of {VERBS}")
        if self.family == "bar2location":
            ok = self.target == BAR and self.reference is None and self.location in LOCATIONS
        elif self.family == "block2location":
            ok = self.target in COLORS and self.reference is None and self.location in LOCATIONS
        else:
            ok = (self.target in COLORS and self.reference in COLORS
                  and self.reference != self.target and self.location is None)
        if not ok:
            raise ValueError(f"inconsistent task {self!r}")

    @property
    def instruction(self) -> str:
        """The natural-language instruction of this task."""
        if self.family == "block2block":
            return f"{self.verb} the {self.target} block to the {self.reference} block"
        where = LOCATIONS[self.location][0]
        if self.family == "bar2location":
            return f"{self.verb} the bar to the {where}"
        return f"{self.verb} the {self.target} block to the {where}"


def _check_families(families: Sequence[str]) -> tuple[str, ...]:
    families = tuple(families)
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise ValueError(f"unknown or no task families {list(families)}; expected some of {FAMILIES}")
    return families


def all_tasks(families: Sequence[str] = FAMILIES) -> list[Task]:
    """Every task of the given families, in a fixed order (families, verbs, targets, goals)."""
    tasks = []
    for family in _check_families(families):
        for verb in VERBS:
            if family == "block2block":
                tasks += [Task(family, t, reference=r, verb=verb) for t in COLORS for r in COLORS if r != t]
            elif family == "block2location":
                tasks += [Task(family, t, location=loc, verb=verb) for t in COLORS for loc in LOCATIONS]
            else:
                tasks += [Task(family, BAR, location=loc, verb=verb) for loc in LOCATIONS]
    return tasks


def all_instructions(families: Sequence[str] = FAMILIES) -> list[str]:
    """Every instruction string of the given families (all by default), in a fixed order."""
    return [t.instruction for t in all_tasks(families)]


def normalize_instruction(text: str) -> str:
    """Lower case, single spaces, no surrounding whitespace or final full stop."""
    return " ".join(str(text).lower().split()).rstrip(".").rstrip()


@functools.cache
def _index() -> dict[str, Task]:
    return {t.instruction: t for t in all_tasks()}


def parse_instruction(text: str) -> Task:
    """The :class:`Task` of an instruction string (case and spacing are forgiven).

    Raises ValueError for a string that is not one of :func:`all_instructions`.
    """
    task = _index().get(normalize_instruction(text))
    if task is None:
        raise ValueError(f"unknown instruction {text!r}; efm_ros.sim.instructions.all_instructions() "
                         "lists the valid ones")
    return task


def sample_task(rng: np.random.Generator, families: Sequence[str] = BLOCK_FAMILIES,
                weights: Sequence[float] | None = None) -> Task:
    """Draw a task: a family by ``weights`` (uniform if None), then its objects and verb uniformly."""
    families = _check_families(families)
    if weights is None:
        p = np.full(len(families), 1.0 / len(families))
    else:
        p = np.asarray(weights, dtype=np.float64)
        if p.shape != (len(families),) or not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
            raise ValueError(f"family weights {weights} do not fit families {families}")
        p = p / p.sum()
    family = families[int(rng.choice(len(families), p=p))]
    verb = VERBS[int(rng.integers(len(VERBS)))]
    location = list(LOCATIONS)[int(rng.integers(len(LOCATIONS)))]
    if family == "bar2location":
        return Task(family, BAR, location=location, verb=verb)
    target = COLORS[int(rng.integers(len(COLORS)))]
    if family == "block2location":
        return Task(family, target, location=location, verb=verb)
    others = [c for c in COLORS if c != target]
    return Task(family, target, reference=others[int(rng.integers(len(others)))], verb=verb)


def transform_instruction(text: str, matrix) -> str:
    """The instruction of the same task on the table mirrored or turned by ``matrix`` (a 2x2 signed
    permutation acting on table (x, y) about the table's centre, ``efm_ros.learn.symmetry``): a location
    becomes the location at its mapped point ("top left corner" -> "top right corner" under a left-right
    mirror); blocks are named by colour, which no mirror changes. Raises ValueError for an instruction
    this table does not know or a matrix that maps a location off the nine."""
    task = parse_instruction(text)
    if task.location is None:
        return task.instruction
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (2, 2):
        raise ValueError(f"a symmetry of the table is a 2x2 matrix, got shape {m.shape}")
    point = 0.5 + m @ (np.asarray(LOCATIONS[task.location][1]) - 0.5)
    for key, (_, xy) in LOCATIONS.items():
        if np.allclose(xy, point):
            return replace(task, location=key).instruction
    raise ValueError(f"{text!r}: {m.tolist()} maps its location to {point.tolist()}, which is no named location")


def location_point(location: str, table_size_cm: float) -> np.ndarray:
    """Table coordinates (cm) of a named location."""
    return np.asarray(LOCATIONS[location][1], dtype=np.float64) * float(table_size_cm)


def goal_point(task: Task, positions: Mapping[str, Sequence[float]], table_size_cm: float) -> np.ndarray:
    """Where the target must go: the reference block's centre or the location point (cm)."""
    if task.family == "block2block":
        return np.asarray(positions[task.reference], dtype=np.float64)
    return location_point(task.location, table_size_cm)


def success_radius(task: Task, block2block_cm: float = BLOCK2BLOCK_SUCCESS_CM,
                   location_cm: float = LOCATION_SUCCESS_CM) -> float:
    """The distance (cm) from the goal point within which the target's centre counts as success."""
    return float(block2block_cm if task.family == "block2block" else location_cm)


def goal_distance(task: Task, positions: Mapping[str, Sequence[float]], table_size_cm: float) -> float:
    """Distance (cm) from the target's centre to the goal point."""
    target = np.asarray(positions[task.target], dtype=np.float64)
    return float(np.linalg.norm(target - goal_point(task, positions, table_size_cm)))


def is_success(task: Task, positions: Mapping[str, Sequence[float]], table_size_cm: float, *,
               block2block_cm: float = BLOCK2BLOCK_SUCCESS_CM,
               location_cm: float = LOCATION_SUCCESS_CM) -> bool:
    """Ground-truth success of ``task`` given object centres (cm). EVALUATION ONLY."""
    return goal_distance(task, positions, table_size_cm) <= success_radius(task, block2block_cm, location_cm)
