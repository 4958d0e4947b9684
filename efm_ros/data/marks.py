"""``efm-ros mark``: an operator's marks on recorded policy rollouts, for training steps-to-go on them.

Stage 1 trains steps-to-go on demonstrations only, so d(o, g) and the success detector are least
reliable on the states a policy reaches and a demonstrator does not (paper §5, "out-of-distribution
failure states": train steps-to-go on labelled policy rollouts). A mark says what a person saw in one
recorded episode: the goal was reached at step N (``--success-at N``: frame N shows it done), or it
was never reached (``--failed``). ``efm-ros train-sft --rollouts DIR`` then trains steps-to-go on the
marked episodes of DIR (``efm_ros.learn.sft``; only marked ones, every mark counted in train_meta).

How to::

    efm-ros mark runs/fleet/episodes --sheet robot_0_e00042 --out /tmp/e42.png   # look at the frames
    efm-ros mark runs/fleet/episodes robot_0_e00042 --success-at 57 --by alice
    efm-ros mark runs/fleet/episodes robot_0_e00043 --failed --by alice
    efm-ros mark runs/fleet/episodes                                            # counts, unmarked ids

Marks live next to the bags in ``DIR/marks.csv``, one row per mark, appended and fsynced; the bags
themselves are never rewritten. A later row for the same episode replaces an earlier one (a
correction), and the file keeps both. Every mark is checked against its bag before it is written:
the episode exists and N is one of its frames (0..T).

``efm-ros eval --record DIR`` writes the evaluation's rollouts with marks from the simulator's ground
truth (``marked_by`` = :data:`SIMULATOR`): experiment data standing in for an operator, named as
such in every count.
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

MARKS_FILE = "marks.csv"
FIELDS = ("episode_id", "outcome", "goal_step", "marked_by", "marked_at")
OUTCOMES = ("success", "failure")
SIMULATOR = "simulator ground truth"
"""``marked_by`` of marks written from a simulator's success test (experiments only)"""


class MarkError(ValueError):
    """A mark that cannot be true of its episode, or a marks file that cannot be read."""


@dataclass(frozen=True)
class Mark:
    """What a person (or, in experiments, the simulator) saw in one recorded episode."""

    episode_id: str
    outcome: str
    """"success": the goal was reached at ``goal_step``; "failure": it was never reached"""
    goal_step: int | None
    """success: the first frame (0..T) that shows the goal reached; failure: None"""
    marked_by: str
    marked_at: str = ""
    """UTC, ISO 8601"""

    def __post_init__(self) -> None:
        if not self.episode_id or "/" in self.episode_id or self.episode_id.startswith("."):
            raise MarkError(f"bad episode id {self.episode_id!r}")
        if self.outcome not in OUTCOMES:
            raise MarkError(f"{self.episode_id}: outcome must be one of {OUTCOMES}, got {self.outcome!r}")
        if (self.outcome == "success") != (self.goal_step is not None):
            raise MarkError(f"{self.episode_id}: a success needs its goal step, a failure has none")
        if self.goal_step is not None and self.goal_step < 0:
            raise MarkError(f"{self.episode_id}: goal step must be >= 0, got {self.goal_step}")
        if not self.marked_by.strip():
            raise MarkError(f"{self.episode_id}: say who marked it (marked_by)")

    def row(self) -> dict[str, str]:
        return {"episode_id": self.episode_id, "outcome": self.outcome,
                "goal_step": "" if self.goal_step is None else str(self.goal_step),
                "marked_by": self.marked_by, "marked_at": self.marked_at}


def read_marks(episodes_dir: str | os.PathLike) -> dict[str, Mark]:
    """The marks of ``episodes_dir`` by episode id, the latest row of each episode winning; {} when
    there is no marks file. A malformed row is an error that names the file and line."""
    path = Path(episodes_dir) / MARKS_FILE
    if not path.is_file():
        return {}
    marks: dict[str, Mark] = {}
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != FIELDS:
            raise MarkError(f"{path}: header must be {','.join(FIELDS)}, got {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            try:
                step = row["goal_step"]
                marks[row["episode_id"]] = Mark(row["episode_id"], row["outcome"], int(step) if step else None,
                                                row["marked_by"], row["marked_at"])
            except (MarkError, ValueError, TypeError) as e:
                raise MarkError(f"{path}:{line}: {e}") from None
    return marks


def check_mark(episodes_dir: str | os.PathLike, mark: Mark) -> None:
    """Raise :class:`MarkError` unless the episode's bag is in ``episodes_dir`` and the goal step is
    one of its frames."""
    from efm_ros.data import read_metadata

    bag = Path(episodes_dir) / mark.episode_id
    try:
        custom = read_metadata(bag).get("custom_data") or {}
    except Exception as e:   # noqa: BLE001 - any unreadable bag is a refusal, with its reason
        raise MarkError(f"{mark.episode_id}: no readable episode bag in {episodes_dir} ({e})") from None
    if mark.goal_step is not None and "steps" in custom and mark.goal_step > int(custom["steps"]):
        raise MarkError(f"{mark.episode_id}: goal step {mark.goal_step} is past its last frame {custom['steps']}")


def append_marks(episodes_dir: str | os.PathLike, marks: Iterable[Mark], *, check: bool = True) -> int:
    """Append ``marks`` to ``episodes_dir/marks.csv`` (created with its header), each checked against
    its bag first (``check``), then fsynced. Nothing is written if any mark is refused."""
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    marks = [m if m.marked_at else Mark(m.episode_id, m.outcome, m.goal_step, m.marked_by, now) for m in marks]
    if check:
        for m in marks:
            check_mark(episodes_dir, m)
    path = Path(episodes_dir) / MARKS_FILE
    read_marks(episodes_dir)                      # refuse to append to a file that does not parse
    new = not path.is_file() or path.stat().st_size == 0
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        for m in marks:
            writer.writerow(m.row())
        f.flush()
        os.fsync(f.fileno())
    return len(marks)


@dataclass
class MarkedRollouts:
    """Marked episodes of one or more directories, with the counts a report needs."""

    paths: list[Path]
    marks: list[Mark]
    unmarked: int
    """episode bags without a mark (not trained on)"""

    def counts(self) -> dict:
        by: dict[str, int] = {}
        for m in self.marks:
            by[m.marked_by] = by.get(m.marked_by, 0) + 1
        return {"marked": len(self.marks), "success": sum(m.outcome == "success" for m in self.marks),
                "failure": sum(m.outcome == "failure" for m in self.marks), "unmarked": self.unmarked,
                "marked_by": dict(sorted(by.items()))}


def marked_rollouts(dirs: Sequence[str | os.PathLike]) -> MarkedRollouts:
    """Every marked episode bag of ``dirs`` (sorted by path) and how many bags had no mark. A mark
    whose bag is missing is an error: the marks file and the bags must travel together."""
    from efm_ros.data import list_episodes

    paths, marks, unmarked = [], [], 0
    for d in dirs:
        found = {p.name: p for p in list_episodes(d)}
        dir_marks = read_marks(d)
        missing = sorted(set(dir_marks) - set(found))
        if missing:
            raise MarkError(f"{d}: {len(missing)} marked episode(s) have no bag, e.g. {missing[0]}")
        for name, path in found.items():
            if name in dir_marks:
                paths.append(path)
                marks.append(dir_marks[name])
            else:
                unmarked += 1
    order = sorted(range(len(paths)), key=lambda i: paths[i])   # the order of the feature cache's episodes
    return MarkedRollouts([paths[i] for i in order], [marks[i] for i in order], unmarked)


def contact_sheet(bag: str | os.PathLike, out: str | os.PathLike, every: int = 1, columns: int = 10) -> Path:
    """A PNG of an episode's frames, each titled with its step, for a person to choose the goal step."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from efm_ros.data import read_episode

    ep = read_episode(bag)
    steps = list(range(0, len(ep.frames), max(1, every)))
    rows = -(-len(steps) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.3, rows * 1.45), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, t in zip(axes.flat, steps):
        ax.imshow(ep.frames[t])
        ax.set_title(str(t), fontsize=8)
    fig.suptitle(f"{ep.episode_id}: {ep.instruction!r}, {len(ep.frames) - 1} steps", fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="efm-ros mark", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("episodes", help="directory of episode bags (marks.csv is kept there)")
    p.add_argument("episode_id", nargs="?", help="the episode to mark (omit: print the counts)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--success-at", type=int, metavar="N", help="the goal was reached at step N (frame N shows it)")
    what.add_argument("--failed", action="store_true", help="the goal was never reached in this episode")
    what.add_argument("--sheet", metavar="EPISODE", help="write a contact sheet of this episode's frames (--out)")
    p.add_argument("--by", default=os.environ.get("USER", ""), help="who marks (default: $USER)")
    p.add_argument("--out", help="--sheet: PNG path (default EPISODE.png)")
    p.add_argument("--every", type=int, default=1, help="--sheet: every Nth frame (default 1)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.sheet:
            out = contact_sheet(Path(args.episodes) / args.sheet, args.out or f"{args.sheet}.png", args.every)
            print(f"mark: wrote {out}")
            return 0
        if args.episode_id is None:
            if args.success_at is not None or args.failed:
                raise MarkError("which episode? give its id")
            found = marked_rollouts([args.episodes])
            c = found.counts()
            print(f"mark: {args.episodes}: {c['marked']} marked ({c['success']} success, {c['failure']} failure), "
                  f"{c['unmarked']} unmarked; by: " + (", ".join(f"{k} {v}" for k, v in c["marked_by"].items()) or "-"))
            return 0
        if args.success_at is None and not args.failed:
            raise MarkError("say what happened: --success-at N or --failed")
        mark = Mark(args.episode_id, "failure" if args.failed else "success", args.success_at, args.by)
        append_marks(args.episodes, [mark])
        print(f"mark: {args.episode_id}: {mark.outcome}" + (f" at step {mark.goal_step}" if mark.goal_step is not None
                                                           else "") + f" (by {mark.marked_by})")
        return 0
    except MarkError as e:
        print(f"mark: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
