"""Bring your own bags: demonstrations from a lab's existing rosbag2 recordings.

A *topic map* (YAML or JSON) says where a recording keeps what Stage 1 needs::

    image: /camera/color/image_raw          # sensor_msgs/Image (rgb8, bgr8) or sensor_msgs/CompressedImage
    action: /servo_node/delta_twist_cmds    # geometry_msgs/TwistStamped | Twist, std_msgs/Float32MultiArray | Float64MultiArray
    action_axes: linear.x,linear.y,linear.z # twist components the actions are made of (as the policy node's)
    max_speed_mps: 0.2                      # the speed of a full-scale action (twist -> normalised action)
    gripper: /gripper/command               # optional std_msgs/Float64 (-1 open .. +1 closed), appended to a twist action
    instruction: "put the cube in the bin"  # the instruction of every episode, or {topic: /instruction} (std_msgs/String)
    episodes: bag                           # one demonstration per bag, ending at its goal; or {topic: /episode_marker}:
                                            #   std_msgs/String "start", "success" (ends one at its goal), "discard"
    control_rate_hz: 10                     # the rate the policy will act at

``efm-ros train-sft --demos RECORDINGS --topic-map map.yaml`` converts the recordings into episode
bags (``RUN/imported``) and trains on them; ``efm-ros import-bags`` does only the conversion.

Resampling: each demonstration is cut into control ticks at ``control_rate_hz`` from its first
image; frame t is the newest image at tick t, action t the newest command received up to tick t+1
(the command in force while the arm moved from frame t to t+1), a zero action if the newest is older
than ``command_timeout_s`` (the arm held still). The last frame is the goal frame (steps-to-go
labels T - t). Frames are centre-cropped and resized like the camera node's. Continuous commands
are tokenised with the model's bins at training (``custom_data['source'] == "imported"``).

Every problem is a :class:`ForeignBagError` naming the bag and what is wrong with it (a missing
topic, a wrong message type, an unusable image, no demonstration in it).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from efm_ros.data.episode import IMPORTED_SOURCE, Episode
from efm_ros.robots.commands import ActionAxes, default_axes
from efm_ros.vision.preprocess import IMAGE_SIZE, FrameError, decode, to_model_frame

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
TWIST_TYPES = ("geometry_msgs/msg/TwistStamped", "geometry_msgs/msg/Twist")
ARRAY_TYPES = ("std_msgs/msg/Float32MultiArray", "std_msgs/msg/Float64MultiArray")
MARKERS = ("start", "success", "discard")


class ForeignBagError(ValueError):
    """A recording that cannot be turned into demonstrations; the message names the bag."""


@dataclass(frozen=True)
class TopicMap:
    """Where a recording keeps the camera, the commands, the instruction and the episode
    boundaries (see the module docstring)."""

    image: str
    action: str
    instruction: Any
    """the instruction text, or {"topic": name} of a std_msgs/String topic (its latest message)"""
    episodes: Any = "bag"
    """"bag", or {"topic": name} of a std_msgs/String marker topic"""
    action_axes: str = ""
    """twist components of the action ('' = by action_dims)"""
    action_dims: int = 2
    max_speed_mps: float = 0.2
    max_angular_rps: float = 1.0
    gripper: str = ""
    control_rate_hz: float = 10.0
    command_timeout_s: float = 0.5
    image_size: int = IMAGE_SIZE

    @classmethod
    def load(cls, path: str | Path) -> TopicMap:
        """From a YAML or JSON file; unknown keys and missing required ones are errors."""
        import yaml

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"topic map {path}: unreadable: {exc}") from exc
        return cls.from_dict(data, where=str(path))

    @classmethod
    def from_dict(cls, data: Any, where: str = "topic map") -> TopicMap:
        if not isinstance(data, dict):
            raise ValueError(f"{where}: a mapping of keys {[f.name for f in fields(cls)]} is needed")
        known = {f.name for f in fields(cls)}
        unknown, missing = sorted(set(data) - known), [k for k in ("image", "action", "instruction") if k not in data]
        if unknown or missing:
            raise ValueError(f"{where}: " + "; ".join(
                ([f"unknown keys {unknown} (known: {sorted(known)})"] if unknown else [])
                + ([f"missing keys {missing}"] if missing else [])))
        tm = cls(**data)
        if not (tm.control_rate_hz > 0 and tm.command_timeout_s > 0):
            raise ValueError(f"{where}: control_rate_hz and command_timeout_s must be > 0")
        for key in ("instruction", "episodes"):
            value = getattr(tm, key)
            if isinstance(value, dict) and set(value) != {"topic"}:
                raise ValueError(f"{where}: {key} must be a string or {{topic: NAME}}, got {value!r}")
        if isinstance(tm.episodes, str) and tm.episodes != "bag":
            raise ValueError(f"{where}: episodes must be 'bag' or {{topic: NAME}}, got {tm.episodes!r}")
        return tm

    def axes(self) -> ActionAxes:
        axes = [a for a in self.action_axes.split(",") if a.strip()] or list(default_axes(self.action_dims))
        if self.gripper and "gripper" not in axes:
            axes.append("gripper")
        return ActionAxes.parse(axes, len(axes), max_speed_mps=self.max_speed_mps,
                                max_angular_rps=self.max_angular_rps)


def _stamp_ns(msg: Any, log_time: int) -> int:
    header = getattr(msg, "header", None)
    if header is not None:
        ns = int(header.stamp.sec) * 10**9 + int(header.stamp.nanosec)
        if ns > 0:
            return ns
    return int(log_time)


def _rgb(msg: Any, msgtype: str) -> np.ndarray:
    if msgtype.endswith("CompressedImage"):
        import cv2

        bgr = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FrameError("compressed", f"undecodable {msg.format!r} image")
        return np.ascontiguousarray(bgr[:, :, ::-1])
    return decode(msg.encoding, msg.height, msg.width, msg.step, bytes(msg.data))


def read_recording(bag: str | Path, tm: TopicMap) -> dict[str, list[tuple[int, Any]]]:
    """(stamp ns, message) of each mapped topic, sorted by stamp; ForeignBagError naming what is missing."""
    from rosbags.highlevel import AnyReader

    bag = Path(bag)
    wanted = {"image": tm.image, "action": tm.action}
    for key in ("instruction", "episodes"):
        if isinstance(getattr(tm, key), dict):
            wanted[key] = getattr(tm, key)["topic"]
    if tm.gripper:
        wanted["gripper"] = tm.gripper
    allowed = {"image": IMAGE_TYPES, "action": TWIST_TYPES + ARRAY_TYPES, "instruction": ("std_msgs/msg/String",),
               "episodes": ("std_msgs/msg/String",), "gripper": ("std_msgs/msg/Float64", "std_msgs/msg/Float32")}
    try:
        with AnyReader([bag]) as reader:
            types = {c.topic: c.msgtype for c in reader.connections}
            for key, topic in wanted.items():
                if topic not in types:
                    raise ForeignBagError(f"{bag}: no topic {topic!r} ({key} in the topic map); it has "
                                          f"{sorted(types)}")
                if types[topic] not in allowed[key]:
                    raise ForeignBagError(f"{bag}: {topic!r} is {types[topic]}, the topic map's {key} needs one of "
                                          f"{list(allowed[key])}")
            by_topic = {topic: key for key, topic in wanted.items()}
            out: dict[str, list] = {key: [] for key in wanted}
            conns = [c for c in reader.connections if c.topic in by_topic]
            for conn, log_time, raw in reader.messages(connections=conns):
                msg = reader.deserialize(raw, conn.msgtype)
                out[by_topic[conn.topic]].append((_stamp_ns(msg, log_time), msg, conn.msgtype))
    except ForeignBagError:
        raise
    except Exception as exc:  # noqa: BLE001 - rosbags raises many types for damaged or foreign files
        raise ForeignBagError(f"{bag}: not a readable rosbag2 recording ({type(exc).__name__}: {exc})") from exc
    for key in out:
        out[key].sort(key=lambda item: item[0])
    if not out["image"]:
        raise ForeignBagError(f"{bag}: no messages on the image topic {tm.image!r}")
    return out


def _segments(bag: Path, tm: TopicMap, rec: dict) -> list[tuple[int, int]]:
    """(start ns, goal ns) of each demonstration."""
    if tm.episodes == "bag":
        return [(rec["image"][0][0], rec["image"][-1][0])]
    segments, start = [], None
    for stamp, msg, _ in rec["episodes"]:
        mark = str(msg.data).strip().lower()
        if mark not in MARKERS:
            continue
        if mark == "start":
            start = stamp
        elif start is not None:
            if mark == "success":
                segments.append((start, stamp))
            start = None
    if not segments:
        raise ForeignBagError(f"{bag}: no 'start' ... 'success' pair on {tm.episodes['topic']!r}: no demonstration")
    return segments


def _latest(items: list, t_ns: int, newer_than: int | None = None):
    """The newest (stamp, msg, type) at or before t_ns (and after newer_than), else None."""
    stamps = [s for s, _, _ in items]
    i = int(np.searchsorted(stamps, t_ns, side="right")) - 1
    if i < 0 or (newer_than is not None and items[i][0] <= newer_than):
        return None
    return items[i]


def _action(item, axes: ActionAxes, gripper_item, bag: Path) -> np.ndarray:
    if item is None:
        a = np.zeros(axes.dims)
    elif item[2] in TWIST_TYPES:
        twist = getattr(item[1], "twist", item[1])
        a, _ = axes.from_command((twist.linear.x, twist.linear.y, twist.linear.z),
                                 (twist.angular.x, twist.angular.y, twist.angular.z))
    else:
        a = np.asarray(item[1].data, np.float64)
        if a.shape != (axes.dims,):
            raise ForeignBagError(f"{bag}: an action array has {a.size} values, the topic map says {axes.dims} "
                                  f"({','.join(axes.axes)})")
    if axes.has_gripper and gripper_item is not None and item is not None and item[2] in TWIST_TYPES:
        a[axes.axes.index("gripper")] = float(gripper_item[1].data)
    if not np.all(np.isfinite(a)):
        raise ForeignBagError(f"{bag}: a non-finite action {a.tolist()}")
    return axes.bound(a)[0].astype(np.float32)


def recording_episodes(bag: str | Path, tm: TopicMap, *, robot: str = "imported") -> list[Episode]:
    """The demonstrations of one recording, resampled at the control rate (module docstring)."""
    bag = Path(bag)
    rec = read_recording(bag, tm)
    axes = tm.axes()
    if isinstance(tm.instruction, str):
        fixed = tm.instruction.strip()
        if not fixed:
            raise ForeignBagError(f"{bag}: the topic map's instruction is empty")
    tick = int(round(1e9 / tm.control_rate_hz))
    timeout = int(tm.command_timeout_s * 1e9)
    out = []
    for k, (start, goal) in enumerate(_segments(bag, tm, rec)):
        n = int((goal - start) // tick)
        if n < 1:
            continue   # shorter than one control tick: nothing was demonstrated
        times = start + tick * np.arange(n + 1, dtype=np.int64)
        times[-1] = goal
        try:
            frames = np.stack([to_model_frame(_rgb(*(_latest(rec["image"], int(t)) or rec["image"][0])[1:]),
                                              tm.image_size) for t in times])
        except FrameError as exc:
            raise ForeignBagError(f"{bag}: unusable image on {tm.image!r}: {exc}") from exc
        actions = np.stack([_action(_latest(rec["action"], int(t1), newer_than=int(t1) - timeout), axes,
                                    _latest(rec.get("gripper", []), int(t1)), bag) for t1 in times[1:]])
        if isinstance(tm.instruction, str):
            instruction = fixed
        else:
            item = _latest(rec["instruction"], int(start)) or (rec["instruction"][0] if rec["instruction"] else None)
            instruction = str(item[1].data).strip() if item else ""
            if not instruction:
                raise ForeignBagError(f"{bag}: no instruction on {tm.instruction['topic']!r}")
        out.append(Episode.from_demonstration(
            robot=robot, episode_id=f"{bag.name}_{k:03d}", instruction=instruction, frames=frames,
            actions=actions, control_rate_hz=tm.control_rate_hz, start_ns=int(start),
            custom_data={"source": IMPORTED_SOURCE, "origin_bag": str(bag.resolve()), "origin_start_ns": str(start),
                         "action_axes": ",".join(axes.axes)}))
    if not out:
        raise ForeignBagError(f"{bag}: no demonstration of at least one control tick")
    return out


def find_recordings(path: str | Path) -> list[Path]:
    """A recording directory (with metadata.yaml), a single .mcap/.db3 file, or a directory of them."""
    path = Path(path)
    if (path / "metadata.yaml").is_file() or path.suffix in (".mcap", ".db3"):
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such recording or directory")
    found = sorted(p for p in path.iterdir() if not p.name.startswith(".")
                   and ((p / "metadata.yaml").is_file() or p.suffix in (".mcap", ".db3")))
    if not found:
        raise ForeignBagError(f"{path}: no rosbag2 recordings in it (directories with a metadata.yaml, .mcap files)")
    return found


def import_recordings(path: str | Path, tm: TopicMap, out_dir: str | Path, *, progress: bool = True) -> list[Path]:
    """Convert every recording under ``path`` into episode bags in ``out_dir`` (existing ones with the
    same id are kept: a re-run converts only what is new). Returns the episode bag paths."""
    from efm_ros.data.bag import write_episode

    out_dir = Path(out_dir)
    recordings = find_recordings(path)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(recordings), desc="import", unit="bag", dynamic_ncols=True)
    written = []
    try:
        for bag in recordings:
            for ep in recording_episodes(bag, tm):
                target = out_dir / ep.episode_id
                written.append(target if target.exists() else write_episode(out_dir, ep, compression="zstd"))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="efm-ros import-bags", description="Convert a lab's rosbag2 recordings into "
                                "demonstration episode bags (what train-sft --topic-map does first).",
                                epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bags", required=True, help="a recording, or a directory of recordings")
    p.add_argument("--topic-map", required=True, help="YAML / JSON topic map (see below)")
    p.add_argument("--out", required=True, help="episodes directory to write")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    try:
        paths = import_recordings(a.bags, TopicMap.load(a.topic_map), a.out, progress=not a.no_progress)
    except (ValueError, FileNotFoundError) as exc:
        print(f"import-bags: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"episodes": len(paths), "out": str(a.out)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
