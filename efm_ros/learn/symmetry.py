"""Symmetries of a top-down camera's view: a demonstration mirrored or turned is another valid one.

A training augmentation (``SFTConfig.symmetries``, ``train-sft --symmetries``), a departure from the
paper, which names augmentation among its levers (§5) without saying which. Where the camera looks
straight down on a square workspace whose walls, lighting and objects look the same mirrored or
turned, each element of the square's symmetry group (the dihedral group D4: four turns, four
mirrors) maps a recorded episode onto another episode the demonstrator could have recorded: the
frames turned, the arm's motions turned the same way, and the instruction's spatial words (the
"top left corner") turned with them. Eight demonstrations per recording, each with a layout the
recording did not have: more layouts is what Stage 1 lacks at small n (docs/results.md, "What the
camera features hold"). The user declares which of them hold for their robot; none is assumed.

Coordinates: image x to the right (columns), y downwards (rows). ``axes`` names the action
dimensions that move the arm along image x and y (the embedded table: 0 and 1); other dimensions
are left alone. A symmetry is a 2x2 signed permutation M acting on (x, y) about the image centre.
"""
from __future__ import annotations

import numpy as np

SYMMETRIES: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "flip_lr": ((-1, 0), (0, 1)),          # mirror about the vertical centre line
    "flip_ud": ((1, 0), (0, -1)),          # mirror about the horizontal centre line
    "rot90": ((0, -1), (1, 0)),            # a quarter turn clockwise as seen on screen: right -> down
    "rot180": ((-1, 0), (0, -1)),
    "rot270": ((0, 1), (-1, 0)),           # a quarter turn anticlockwise: down -> right
    "transpose": ((0, 1), (1, 0)),         # mirror about the main diagonal (top left to bottom right)
    "antitranspose": ((0, -1), (-1, 0)),   # mirror about the other diagonal
}
"""the seven non-identity elements of D4, by name, as matrices on image (x, y)"""


class SymmetryError(ValueError):
    """A symmetry that cannot be applied as asked: an unknown name, bins or frames it does not fit, an
    instruction nobody can say how to transform."""


def resolve_symmetries(names) -> list[str]:
    """Symmetry names as given (``train-sft --symmetries``, ``SFTConfig.symmetries``): "all" for the seven,
    else each of :data:`SYMMETRIES` at most once; SymmetryError otherwise."""
    names = list(names)
    if names == ["all"]:
        return sorted(SYMMETRIES)
    unknown = [n for n in names if n not in SYMMETRIES]
    if unknown or len(set(names)) != len(names):
        raise SymmetryError(f"symmetries {names}: {'unknown ' + str(unknown) if unknown else 'a name twice'}; "
                            f"expected some of {sorted(SYMMETRIES)}, or all")
    return names


def symmetry_matrix(name: str) -> np.ndarray:
    """The 2x2 integer matrix of a symmetry named in :data:`SYMMETRIES`; ValueError for another name."""
    if name not in SYMMETRIES:
        raise SymmetryError(f"unknown symmetry {name!r}; expected one of {sorted(SYMMETRIES)}")
    return np.array(SYMMETRIES[name], np.int64)


def transform_points(points, name: str, size: float) -> np.ndarray:
    """Points (..., 2) in image-aligned coordinates of a square of side ``size`` (pixels, cm, or 1 for
    fractions), mapped by the symmetry about the square's centre: p' = c + M (p - c)."""
    m = symmetry_matrix(name).astype(np.float64)
    c = float(size) / 2.0
    return c + (np.asarray(points, np.float64) - c) @ m.T


def transform_frames(frames: np.ndarray, name: str) -> np.ndarray:
    """uint8 frames (N, S, S, C) as the camera would see the mirrored or turned scene. Exact: each
    output pixel is one input pixel (pixel centres at i + 1/2 map onto pixel centres)."""
    frames = np.asarray(frames)
    size = frames.shape[1]
    if frames.ndim != 4 or frames.shape[2] != size:
        raise SymmetryError(f"a symmetry of the view needs square frames (N, S, S, C), got {frames.shape}")
    m = symmetry_matrix(name)
    i = np.arange(size)
    yy, xx = np.meshgrid(i, i, indexing="ij")
    out = np.stack([xx, yy], -1) * 2 + 1 - size              # doubled offsets from the centre, integers
    src = out @ m + size - 1                                  # M^T applied to a row vector: p = M^T p'
    return frames[:, src[..., 1] // 2, src[..., 0] // 2]


def check_action_bins(bins) -> None:
    """A symmetry maps a bin centre onto a bin centre only if the bins are symmetric about 0."""
    if not np.isclose(bins.low, -bins.high) or bins.num_bins % 2 != 1:
        raise SymmetryError(f"action bins [{bins.low}, {bins.high}] x {bins.num_bins} are not symmetric about 0 "
                         "with 0 a bin centre: a mirrored action would fall between bins")


def transform_tokens(tokens, name: str, bins, axes: tuple[int, int] = (0, 1)) -> np.ndarray:
    """Action tokens (..., D) of the mirrored or turned episode: the action's image-x and image-y
    components (dimensions ``axes``) mapped by M, bin centre onto bin centre (:func:`check_action_bins`).
    Entries -1 (no action, e.g. past an episode's end) stay -1."""
    check_action_bins(bins)
    tokens = np.asarray(tokens, np.int64)
    ax = list(axes)
    if len(ax) != 2 or len(set(ax)) != 2 or max(ax) >= tokens.shape[-1] or min(ax) < 0:
        raise SymmetryError(f"symmetry axes {axes} must name two different action dimensions of {tokens.shape[-1]}")
    half = (bins.num_bins - 1) // 2
    out = tokens.copy()
    centred = tokens[..., ax] - half                          # bin index about the zero bin
    out[..., ax] = centred @ symmetry_matrix(name).T + half
    return np.where(tokens < 0, -1, out)


def phrase_map(phrases: dict[str, str]):
    """An instruction transform from a user's phrase substitutions (e.g. {"left": "right", "right":
    "left"} for flip_lr): whole words, all at once, longest phrase first. {} declares that the robot's
    instructions say nothing a mirror or turn changes."""
    import re

    if not phrases:
        return lambda text: text
    keys = sorted(phrases, key=len, reverse=True)
    pattern = re.compile(r"\b(" + "|".join(re.escape(k) for k in keys) + r")\b")
    return lambda text: pattern.sub(lambda m: phrases[m.group(1)], text)


__all__ = ["SYMMETRIES", "SymmetryError", "check_action_bins", "phrase_map", "resolve_symmetries", "symmetry_matrix", "transform_frames",
           "transform_points", "transform_tokens"]
