"""Message types and topic names of an episode bag, without rclpy.

Bags are written with the pure-Python ``rosbags`` typestore, so writing and reading never need the
rclpy-generated ``efm_ros.msg`` classes. Our own types (``efm_ros/msg/PolicyAction`` and friends)
are registered from the ``.msg`` texts, which are found in

1. the source checkout: ``<repo>/msg/`` (the parent directory of the ``efm_ros`` package), or
2. an installed package: ``<prefix>/share/efm_ros/msg/`` for ``sys.prefix`` and every entry of
   ``AMENT_PREFIX_PATH`` (colcon / a ROS 2 install; rosidl installs the ``.msg`` files there).

The RIHS01 type hash rosbags computes from the text equals rosidl's (ros-from-pip notes §4), so
bags written here carry the same ``type_description_hash`` as a ``ros2 bag record`` would.
"""
from __future__ import annotations

import math

import functools
import os
import sys
from pathlib import Path

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

PACKAGE = "efm_ros"
CUSTOM_MESSAGES = ("StepsToGo", "PolicyAction", "EpisodeEvent", "ImprovementIteration")
"""our interface names; the ROS type of ``X`` is ``efm_ros/msg/X``"""

IMAGE_TYPE = "sensor_msgs/msg/Image"
STRING_TYPE = "std_msgs/msg/String"
BOOL_TYPE = "std_msgs/msg/Bool"
TWIST_STAMPED_TYPE = "geometry_msgs/msg/TwistStamped"
POLICY_ACTION_TYPE = "efm_ros/msg/PolicyAction"
EPISODE_EVENT_TYPE = "efm_ros/msg/EpisodeEvent"
STEPS_TO_GO_TYPE = "efm_ros/msg/StepsToGo"

# Topics of one robot, relative to its namespace ``/<robot>`` (the live graph uses the same names).
IMAGE_TOPIC = "camera/image"
POLICY_ACTION_TOPIC = "policy_action"
INSTRUCTION_TOPIC = "instruction"
EPISODE_EVENT_TOPIC = "episode_event"
STEPS_TO_GO_TOPIC = "steps_to_go"
CMD_VEL_TOPIC = "cmd_vel"
EVAL_SUCCESS_TOPIC = "eval/success"

TOPIC_TYPES: dict[str, str] = {
    IMAGE_TOPIC: IMAGE_TYPE,
    POLICY_ACTION_TOPIC: POLICY_ACTION_TYPE,
    INSTRUCTION_TOPIC: STRING_TYPE,
    EPISODE_EVENT_TOPIC: EPISODE_EVENT_TYPE,
    STEPS_TO_GO_TOPIC: STEPS_TO_GO_TYPE,
    CMD_VEL_TOPIC: TWIST_STAMPED_TYPE,
    EVAL_SUCCESS_TOPIC: BOOL_TYPE,
}
"""relative topic -> message type, for every topic the live logger records"""

# EpisodeEvent.event and EpisodeEvent.outcome constants (msg/EpisodeEvent.msg), by name.
EVENTS = ("start", "success", "timeout", "operator_stop", "reset_done", "fault")
OUTCOMES = ("unknown", "success", "failure")

#: longest episode id / robot / version string an episode event may carry, and longest free text
#: (instruction, termination reason): anyone on the graph can publish a 100 kB string
MAX_ID_CHARS = 256
MAX_TEXT_CHARS = 4096


def valid_stamp(stamp) -> bool:
    """A header stamp rclpy can use: sec >= 0 (``Time.from_msg`` raises on negative seconds) and
    nanosec < 1e9. Anyone on the graph can publish any int32, so every node and the reader check."""
    return stamp.sec >= 0 and 0 <= stamp.nanosec < 1_000_000_000


def event_problem(msg) -> str | None:
    """Why an EpisodeEvent (rclpy or rosbags message) must not be obeyed or trusted, or None:
    event / outcome out of range, an unusable stamp, over-long strings, a non-finite threshold.
    The one check of the nodes (policy), the logger's recorder and the bag reader."""
    if msg.event >= len(EVENTS) or msg.outcome >= len(OUTCOMES):
        return f"event {msg.event} / outcome {msg.outcome} out of range"
    if not valid_stamp(msg.header.stamp):
        return f"stamp {msg.header.stamp.sec}.{msg.header.stamp.nanosec} is not a valid time"
    for name in ("episode_id", "robot", "policy_version", "reward_model_version"):
        if len(getattr(msg, name, "")) > MAX_ID_CHARS:
            return f"{name} longer than {MAX_ID_CHARS} characters"
    for name in ("instruction", "termination_reason"):
        if len(getattr(msg, name, "")) > MAX_TEXT_CHARS:
            return f"{name} longer than {MAX_TEXT_CHARS} characters"
    if not math.isfinite(float(getattr(msg, "success_threshold", 0.0))):
        return "success_threshold is not finite"
    return None


def robot_topic(robot: str, relative: str) -> str:
    """Absolute topic name of ``relative`` (e.g. ``camera/image``) in the namespace of ``robot``."""
    relative = relative.strip("/")
    robot = robot.strip("/")
    return f"/{robot}/{relative}" if robot else f"/{relative}"


def msg_search_dirs() -> list[Path]:
    """Candidate directories holding our ``.msg`` files, in search order."""
    dirs = [Path(__file__).resolve().parents[2] / "msg"]
    prefixes = [sys.prefix] + [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    dirs += [Path(p) / "share" / PACKAGE / "msg" for p in prefixes]
    return dirs


def find_msg_dir() -> Path:
    """The first directory of :func:`msg_search_dirs` that holds all our ``.msg`` files."""
    searched = msg_search_dirs()
    for d in searched:
        if all((d / f"{name}.msg").is_file() for name in CUSTOM_MESSAGES):
            return d
    wanted = ", ".join(f"{n}.msg" for n in CUSTOM_MESSAGES)
    raise FileNotFoundError(
        f"cannot find the efm_ros message definitions ({wanted}); looked in: "
        + ", ".join(str(d) for d in searched)
        + ". Run from a source checkout or install the package (colcon build / pip install)."
    )


def custom_type_texts(msg_dir: Path | None = None) -> dict[str, str]:
    """``{'efm_ros/msg/X': <.msg text>}`` for our interfaces."""
    d = find_msg_dir() if msg_dir is None else Path(msg_dir)
    return {f"{PACKAGE}/msg/{n}": (d / f"{n}.msg").read_text(encoding="utf-8") for n in CUSTOM_MESSAGES}


@functools.lru_cache(maxsize=1)
def typestore() -> Typestore:
    """ROS 2 Kilted standard types + our interfaces (cached; treat as read-only)."""
    store = get_typestore(Stores.ROS2_KILTED)
    for msgtype, text in custom_type_texts().items():
        store.register(get_types_from_msg(text, msgtype))
    return store
