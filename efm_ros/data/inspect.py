"""``efm-ros read-bag``: summarise an episode bag, or every episode of an episodes directory.

How to::

    efm-ros read-bag data/demos/demo_s0_e00000     # topics, counts, custom data, outcome, alignment
    efm-ros read-bag data/demos                    # one line per complete episode
    efm-ros read-bag data/demos/demo_s0_e00000 --json

The bag is also decoded and aligned with :func:`efm_ros.data.reader.read_episode` (``--no-decode``
reads only metadata.yaml), so a truncated or corrupt bag is reported here with the file it
concerns (exit status 1).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from efm_ros.data.reader import EpisodeBagError, bag_summary, list_episodes, read_episode


def _episode_lines(path: Path, decode: bool) -> list[str]:
    s = bag_summary(path)
    cd = s["custom_data"]
    secs = s["duration_ns"] / 1e9
    lines = [
        f"bag:          {s['path']}",
        f"storage:      {s['storage']} (rosbag2 metadata v{s['version']}), {s['message_count']} messages, "
        f"{secs:.2f} s from {s['starting_time_ns']} ns",
        "files:        " + ", ".join(f"{Path(f['path']).name} ({(f['bytes'] or 0) / 1e6:.3f} MB)" for f in s["files"]),
        "topics:",
    ]
    width = max((len(t["name"]) for t in s["topics"]), default=0)
    for t in s["topics"]:
        lines.append(f"  {t['name'].ljust(width)}  {t['count']:6d}  {t['type']}")
    lines.append("custom data:")
    for key in sorted(cd):
        lines.append(f"  {key}: {cd[key]}")
    lines.append(f"outcome:      {cd.get('outcome', 'unknown')}  ({cd.get('termination_reason', '')})")
    if decode:
        ep = read_episode(path, unmatched_actions="drop")
        h, w = ep.image_size
        lines.append(
            f"episode:      {ep.episode_id} robot {ep.robot}: {ep.num_steps} actions, {len(ep.frames)} frames "
            f"{h}x{w}, instruction {ep.instruction!r}"
        )
        lines.append("events:       " + ", ".join(f"{e.event}@{e.steps}" for e in ep.events))
        if ep.steps_to_go is not None:
            lines.append(f"steps_to_go:  {int(ep.steps_to_go.present.sum())} of {len(ep.frames)} frames")
        dropped = ", ".join(f"{k}={v}" for k, v in ep.dropped.items())
        lines.append("alignment:    " + (dropped or "clean (nothing dropped)"))
    return lines


def _directory_lines(path: Path) -> list[str]:
    bags = list_episodes(path)
    lines = [f"{path}: {len(bags)} complete episode(s)"]
    for bag in bags:
        cd = bag_summary(bag)["custom_data"]
        lines.append(
            f"  {bag.name}  steps={cd.get('steps', '?'):>4}  outcome={cd.get('outcome', 'unknown'):8}  "
            f"{cd.get('instruction', '')}"
        )
    staging = path / ".staging"
    if staging.is_dir() and any(staging.iterdir()):
        names = sorted(p.name for p in staging.iterdir())
        lines.append(f"  ({len(names)} incomplete bag(s) in .staging: {', '.join(names[:5])})")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="efm-ros read-bag", description="Summarise episode bag(s).")
    p.add_argument("path", help="an episode bag directory, or an episodes directory")
    p.add_argument("--json", action="store_true", help="print the bag summary as JSON (bag directories only)")
    p.add_argument("--no-decode", action="store_true", help="read metadata.yaml only; do not decode messages")
    args = p.parse_args(argv)
    path = Path(args.path)
    try:
        if not path.is_dir():
            raise EpisodeBagError(f"{path}: no such directory")
        if not (path / "metadata.yaml").exists() and not any(path.glob("*.mcap")):
            print("\n".join(_directory_lines(path)))
            return 0
        if args.json:
            print(json.dumps(bag_summary(path), indent=2))
            return 0
        print("\n".join(_episode_lines(path, decode=not args.no_decode)))
    except EpisodeBagError as exc:
        print(f"read-bag: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
