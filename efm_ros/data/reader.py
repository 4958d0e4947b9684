"""Read episode bags back into :class:`~efm_ros.data.episode.Episode` objects.

Decoding uses the message definitions embedded in each bag, as rosbags' ``AnyReader`` does, so it
needs neither rclpy nor our ``.msg`` files: a bag recorded on a robot with an older interface
version still reads. Unlike ``AnyReader``, which builds (and compiles deserialisers for) a fresh
typestore for every bag, the typestore is cached per distinct set of embedded definitions: reading
many episodes is ~3x faster (13 vs 46 ms for a 40-step demo). Embedded RIHS01 hashes are checked
against the definitions, as ``AnyReader`` does; a type without an embedded definition falls back
to ROS 2 Kilted + our interfaces. Topics are found in the robot's namespace (``custom_data['robot']``) or, for a bag
without that key, by their relative name (``.../camera/image``).

Alignment (the trainer relies on it): every ``PolicyAction`` is matched to the camera frame with
the same ``header.stamp``; the episode keeps the frames actions were computed from plus the next
frame after the last action (the final observation). Consequences, all counted in
``Episode.dropped`` (empty for a clean bag such as a demonstration):

* an action whose stamp matches no frame (the logger lost the image): by default an
  :class:`EpisodeBagError` (``unmatched_actions="error"``); with ``"drop"`` it is left out and
  counted as ``actions_without_frame``. Dropping breaks the tick contiguity around it, which is
  why it is not the default;
* frames no action was computed from (before the first action, or skipped by a slow policy):
  left out, ``frames_unused``;
* a last action with no later frame (recording stopped before the next image): left out,
  ``actions_without_next_frame``, because its outcome was never observed;
* steps-to-go messages whose stamp matches no kept frame: ``steps_to_go_unmatched``;
* messages anyone on the graph could have published wrongly never cost the episode: camera
  frames with an unsupported encoding, a size that does not fit their data, an invalid stamp, a
  size unlike the episode's other frames, or an earlier frame's stamp (the first recorded is
  kept) are skipped as ``frames_bad_encoding`` / ``frames_bad_size`` / ``frames_bad_stamp`` /
  ``frames_other_size`` / ``frames_duplicate_stamp``; episode events that
  :func:`efm_ros.data.interfaces.event_problem` refuses (out of range, bad stamp, over-long
  strings) as ``events_invalid``.

When alignment changed the number of actions, ``custom_data['steps']`` is set to the kept count and
the recorded value is kept as ``custom_data['steps_recorded']``.
"""
from __future__ import annotations

import functools
import os
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from ruamel.yaml import YAML

from efm_ros.data import interfaces as itf
from efm_ros.data.bag import STAGING_DIRNAME
from efm_ros.data.episode import Episode, EventRecord, StepsToGoTrack
from efm_ros.model.bins import ActionBins

_TERMINAL_EVENTS = ("success", "timeout", "operator_stop", "fault")
_EPISODE_TOPICS = (
    itf.IMAGE_TOPIC, itf.POLICY_ACTION_TOPIC, itf.INSTRUCTION_TOPIC, itf.EPISODE_EVENT_TOPIC, itf.STEPS_TO_GO_TOPIC,
)
"""topics decoded into Episode fields; every other topic is an extra"""


class EpisodeBagError(ValueError):
    """A bag is missing, truncated, corrupt or not an episode bag. The message names the file."""


def _load_yaml(text: str):
    """Safe YAML load; PyYAML's libyaml loader when present (~50x faster than pure Python)."""
    try:
        import yaml

        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except ImportError:
        return YAML(typ="safe").load(text)


def read_metadata(bag_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``rosbag2_bagfile_information`` mapping of ``bag_dir/metadata.yaml``."""
    path = Path(bag_dir) / "metadata.yaml"
    if not Path(bag_dir).is_dir():
        raise EpisodeBagError(f"{bag_dir}: not a bag directory")
    if not path.is_file():
        raise EpisodeBagError(
            f"{path}: missing; not a complete bag (a bag cut by a crash has no metadata.yaml)"
        )
    try:
        info = _load_yaml(path.read_text(encoding="utf-8"))["rosbag2_bagfile_information"]
        if not isinstance(info, dict):
            raise TypeError("rosbag2_bagfile_information is not a mapping")
    except Exception as exc:  # noqa: BLE001 - OSError, YAML errors (two libraries), KeyError, TypeError
        raise EpisodeBagError(f"{path}: unreadable bag metadata: {exc}") from exc
    return info


def bag_files(bag_dir: str | os.PathLike, info: dict[str, Any] | None = None) -> list[Path]:
    """The storage files metadata.yaml lists (``info``: its already-read content)."""
    info = read_metadata(bag_dir) if info is None else info
    return [Path(bag_dir) / Path(p).name for p in info.get("relative_file_paths") or []]


def list_episodes(episodes_dir: str | os.PathLike) -> list[Path]:
    """Complete episode bags in ``episodes_dir`` (directories with a metadata.yaml), sorted by name.

    The ``.staging`` directory (bags being written or cut by a crash) and other hidden entries are
    never listed.
    """
    d = Path(episodes_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"episodes directory {str(d)!r} does not exist or is not a directory")
    return sorted(
        p for p in d.iterdir()
        if not p.name.startswith(".") and p.name != STAGING_DIRNAME and p.is_dir() and (p / "metadata.yaml").is_file()
    )


def iter_episodes(
    episodes_dir: str | os.PathLike,
    *,
    progress: bool = False,
    skip_corrupt: bool = False,
    desc: str = "reading episodes",
    **read_kwargs: Any,
) -> Iterator[Episode]:
    """Yield :func:`read_episode` of every bag of :func:`list_episodes`, in order.

    Args:
        progress: show a tqdm progress bar (on stderr).
        skip_corrupt: warn about and skip unreadable bags instead of raising :class:`EpisodeBagError`.
        read_kwargs: passed to :func:`read_episode`.
    """
    paths = list_episodes(episodes_dir)
    if progress:
        from tqdm import tqdm

        paths = tqdm(paths, desc=desc, unit="ep", dynamic_ncols=True)
    for path in paths:
        try:
            yield read_episode(path, **read_kwargs)
        except EpisodeBagError as exc:
            if not skip_corrupt:
                raise
            warnings.warn(f"skipping unreadable episode: {exc}", RuntimeWarning, stacklevel=2)


def read_episode(
    bag_dir: str | os.PathLike,
    *,
    extra_topics: bool = False,
    unmatched_actions: Literal["error", "drop"] = "error",
) -> Episode:
    """Read one episode bag; see the module docstring for the alignment rules.

    Args:
        extra_topics: also decode topics that are not part of the episode layout (``cmd_vel``,
            ``eval/success``, ...) into ``Episode.extras``; their counts are always in
            ``Episode.topic_counts``.
        unmatched_actions: ``"error"`` or ``"drop"`` for actions without a frame of the same stamp.

    Raises:
        EpisodeBagError: missing/corrupt metadata.yaml, truncated or corrupt MCAP, missing camera
            topic, inconsistent content. The message names the offending file.
    """
    from rosbags.rosbag2 import Reader

    if unmatched_actions not in ("error", "drop"):
        raise ValueError(f"unmatched_actions must be 'error' or 'drop', got {unmatched_actions!r}")
    bag_dir = Path(bag_dir)
    info = read_metadata(bag_dir)
    custom = {str(k): str(v) for k, v in (info.get("custom_data") or {}).items()}
    files = ", ".join(str(p) for p in bag_files(bag_dir, info)) or str(bag_dir)
    raw: dict[str, list[tuple[int, object]]] = {}
    try:
        with Reader(bag_dir) as reader:
            store = embedded_typestore(tuple(sorted({
                (c.msgtype, c.msgdef.format.name, c.msgdef.data, c.digest) for c in reader.connections
            })))
            topics = _resolve_topics({c.topic: c.msgtype for c in reader.connections}, custom.get("robot"))
            wanted = {topics[rel] for rel in _EPISODE_TOPICS if rel in topics}
            counts: dict[str, int] = {}
            for conn, log_time, data in reader.messages():
                counts[conn.topic] = counts.get(conn.topic, 0) + 1
                if conn.topic in wanted or extra_topics:
                    raw.setdefault(conn.topic, []).append((log_time, store.deserialize_cdr(data, conn.msgtype)))
    except EpisodeBagError:
        raise
    except Exception as exc:  # noqa: BLE001 - rosbags raises many types for damaged files
        raise EpisodeBagError(f"{files}: corrupt or truncated bag ({type(exc).__name__}: {exc})") from exc
    try:
        return _assemble(bag_dir, custom, topics, raw, counts, unmatched_actions)
    except (ValueError, TypeError) as exc:
        if isinstance(exc, EpisodeBagError):
            raise
        raise EpisodeBagError(f"{bag_dir}: inconsistent episode bag: {exc}") from exc


def _tokens(acts: list, dims: int) -> np.ndarray:
    """(T, A) action tokens. Continuous commands without tokens (teleoperated demonstrations, which
    send none) are encoded with the default bins; training re-encodes them with the model's."""
    if acts and all(len(m.tokens) == 0 for m in acts):
        actions = np.array([m.action for m in acts], np.float32).reshape(len(acts), dims)
        return ActionBins(dims=dims).encode(actions).astype(np.int32)
    return np.array([m.tokens for m in acts], np.int32).reshape(len(acts), -1 if acts else dims)


@functools.lru_cache(maxsize=64)
def embedded_typestore(definitions: tuple[tuple[str, str, str, str], ...]):
    """Typestore for a bag's ``(msgtype, "MSG" | "IDL" | "NONE", definition, RIHS01 or "")`` set (cached).

    Mirrors ``rosbags.highlevel.AnyReader``: ``.msg`` or IDL definitions embedded in the bag,
    hashes verified; types without a definition come from ROS 2 Kilted + our interfaces.
    """
    from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore

    types: dict = {}
    fallback = []
    for msgtype, fmt, data, _ in definitions:
        if fmt == "MSG":
            types.update(get_types_from_msg(data, msgtype))
        elif fmt == "IDL":
            sep = "=" * 80 + "\n"
            parts = [p.split("\n", 1)[1] for p in data.split(sep)[1:]] if data.startswith(sep + "IDL: ") else [data]
            for idl in parts:
                types.update(get_types_from_idl(idl))
        else:
            fallback.append(msgtype)
    store = get_typestore(Stores.EMPTY)
    if fallback:
        known = itf.typestore().fielddefs
        missing = [t for t in fallback if t not in known]
        if missing:
            raise EpisodeBagError(f"no definition for message type(s) {missing} in the bag or in ROS 2 Kilted")
        types = {**known, **types}
    store.register(types)
    for msgtype, fmt, _, digest in definitions:
        if digest and fmt in ("MSG", "IDL") and store.hash_rihs01(msgtype) != digest:
            raise EpisodeBagError(f"type {msgtype}: embedded definition does not match its hash {digest}")
    return store


def _resolve_topics(available: dict[str, str], robot: str | None) -> dict[str, str]:
    """relative topic -> absolute topic in this bag, for the episode topics present."""
    out = {}
    for rel, msgtype in itf.TOPIC_TYPES.items():
        if robot is not None and itf.robot_topic(robot, rel) in available:
            out[rel] = itf.robot_topic(robot, rel)
            continue
        matches = [t for t, ty in available.items() if (t == "/" + rel or t.endswith("/" + rel)) and ty == msgtype]
        if len(matches) == 1:
            out[rel] = matches[0]
    return out


def _stamp_ns(msg) -> int:
    return int(msg.header.stamp.sec) * 10**9 + int(msg.header.stamp.nanosec)


def _image_problem(msg) -> str | None:
    """Why a recorded camera frame cannot be used (a counter key), or None."""
    if msg.encoding.lower() not in ("rgb8", "bgr8"):
        return "frames_bad_encoding"
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0 or step < w * 3 or len(msg.data) < h * step:
        return "frames_bad_size"
    if not itf.valid_stamp(msg.header.stamp):
        return "frames_bad_stamp"
    return None


def _image(msg, where: str) -> np.ndarray:
    problem = _image_problem(msg)
    if problem is not None:
        raise EpisodeBagError(f"{where}: unusable camera frame ({problem})")
    enc = msg.encoding.lower()
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    buf = np.asarray(msg.data, dtype=np.uint8)
    img = buf[: h * step].reshape(h, step)[:, : w * 3].reshape(h, w, 3)
    return img[..., ::-1] if enc == "bgr8" else img


def _valid_frames(recorded: list, dropped: dict[str, int]) -> list[tuple[int, object]]:
    """The usable camera frames, sorted by stamp. One bad message never costs the episode: frames
    that cannot be decoded, have an invalid stamp, a size unlike the episode's, or repeat an
    earlier frame's stamp (anyone on the graph can publish on camera/image) are skipped and
    counted in ``dropped``; the first recorded frame of each stamp is kept."""
    def drop(key):
        dropped[key] = dropped.get(key, 0) + 1

    good = []
    for log_time, m in recorded:                 # recorded = (log time, message), in log order
        problem = _image_problem(m)
        if problem:
            drop(problem)
        else:
            good.append((log_time, m))
    sizes = Counter((int(m.height), int(m.width)) for _, m in good)
    size = sizes.most_common(1)[0][0] if sizes else None
    out, seen = [], set()
    for _, m in sorted(good, key=lambda x: x[0]):
        stamp = _stamp_ns(m)
        if (int(m.height), int(m.width)) != size:
            drop("frames_other_size")
        elif stamp in seen:
            drop("frames_duplicate_stamp")
        else:
            seen.add(stamp)
            out.append((stamp, m))
    return sorted(out, key=lambda x: x[0])


def _assemble(bag_dir, custom, topics, raw, counts, unmatched_actions) -> Episode:
    where = str(bag_dir)
    if itf.IMAGE_TOPIC not in topics:
        raise EpisodeBagError(f"{where}: no {itf.IMAGE_TOPIC} topic; not an episode bag (topics: {sorted(counts)})")
    dropped: dict[str, int] = {}
    frames = _valid_frames(raw.pop(topics[itf.IMAGE_TOPIC], []), dropped)
    if not frames:
        raise EpisodeBagError(f"{where}: no usable camera frames ({dropped or 'none recorded'})")
    stamps = [s for s, _ in frames]
    index = {s: i for i, s in enumerate(stamps)}

    # actions -> frame index
    actions = sorted(((_stamp_ns(m), m) for _, m in raw.pop(topics.get(itf.POLICY_ACTION_TOPIC), [])),
                     key=lambda x: (x[0], x[1].step))
    matched = [(index[s], m) for s, m in actions if s in index]
    if len(matched) != len(actions):
        missing = [(m.step, s) for s, m in actions if s not in index]
        if unmatched_actions == "error":
            raise EpisodeBagError(
                f"{where}: {len(missing)} policy action(s) have no camera frame with the same stamp "
                f"(first: step {missing[0][0]}, stamp {missing[0][1]} ns); "
                "read with unmatched_actions='drop' to skip them"
            )
        dropped["actions_without_frame"] = len(missing)
    frame_ids = [i for i, _ in matched]
    if len(set(frame_ids)) != len(frame_ids):
        raise EpisodeBagError(f"{where}: two policy actions were computed from the same camera frame")
    if matched and matched[-1][0] == len(frames) - 1:
        matched.pop()
        dropped["actions_without_next_frame"] = 1
    keep = [i for i, _ in matched] + ([matched[-1][0] + 1] if matched else [0])
    if len(frames) - len(keep):
        dropped["frames_unused"] = len(frames) - len(keep)
    kept_stamps = np.array([stamps[i] for i in keep], dtype=np.int64)
    images = np.stack([_image(frames[i][1], where) for i in keep])
    acts = [m for _, m in matched]
    dims = max((len(m.action) for m in acts), default=2)

    # steps-to-go aligned to kept frames
    track = None
    if itf.STEPS_TO_GO_TOPIC in topics:
        msgs = [m for _, m in raw.pop(topics[itf.STEPS_TO_GO_TOPIC], [])]
        row = {int(s): r for r, s in enumerate(kept_stamps)}
        n, k = len(keep), max((len(m.distribution) for m in msgs), default=0)
        track = StepsToGoTrack(
            present=np.zeros(n, bool), expected_steps=np.full(n, np.nan, np.float32),
            distributions=np.full((n, k), np.nan, np.float32), rewards=np.full(n, np.nan, np.float32),
            success=np.zeros(n, bool), model_versions=[""] * n, episode_ids=[""] * n,
        )
        unmatched = 0
        for m in msgs:
            r = row.get(_stamp_ns(m))
            if r is None:
                unmatched += 1
                continue
            track.present[r] = True
            track.expected_steps[r] = m.expected_steps
            track.distributions[r, : len(m.distribution)] = m.distribution
            track.rewards[r] = m.reward
            track.success[r] = bool(m.success)
            track.model_versions[r] = m.model_version
            track.episode_ids[r] = m.episode_id
        if unmatched:
            dropped["steps_to_go_unmatched"] = unmatched

    # events and instruction
    events = []
    for _, m in sorted(raw.pop(topics.get(itf.EPISODE_EVENT_TOPIC), []), key=lambda x: _stamp_ns(x[1])):
        if itf.event_problem(m):
            dropped["events_invalid"] = dropped.get("events_invalid", 0) + 1  # never trusted, never fatal
            continue
        events.append(EventRecord(
            _stamp_ns(m), itf.EVENTS[m.event], itf.OUTCOMES[m.outcome], m.termination_reason, int(m.steps),
            m.instruction, m.policy_version, m.reward_model_version,
            float(getattr(m, "success_threshold", 0.0)), int(getattr(m, "success_k", 0)),  # absent in older bags
        ))
    terminal = [e for e in events if e.event in _TERMINAL_EVENTS]
    instr_msgs = raw.pop(topics.get(itf.INSTRUCTION_TOPIC), [])
    instruction = custom.get("instruction") or (instr_msgs[0][1].data if instr_msgs else "") or next(
        (e.instruction for e in events if e.instruction), "")
    outcome = custom.get("outcome") or (terminal[-1].outcome if terminal else "unknown")
    reason = custom.get("termination_reason") or (terminal[-1].termination_reason if terminal else "")
    robot = custom.get("robot") or topics[itf.IMAGE_TOPIC].rsplit("/" + itf.IMAGE_TOPIC, 1)[0].strip("/")
    if "steps" in custom and custom["steps"] != str(len(acts)):
        custom["steps_recorded"], custom["steps"] = custom["steps"], str(len(acts))

    return Episode(
        robot=robot,
        episode_id=custom.get("episode_id") or bag_dir.name,
        instruction=instruction,
        frames=images,
        frame_stamps_ns=kept_stamps,
        actions=np.array([m.action for m in acts], np.float32).reshape(len(acts), dims),
        tokens=_tokens(acts, dims),
        log_probs=np.array([m.log_prob for m in acts], np.float32),
        entropies=np.array([m.entropy for m in acts], np.float32),
        policy_versions=[m.model_version for m in acts],
        outcome=outcome,
        termination_reason=reason,
        custom_data=custom,
        events=events,
        steps_to_go=track,
        topic_counts=counts,
        extras=raw if raw else {},
        dropped=dropped,
    )


def bag_summary(bag_dir: str | os.PathLike) -> dict[str, Any]:
    """What ``efm-ros read-bag`` prints: storage, duration, topics (type, count), custom data, sizes.

    Reads metadata.yaml and the MCAP summary only (no message decoding).
    """
    bag_dir = Path(bag_dir)
    info = read_metadata(bag_dir)
    topics = []
    for t in info.get("topics_with_message_count") or []:
        md = t.get("topic_metadata", {})
        topics.append({
            "name": md.get("name"), "type": md.get("type"), "count": int(t.get("message_count", 0)),
            "type_description_hash": md.get("type_description_hash", ""),
        })
    files = bag_files(bag_dir, info)
    return {
        "path": str(bag_dir),
        "version": info.get("version"),
        "storage": info.get("storage_identifier"),
        "files": [{"path": str(p), "bytes": p.stat().st_size if p.exists() else None} for p in files],
        "message_count": int(info.get("message_count", 0)),
        "starting_time_ns": int((info.get("starting_time") or {}).get("nanoseconds_since_epoch", 0)),
        "duration_ns": int((info.get("duration") or {}).get("nanoseconds", 0)),
        "topics": topics,
        "custom_data": {str(k): str(v) for k, v in (info.get("custom_data") or {}).items()},
    }
