"""One episode in memory: what a bag holds, aligned by control tick.

Layout (T = number of actions = ``num_steps``)::

    frame 0   frame 1   ...   frame T-1   frame T      <- camera/image, T+1 frames
    action 0  action 1  ...   action T-1               <- policy_action, stamp = stamp of frame t

Frame T is the observation after the last action (for demonstrations: the goal frame), so the
steps-to-go label of frame t is T - t (paper §2.1: demonstrations end at their goal).

Demonstrations (``source == "demonstrator"``) carry ``model_version = "demonstrator"`` and
``log_prob = entropy = 0`` on every action: the scripted demonstrator has no action distribution,
so these two values are *unknown*, not "certain". Stage-2 code must not use them (it only ever
trains on policy data anyway).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from efm_ros import __version__ as EFM_ROS_VERSION
from efm_ros.data.interfaces import EVENTS, OUTCOMES
from efm_ros.model.bins import ActionBins

BAG_FORMAT = "efm_ros.episode/1"
"""value of custom_data['bag_format']: bump when the topic layout or its meaning changes"""

DEMONSTRATOR_VERSION = "demonstrator"
"""model_version / policy_version of scripted demonstrations"""
TELEOP_SOURCE = "teleop"
"""custom_data['source'] (and PolicyAction.model_version) of teleoperated demonstrations recorded on the
live graph in record mode: continuous commands without tokens, tokenised with the model's bins at training"""
IMPORTED_SOURCE = "imported"
"""custom_data['source'] of demonstrations converted from a lab's own recordings (efm_ros.data.foreign)"""
CONTINUOUS_SOURCES = (TELEOP_SOURCE, IMPORTED_SOURCE)
"""sources whose actions are continuous commands: train-sft tokenises them with the model's bins"""

DEMO_CLOCK_BASE_NS = 1_767_225_600 * 10**9
"""synthetic clock of recorded demonstrations: 2026-01-01T00:00:00Z ..."""
DEMO_CLOCK_EPISODE_STRIDE_NS = 1_000 * 10**9
"""... + episode index * 1000 s, so every demo bag has fixed, non-overlapping stamps"""

CUSTOM_DATA_KEYS = (
    "bag_format", "robot", "episode_id", "instruction", "family", "seed", "outcome",
    "termination_reason", "steps", "policy_version", "reward_model_version", "control_rate_hz",
    "image_height", "image_width", "efm_ros_version", "source",
)
"""the episode facts stored in metadata.yaml custom_data (all values are strings)"""


@dataclass(frozen=True)
class EventRecord:
    """One ``EpisodeEvent`` message (robot and episode id are the episode's)."""

    stamp_ns: int
    event: str
    """one of :data:`efm_ros.data.interfaces.EVENTS` ("start", "success", "timeout", ...)"""
    outcome: str = "unknown"
    """one of :data:`efm_ros.data.interfaces.OUTCOMES`; set on terminal events"""
    termination_reason: str = ""
    steps: int = 0
    """control steps taken so far in the episode"""
    instruction: str = ""
    policy_version: str = ""
    reward_model_version: str = ""
    success_threshold: float = 0.0
    """s of the success detector that judged the episode (0 with success_k = 0: unknown)"""
    success_k: int = 0

    def __post_init__(self) -> None:
        if self.event not in EVENTS:
            raise ValueError(f"unknown episode event {self.event!r}; expected one of {EVENTS}")
        if self.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {self.outcome!r}; expected one of {OUTCOMES}")


@dataclass(eq=False)
class StepsToGoTrack:
    """``StepsToGo`` messages of the reward node, aligned to the episode's frames (T+1 rows).

    Frames without a message have ``present = False``, NaN values, ``success = False`` and ``""``.
    """

    present: np.ndarray
    """bool (T+1,)"""
    expected_steps: np.ndarray
    """float32 (T+1,): d(o_t, g)"""
    distributions: np.ndarray
    """float32 (T+1, K): p_stg(k | o_t, g); K = 0 when no message had a distribution"""
    rewards: np.ndarray
    """float32 (T+1,): d(o_t-1, g) - d(o_t, g) as published"""
    success: np.ndarray
    """bool (T+1,): the reward node's success test"""
    model_versions: list[str]
    episode_ids: list[str] = field(default_factory=list)
    """the episode id each message carried ("" where none; empty list: not known). The reward node
    stamps its own id on every message: a bag whose StepsToGo ids are not the bag's own episode
    was opened by an event that did not come from the robot's steps_to_go node"""


@dataclass(eq=False)
class Episode:
    """A recorded episode; see the module docstring for the frame/action alignment."""

    robot: str
    episode_id: str
    instruction: str
    frames: np.ndarray
    """uint8 (T+1, H, W, 3), RGB"""
    frame_stamps_ns: np.ndarray
    """int64 (T+1,): header.stamp of each frame"""
    actions: np.ndarray
    """float32 (T, A): normalised action of each control tick"""
    tokens: np.ndarray
    """int32 (T, A): action tokens (:class:`efm_ros.model.bins.ActionBins`)"""
    log_probs: np.ndarray
    """float32 (T,): log pi(a_t | o_t, g); 0 (= unknown) for demonstrations"""
    entropies: np.ndarray
    """float32 (T,): entropy of pi(. | o_t, g); 0 (= unknown) for demonstrations"""
    policy_versions: list[str]
    """(T,) model_version of each action ("demonstrator" for demonstrations)"""
    outcome: str = "unknown"
    """"success" | "failure" | "unknown" (see :data:`efm_ros.data.interfaces.OUTCOMES`)"""
    termination_reason: str = ""
    custom_data: dict[str, str] = field(default_factory=dict)
    """episode facts (:data:`CUSTOM_DATA_KEYS`); the core keys are filled from the fields"""
    events: list[EventRecord] = field(default_factory=list)
    steps_to_go: StepsToGoTrack | None = None
    """present when the bag recorded the reward node's ``steps_to_go`` topic"""
    topic_counts: dict[str, int] = field(default_factory=dict)
    """messages per topic in the bag it was read from (empty for an episode built in memory)"""
    extras: dict[str, list[tuple[int, object]]] = field(default_factory=dict)
    """other topics' decoded messages ``[(log time ns, msg)]`` when read with ``extra_topics=True``"""
    dropped: dict[str, int] = field(default_factory=dict)
    """what the reader left out while aligning (see :func:`efm_ros.data.reader.read_episode`)"""

    def __post_init__(self) -> None:
        self.frames = np.ascontiguousarray(self.frames, dtype=np.uint8)
        self.frame_stamps_ns = np.asarray(self.frame_stamps_ns, dtype=np.int64)
        self.actions = np.asarray(self.actions, dtype=np.float32)
        self.tokens = np.asarray(self.tokens, dtype=np.int32)
        self.log_probs = np.asarray(self.log_probs, dtype=np.float32)
        self.entropies = np.asarray(self.entropies, dtype=np.float32)
        self.policy_versions = [str(v) for v in self.policy_versions]
        t = len(self.actions)
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3:
            raise ValueError(f"frames must be (T+1, H, W, 3), got {self.frames.shape}")
        if self.actions.ndim != 2:
            raise ValueError(f"actions must be (T, A), got {self.actions.shape}")
        expect = {
            "frames": (len(self.frames), t + 1),
            "frame_stamps_ns": (self.frame_stamps_ns.shape, (t + 1,)),
            "tokens": (self.tokens.shape, self.actions.shape),
            "log_probs": (self.log_probs.shape, (t,)),
            "entropies": (self.entropies.shape, (t,)),
            "policy_versions": (len(self.policy_versions), t),
        }
        for name, (got, want) in expect.items():
            if got != want:
                raise ValueError(f"episode {self.episode_id!r}: {name} has {got}, expected {want} (T={t})")
        if t and np.any(np.diff(self.frame_stamps_ns) <= 0):
            raise ValueError(f"episode {self.episode_id!r}: frame stamps must strictly increase")
        if self.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {self.outcome!r}; expected one of {OUTCOMES}")
        self.custom_data = self._complete_custom_data(dict(self.custom_data))

    def _complete_custom_data(self, data: dict[str, str]) -> dict[str, str]:
        core = {
            "bag_format": BAG_FORMAT,
            "robot": self.robot,
            "episode_id": self.episode_id,
            "instruction": self.instruction,
            "outcome": self.outcome,
            "termination_reason": self.termination_reason,
            "steps": str(self.num_steps),
            "image_height": str(self.frames.shape[1]),
            "image_width": str(self.frames.shape[2]),
        }
        fixed = tuple(k for k in core if k != "bag_format")
        for key in fixed:
            if key in data and data[key] != core[key]:
                raise ValueError(
                    f"episode {self.episode_id!r}: custom_data[{key!r}] = {data[key]!r} "
                    f"contradicts the episode ({core[key]!r})"
                )
        for key, value in core.items():
            data.setdefault(key, value)
        data.setdefault("efm_ros_version", EFM_ROS_VERSION)
        bad = {k: v for k, v in data.items() if not (isinstance(k, str) and isinstance(v, str))}
        if bad:
            raise TypeError(f"custom_data must map str -> str; offending items: {bad}")
        return data

    @property
    def num_steps(self) -> int:
        """T: the number of actions (the episode has T + 1 frames)."""
        return len(self.actions)

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the frames."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    @property
    def source(self) -> str:
        """"demonstrator" or "policy" (from custom_data; "" when unknown)."""
        return self.custom_data.get("source", "")

    def steps_to_go_labels(self) -> np.ndarray:
        """int64 (T+1,): T - t for frames t = 0..T (paper §2.1; meaningful for goal-ending episodes)."""
        return np.arange(self.num_steps, -1, -1, dtype=np.int64)

    def action_stamps_ns(self) -> np.ndarray:
        """int64 (T,): header.stamp of each action, i.e. the stamp of its source frame."""
        return self.frame_stamps_ns[:-1]

    def diff(self, other: Episode, ignore: tuple[str, ...] = ()) -> list[str]:
        """Names of the fields that differ from ``other`` (arrays compared exactly, NaN == NaN).

        ``extras`` are compared by topic and message count; ``ignore`` lists fields to skip
        (e.g. ``("topic_counts",)`` when comparing an episode built in memory with one read back).
        """
        out = []
        for f in fields(self):
            if f.name in ignore:
                continue
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name == "steps_to_go":
                same = (a is None) == (b is None) and (a is None or not _track_diff(a, b))
            elif isinstance(a, np.ndarray):
                same = (isinstance(b, np.ndarray) and a.dtype == b.dtype
                        and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))
            elif f.name == "extras":
                same = {k: len(v) for k, v in a.items()} == {k: len(v) for k, v in b.items()}
            else:
                same = a == b
            if not same:
                out.append(f.name)
        return out

    @classmethod
    def from_demonstration(
        cls,
        *,
        robot: str,
        episode_id: str,
        instruction: str,
        frames: np.ndarray,
        actions: np.ndarray,
        control_rate_hz: float,
        start_ns: int,
        action_bins: ActionBins | None = None,
        custom_data: dict[str, str] | None = None,
    ) -> Episode:
        """A successful scripted demonstration on the synthetic clock.

        Frame t is stamped ``start_ns + t * tick`` (tick = 1/control_rate_hz, in integer ns);
        action t carries frame t's stamp. Events: START at frame 0 and SUCCESS at frame T (all
        recorded demonstrations are successful). Tokens come from ``action_bins.encode``;
        log-prob and entropy are 0 (unknown, see the module docstring).
        """
        actions = np.asarray(actions, dtype=np.float32)
        bins = action_bins or ActionBins(dims=actions.shape[-1])
        data = {"termination_reason": "demonstration reached its goal", **(custom_data or {})}
        return cls.from_rollout(robot=robot, episode_id=episode_id, instruction=instruction, frames=frames,
                                actions=actions, tokens=bins.encode(actions), control_rate_hz=control_rate_hz,
                                start_ns=start_ns, policy_version=DEMONSTRATOR_VERSION, end_event="success",
                                outcome="success", custom_data=data)

    @classmethod
    def from_rollout(
        cls,
        *,
        robot: str,
        episode_id: str,
        instruction: str,
        frames: np.ndarray,
        actions: np.ndarray,
        tokens: np.ndarray,
        control_rate_hz: float,
        start_ns: int,
        policy_version: str,
        end_event: str,
        outcome: str,
        log_probs: np.ndarray | None = None,
        entropies: np.ndarray | None = None,
        custom_data: dict[str, str] | None = None,
    ) -> Episode:
        """An episode recorded off the live graph (a demonstration, an evaluation rollout) on the
        synthetic clock: frame t is stamped ``start_ns + t * tick`` (tick = 1/control_rate_hz, in integer
        ns), action t carries frame t's stamp; events START at frame 0 and ``end_event`` (one of
        :data:`efm_ros.data.interfaces.EVENTS`) with ``outcome`` at frame T. Log-prob and entropy
        default to 0 (unknown). ``custom_data["termination_reason"]`` says why it ended."""
        actions = np.asarray(actions, dtype=np.float32)
        t = len(actions)
        tick_ns = int(round(1e9 / control_rate_hz))
        stamps = start_ns + tick_ns * np.arange(t + 1, dtype=np.int64)
        data = {"source": policy_version, "policy_version": policy_version, "reward_model_version": "",
                "control_rate_hz": repr(float(control_rate_hz)), "termination_reason": ""}
        data.update(custom_data or {})
        reason = data["termination_reason"]
        events = [
            EventRecord(int(stamps[0]), "start", "unknown", "", 0, instruction, policy_version, ""),
            EventRecord(int(stamps[-1]), end_event, outcome, reason, t, instruction, policy_version, ""),
        ]
        zeros = np.zeros(t, np.float32)
        return cls(
            robot=robot,
            episode_id=episode_id,
            instruction=instruction,
            frames=frames,
            frame_stamps_ns=stamps,
            actions=actions,
            tokens=np.asarray(tokens).astype(np.int32),
            log_probs=zeros if log_probs is None else np.asarray(log_probs, np.float32),
            entropies=zeros if entropies is None else np.asarray(entropies, np.float32),
            policy_versions=[policy_version] * t,
            outcome=outcome,
            termination_reason=reason,
            custom_data=data,
            events=events,
        )


def _track_diff(a: StepsToGoTrack, b: StepsToGoTrack) -> list[str]:
    out = []
    for f in fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name == "episode_ids" and not (x and y):
            continue   # "not known" on one side (a track built in memory): nothing to compare
        if isinstance(x, np.ndarray):
            same = x.shape == y.shape and np.array_equal(x, y, equal_nan=x.dtype.kind == "f")
        else:
            same = x == y
        if not same:
            out.append(f.name)
    return out
