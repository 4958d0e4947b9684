"""Recover an episode bag cut by a crash (SIGKILL, power loss): ``DIR/.staging/<id>/``.

A killed writer leaves its staging directory with an MCAP file that has no summary, no footer and
no metadata.yaml; every chunk completed before the kill is in it (the writer flushes each chunk,
see :mod:`efm_ros.data.bag`). :func:`recover_bag` streams those records up to the damage and
writes them as a new, complete episode bag, with ``custom_data`` saying it was recovered (the
episode facts a writer sets at close are lost; the outcome is "unknown" unless the bag holds a
terminal episode event). The recovered episode then reads like any other; the trainer decides
whether to use it (its last tick is usually incomplete, which :func:`read_episode` handles).

How to::

    python -m efm_ros.data.recover data/episodes/.staging/robot_0_e00042     # -> data/episodes/robot_0_e00042
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from efm_ros.data import interfaces as itf
from efm_ros.data.bag import STAGING_DIRNAME, EpisodeBagWriter, episode_being_written
from efm_ros.data.reader import EpisodeBagError, embedded_typestore


def _stream(mcap_path: Path):
    """(schemas, channels, [(channel_id, log_time, data)]) of every readable record."""
    from mcap.records import Channel, Message, Schema
    from mcap.stream_reader import StreamReader

    schemas, channels, messages = {}, {}, []
    with open(mcap_path, "rb") as f:
        try:
            for record in StreamReader(f, skip_magic=False).records:
                if isinstance(record, Schema):
                    schemas[record.id] = record
                elif isinstance(record, Channel):
                    channels[record.id] = record
                elif isinstance(record, Message):
                    messages.append((record.channel_id, record.log_time, record.data))
        except Exception:  # noqa: BLE001 - the file ends inside a record: keep what came before
            pass
    return schemas, channels, messages


def recover_bag(bag_dir: str | os.PathLike, episodes_dir: str | os.PathLike | None = None) -> Path:
    """Rewrite the readable part of the crashed bag ``bag_dir`` as ``episodes_dir/<name>``.

    ``episodes_dir`` defaults to the directory above ``.staging`` (or ``bag_dir``'s parent).
    Returns the recovered bag's path. The crashed directory is removed once the recovered bag is
    complete. Raises :class:`EpisodeBagError` when nothing is recoverable, ``FileExistsError``
    when the episode exists already.
    """
    src = Path(bag_dir)
    if (src / "metadata.yaml").exists():
        raise EpisodeBagError(f"{src}: has a metadata.yaml, it is complete; nothing to recover")
    files = sorted(src.glob("*.mcap"))
    if len(files) != 1:
        raise EpisodeBagError(f"{src}: expected one .mcap file, found {[f.name for f in files]}")
    if episodes_dir is None:
        episodes_dir = src.parent.parent if src.parent.name == STAGING_DIRNAME else src.parent
    episode_id = src.name
    if episode_being_written(src.parent.parent, episode_id) or episode_being_written(episodes_dir, episode_id):
        raise EpisodeBagError(f"{src}: a live writer is still writing this episode; not a crashed bag")
    if src.parent.resolve() == (Path(episodes_dir) / STAGING_DIRNAME).resolve():
        moved = src.with_name(f"{src.name}.crashed")  # free the staging name for the writer
        os.rename(src, moved)
        src, files = moved, [moved / files[0].name]

    schemas, channels, messages = _stream(files[0])
    if not messages:
        raise EpisodeBagError(f"{files[0]}: no complete chunk; nothing to recover")
    definitions = tuple(sorted({
        (s.name, "MSG" if s.encoding == "ros2msg" else "IDL", s.data.decode(), "") for s in schemas.values()
    }))
    store = embedded_typestore(definitions)
    robot = _robot_of(channels)

    writer = EpisodeBagWriter(episodes_dir, episode_id, robot=robot)
    writer.open()
    try:
        for channel_id, log_time, data in messages:
            channel = channels[channel_id]
            schema = schemas[channel.schema_id]
            writer.add_raw(channel.topic, schema.name, data, log_time,
                           msgdef=schema.data.decode(), rihs01=store.hash_rihs01(schema.name))
        writer.update_custom_data({
            "robot": robot, "episode_id": episode_id, "outcome": "unknown", "recovered": "true",
            "termination_reason": "recovered from a bag cut by a crash",
            "recovered_messages": str(len(messages)),
        })
        path = writer.close()
    except BaseException:
        writer.abort()
        raise
    shutil.rmtree(src, ignore_errors=True)
    return path


def _robot_of(channels: dict) -> str:
    image = next((c.topic for c in channels.values() if c.topic.endswith("/" + itf.IMAGE_TOPIC)), "")
    return image[: -len("/" + itf.IMAGE_TOPIC)].strip("/")


def recover_crashed(episodes_dir: str | os.PathLike, robot: str | None = None) -> list[tuple[str, str]]:
    """Recover every crashed bag in ``episodes_dir/.staging`` that no live writer holds (a logger
    calls this when it starts, e.g. after a SIGKILL and respawn). ``robot``: only bags of this robot
    (from their image topic), so that loggers sharing a directory each recover their own.
    Returns (episode_id, what happened) per crashed bag looked at; nothing here raises for one bag."""
    staging = Path(episodes_dir) / STAGING_DIRNAME
    results = []
    for src in sorted(staging.iterdir()) if staging.is_dir() else []:
        if not src.is_dir() or src.name.endswith(".crashed") or (src / "metadata.yaml").exists():
            continue
        if episode_being_written(episodes_dir, src.name):
            continue
        try:
            files = sorted(src.glob("*.mcap"))
            if robot is not None and len(files) == 1 and _robot_of(_stream(files[0])[1]) not in ("", robot):
                continue
            results.append((src.name, f"recovered {recover_bag(src, episodes_dir)}"))
        except (EpisodeBagError, OSError) as exc:   # incl. FileExistsError, or another logger was quicker
            results.append((src.name, f"not recovered: {exc}"))
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="efm-ros recover-bag", description=__doc__.split("\n\n")[0])
    p.add_argument("path", help="crashed bag directory, e.g. DIR/.staging/<episode_id>")
    p.add_argument("--out", default=None, help="episodes directory for the recovered bag (default: DIR)")
    args = p.parse_args(argv)
    try:
        path = recover_bag(args.path, args.out)
    except (EpisodeBagError, OSError) as exc:
        print(f"recover-bag: {exc}", file=sys.stderr)
        return 1
    print(f"recover-bag: recovered {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
