"""Write one episode as one rosbag2 directory (MCAP storage, metadata.yaml version 9).

Layout of an episodes directory ``DIR``::

    DIR/<episode_id>/<episode_id>.mcap        complete episodes: metadata.yaml written and fsynced
    DIR/<episode_id>/metadata.yaml
    DIR/.staging/<episode_id>/...             episodes being written (or cut by a crash)

A bag is written inside ``DIR/.staging/`` and moved to ``DIR/<episode_id>/`` with one
``os.rename`` only after the MCAP summary and metadata.yaml are written and fsynced, so anything
scanning ``DIR`` (the trainer, :func:`efm_ros.data.reader.list_episodes`) never sees a partial bag.
A failed write (full disk, I/O error, exception in the caller) removes its staging directory and
never touches completed episodes; a live recorder passes ``keep_staging_on_error=True`` so that
what it recorded before the failure stays in ``.staging/`` for :mod:`efm_ros.data.recover`
instead. A process killed mid-episode leaves its staging directory
behind; it has no metadata.yaml, is never listed, and :mod:`efm_ros.data.recover` can salvage it.

One writer per episode id at a time: a writer holds an exclusive ``flock`` on
``DIR/.staging/<episode_id>.lock`` from :meth:`EpisodeBagWriter.open` to the end (the kernel
drops it when the process dies). So a second writer of the same id is refused instead of
corrupting the first, "stale" staging directories are told apart from live ones, and the final
existence check + rename cannot race another writer.

Crash loss is bounded by small MCAP chunks (``chunk_bytes``, default 256 KiB; rosbags' own writer
has a fixed 1 MiB chunk and no option for it, so :class:`_ChunkedMcapWriter` adds one), each flushed
to the OS as soon as it is complete. A size bound alone is a time bound only at a known data rate
(256 KiB is ~1 s of 96x96 frames at 10 Hz, but minutes of small messages), so a live recorder also
sets ``max_unflushed_s``: a chunk is closed once its oldest message has waited that long, checked on
every write and by :meth:`EpisodeBagWriter.flush_if_due`, which the recorder calls periodically so
that the bound holds when messages stop arriving too.

The rosbags ``Writer`` context manager is deliberately not used: it aborts (no metadata.yaml, last
chunk lost) on ``KeyboardInterrupt``/``SystemExit``. :class:`EpisodeBagWriter` has explicit
``open()``/``close()``/``abort()``; a recorder calls ``close()`` from its shutdown path.

Typical use (the live logger node)::

    w = EpisodeBagWriter(DIR, "robot_0_e00042", robot="robot_0")
    w.open()
    try:
        w.add_raw("/robot_0/camera/image", "sensor_msgs/msg/Image", cdr_bytes, receive_time_ns)
        ...
        w.update_custom_data({"outcome": "success", ...})
        final_path = w.close()
    except BaseException:
        w.abort()
        raise
"""
from __future__ import annotations

import errno
import fcntl
import functools
import os
import re
import shutil
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn

import numpy as np
from rosbags.rosbag2 import Writer
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode, StoragePlugin
from rosbags.rosbag2.storage_mcap import McapWriter

from efm_ros.data import interfaces as itf
from efm_ros.data.episode import Episode, EventRecord, StepsToGoTrack

STAGING_DIRNAME = ".staging"
"""subdirectory of an episodes directory where bags are written before they are complete"""
DEFAULT_CHUNK_BYTES = 256 * 1024
"""MCAP chunk size: at most this much (plus one message) is lost when the writer is killed"""

_EPISODE_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class EpisodeWriteError(OSError):
    """Writing an episode bag failed (full disk, I/O error, unusable directory).

    ``errno`` is the underlying error's (``errno.ENOSPC`` for a full disk). The incomplete bag
    has been removed; completed episodes are untouched.
    """


def _locked(method):
    """Serialise calls on one writer (a logger node may write from several executor threads)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


class _ChunkedMcapWriter(McapWriter):
    """rosbags' MCAP storage with a chunk size limit, an age limit and a flush after every chunk."""

    chunk_bytes = DEFAULT_CHUNK_BYTES
    max_unflushed_s: float | None = None
    _pending_since: float | None = None  # monotonic time of the oldest message of the open chunk

    def write(self, connection, timestamp: int, data: bytes | memoryview) -> None:
        super().write(connection, timestamp, data)  # closes the chunk itself at 1 MiB
        if not self.chunk.msgs:  # super() just closed the chunk
            return
        if self._pending_since is None:
            self._pending_since = time.monotonic()
        if self.chunk.bio.tell() >= self.chunk_bytes or self._due(time.monotonic()):
            self.close_chunk()

    def _due(self, now: float) -> bool:
        return (self.max_unflushed_s is not None and self._pending_since is not None
                and now - self._pending_since >= self.max_unflushed_s)

    def flush_if_due(self) -> bool:
        """Close the open chunk if its oldest message is ``max_unflushed_s`` old; True if it did."""
        if self.chunk.msgs and self._due(time.monotonic()):
            self.close_chunk()
            return True
        return False

    def close_chunk(self) -> None:
        super().close_chunk()
        self.bio.flush()  # a complete chunk reaches the OS now, not when the buffer fills
        self._pending_since = None


class _Rosbag2Writer(Writer):
    STORAGE_PLUGINS = {StoragePlugin.MCAP: _ChunkedMcapWriter}


def _check_episode_id(episode_id: str) -> str:
    if not isinstance(episode_id, str) or not _EPISODE_ID.match(episode_id):
        raise ValueError(
            f"invalid episode id {episode_id!r}: use letters, digits, '_', '-', '.', not starting with '.' or '-'"
        )
    return episode_id


def _lock_episode_id(episodes_dir: Path, episode_id: str) -> int:
    """Take the exclusive lock of ``episode_id``; returns its fd. FileExistsError if it is held.

    The lock file is removed by its holder before unlocking, so after locking, check that the
    path still names the locked file (else a finishing writer removed it: retry on a new file).
    """
    path = episodes_dir / STAGING_DIRNAME / f"{episode_id}.lock"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FileExistsError(
                errno.EEXIST, f"episode {episode_id!r} is being written by another writer (lock {str(path)!r})"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def episode_being_written(episodes_dir: str | os.PathLike, episode_id: str) -> bool:
    """Whether a live writer (any process) currently holds the lock of ``episode_id``."""
    path = Path(episodes_dir) / STAGING_DIRNAME / f"{episode_id}.lock"
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _stamp(typestore, stamp_ns: int):
    stamp_ns = int(stamp_ns)
    if stamp_ns < 0:
        raise ValueError(f"stamp must be >= 0 ns, got {stamp_ns}")
    return typestore.types["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)


class EpisodeBagWriter:
    """Incremental writer of one episode bag; see the module docstring for the guarantees.

    Topic arguments may be absolute (``/robot_0/cmd_vel``) or relative to the robot namespace
    (``cmd_vel`` -> ``/<robot>/cmd_vel``). The log time of every message is its ``stamp_ns``
    unless ``log_time_ns`` is given (a live recorder passes its receive time). All methods are
    thread-safe (one lock per writer).
    """

    def __init__(
        self,
        episodes_dir: str | os.PathLike,
        episode_id: str,
        *,
        robot: str,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        compression: str | None = None,
        fsync: bool = True,
        replace_stale_staging: bool = False,
        max_unflushed_s: float | None = None,
        keep_staging_on_error: bool = False,
    ) -> None:
        """
        Args:
            episodes_dir: directory of episode bags; created (with parents) by :meth:`open`.
            episode_id: name of the bag directory; also written into the messages that carry it.
            robot: robot name = namespace of its topics (``/<robot>/camera/image``).
            chunk_bytes: MCAP chunk size (bounds what a crash loses).
            compression: ``None`` or ``"zstd"`` (MCAP chunk compression, transparent to readers
                and to ``ros2 bag``; sim frames shrink ~30x, camera images barely).
            fsync: fsync the bag files and directories before the bag becomes visible.
            replace_stale_staging: delete a leftover ``.staging/<episode_id>`` of an interrupted
                earlier run instead of refusing to start.
            max_unflushed_s: also close (and flush) a chunk once its oldest message is this old
                (``None``: size only). Bounds crash loss in time at any data rate; call
                :meth:`flush_if_due` periodically so it holds when messages stop too.
            keep_staging_on_error: when a write fails after :meth:`open` succeeded (full disk,
                I/O error), keep the staging bag for :mod:`efm_ros.data.recover` instead of
                removing it (the writer still closes its files and releases the episode lock).
        """
        self.episodes_dir = Path(episodes_dir)
        self.episode_id = _check_episode_id(episode_id)
        self.robot = robot.strip("/")
        self.path = self.episodes_dir / episode_id
        """final location of the bag (exists only after :meth:`close`)"""
        self.staging_path = self.episodes_dir / STAGING_DIRNAME / episode_id
        """where the bag is written until it is complete"""
        if chunk_bytes < 1024:
            raise ValueError(f"chunk_bytes must be >= 1024, got {chunk_bytes}")
        if compression not in (None, "zstd"):
            raise ValueError(f"compression must be None or 'zstd', got {compression!r}")
        self.chunk_bytes = int(chunk_bytes)
        if max_unflushed_s is not None and not max_unflushed_s > 0:
            raise ValueError(f"max_unflushed_s must be > 0 or None, got {max_unflushed_s}")
        self.max_unflushed_s = None if max_unflushed_s is None else float(max_unflushed_s)
        self.keep_staging_on_error = keep_staging_on_error
        self.compression = compression
        self.fsync = fsync
        self.replace_stale_staging = replace_stale_staging
        self.custom_data: dict[str, str] = {}
        self.topic_counts: Counter[str] = Counter()
        self._typestore = itf.typestore()
        self._writer: _Rosbag2Writer | None = None
        self._connections: dict[tuple[str, str], object] = {}
        self._state = "new"  # new -> open -> finished -> committed | aborted
        self._lock = threading.RLock()
        self._id_lock_fd: int | None = None

    # ----------------------------------------------------------------------------- life cycle
    @_locked
    def open(self) -> Path:
        """Create the staging bag; returns its directory.

        Raises:
            FileExistsError: the episode already exists in ``episodes_dir`` (never overwritten), or
                a stale staging directory exists and ``replace_stale_staging`` is False.
            NotADirectoryError: ``episodes_dir`` (or a parent) is a file.
            EpisodeWriteError: the directory cannot be created or written.
        """
        if self._state != "new":
            raise RuntimeError(f"episode writer for {self.episode_id!r} is {self._state}, cannot open")
        d = self.episodes_dir
        for parent in (d, *d.parents):
            if parent.exists():
                if not parent.is_dir():
                    raise NotADirectoryError(
                        errno.ENOTDIR, f"episodes directory {str(d)!r} is unusable: {str(parent)!r} is not a directory"
                    )
                break
        if os.path.lexists(self.path):
            raise FileExistsError(
                errno.EEXIST, f"episode {self.episode_id!r} already exists at {str(self.path)!r}; refusing to overwrite"
            )
        try:
            (d / STAGING_DIRNAME).mkdir(parents=True, exist_ok=True)
            self._id_lock_fd = _lock_episode_id(d, self.episode_id)
        except OSError as exc:
            if isinstance(exc, FileExistsError):
                raise
            self._fail(exc, "cannot create the bag")
        if os.path.lexists(self.staging_path):  # no writer holds the lock: left by a dead process
            if not self.replace_stale_staging:
                self._release_id_lock()
                raise FileExistsError(
                    errno.EEXIST,
                    f"an incomplete bag of episode {self.episode_id!r} is left at {str(self.staging_path)!r} "
                    "by an interrupted run; recover it (python -m efm_ros.data.recover) or remove it",
                )
            shutil.rmtree(self.staging_path, ignore_errors=True)
        try:
            writer = _Rosbag2Writer(self.staging_path, version=9, storage_plugin=StoragePlugin.MCAP)
            if self.compression == "zstd":
                writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
            writer.open()
        except OSError as exc:
            self._fail(exc, "cannot create the bag", keep=False)  # nothing recorded yet
        writer.storage.chunk_bytes = self.chunk_bytes
        writer.storage.max_unflushed_s = self.max_unflushed_s
        self._writer = writer
        self._state = "open"
        return self.staging_path

    @_locked
    def finish(self) -> Path:
        """Complete the bag in the staging directory (summary, metadata.yaml, fsync); not visible yet.

        Use with :meth:`commit` when the decision to keep the bag comes later (two-phase); most
        callers use :meth:`close`. Returns the staging directory.
        """
        self._require("open")
        writer = self._writer
        try:
            for key, value in self.custom_data.items():
                writer.set_custom_data(key, value)
            writer.close()
            self._writer = None
            if self.fsync:
                for f in self.staging_path.iterdir():
                    _fsync(f)
                _fsync(self.staging_path, directory=True)
        except OSError as exc:
            self._fail(exc, "cannot finish the bag")
        self._state = "finished"
        return self.staging_path

    @_locked
    def commit(self, into: str | None = None) -> Path:
        """Move the finished bag to ``episodes_dir/<episode_id>`` (one rename); returns that path.
        ``into``: a subdirectory of episodes_dir instead (created if missing), e.g. "discarded"
        for episodes kept apart, which readers of episodes_dir never list.

        Raises:
            FileExistsError: the episode appeared meanwhile (the staging bag is removed).
        """
        self._require("finished")
        if into:
            if not _EPISODE_ID.match(into):
                raise ValueError(f"invalid subdirectory {into!r}: use letters, digits, '_', '-', '.'")
            (self.episodes_dir / into).mkdir(parents=True, exist_ok=True)
            self.path = self.episodes_dir / into / self.episode_id
        if os.path.lexists(self.path):
            self.abort()
            raise FileExistsError(
                errno.EEXIST, f"episode {self.episode_id!r} already exists at {str(self.path)!r}; refusing to overwrite"
            )
        try:
            os.rename(self.staging_path, self.path)
            if self.fsync:
                _fsync(self.path.parent, directory=True)
        except OSError as exc:
            self._fail(exc, "cannot move the finished bag into place")
        self._state = "committed"
        self._release_id_lock()
        return self.path

    @_locked
    def close(self, into: str | None = None) -> Path:
        """:meth:`finish` + :meth:`commit`: the complete bag appears atomically; returns its path."""
        self.finish()
        return self.commit(into)

    @_locked
    def abort(self) -> None:
        """Drop the bag: close files and remove the staging directory. Safe to call at any time."""
        if self._state in ("committed", "aborted"):
            return
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.abort()
            except Exception:  # noqa: BLE001 - best effort (e.g. ENOSPC again while flushing)
                pass
        if self._id_lock_fd is not None:  # never remove a staging bag another writer owns
            shutil.rmtree(self.staging_path, ignore_errors=True)
        self._state = "aborted"
        self._release_id_lock()

    @_locked
    def flush_if_due(self) -> bool:
        """Write the open chunk out if it holds data older than ``max_unflushed_s``; True if it did.

        A no-op unless the bag is open and ``max_unflushed_s`` is set. Thread-safe: a recorder
        calls it from a timer while messages are written from elsewhere.
        """
        if self._state != "open" or self.max_unflushed_s is None:
            return False
        try:
            return self._writer.storage.flush_if_due()
        except OSError as exc:
            self._fail(exc, "cannot write to the bag")

    @property
    def state(self) -> str:
        """"new", "open", "finished", "committed" or "aborted"."""
        return self._state

    @property
    def message_count(self) -> int:
        return sum(self.topic_counts.values())

    # -------------------------------------------------------------------------------- content
    @_locked
    def set_custom_data(self, key: str, value: str) -> None:
        """Set one metadata.yaml ``custom_data`` entry (both strings); written at :meth:`finish`."""
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"custom_data must map str -> str, got {key!r}: {value!r}")
        self.custom_data[key] = value

    def update_custom_data(self, data: Mapping[str, str]) -> None:
        for key, value in data.items():
            self.set_custom_data(key, value)

    @_locked
    def add_raw(
        self,
        topic: str,
        msgtype: str,
        data: bytes | memoryview,
        log_time_ns: int,
        *,
        msgdef: str | None = None,
        rihs01: str | None = None,
    ) -> None:
        """Write an already serialised (CDR) message, e.g. from a ``raw=True`` subscription.

        ``msgdef`` (the rosbag2 ``.msg`` text with its dependencies) and ``rihs01`` are needed
        only for types that are neither ROS 2 Kilted standard types nor ours; when given, they
        are used even for a known type (e.g. to keep an older definition of a recorded type).
        The definition is fixed by the first message of a topic.
        """
        conn = self._connection(topic, msgtype, msgdef, rihs01)
        self._write(conn, topic, int(log_time_ns), data)

    def add_message(self, topic: str, msgtype: str, msg: object, log_time_ns: int) -> None:
        """Serialise a rosbags message object with our typestore and write it."""
        self.add_raw(topic, msgtype, self._typestore.serialize_cdr(msg, msgtype), log_time_ns)

    def add_image(
        self, image: np.ndarray, stamp_ns: int, *, frame_id: str = "camera", log_time_ns: int | None = None
    ) -> None:
        """``camera/image``: an RGB uint8 (H, W, 3) frame as ``sensor_msgs/Image`` (rgb8)."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
        t = self._typestore.types
        h, w = image.shape[:2]
        msg = t[itf.IMAGE_TYPE](
            header=t["std_msgs/msg/Header"](stamp=_stamp(self._typestore, stamp_ns), frame_id=frame_id),
            height=h, width=w, encoding="rgb8", is_bigendian=0, step=w * 3,
            data=np.ascontiguousarray(image).reshape(-1),
        )
        self.add_message(itf.IMAGE_TOPIC, itf.IMAGE_TYPE, msg, stamp_ns if log_time_ns is None else log_time_ns)

    def add_action(
        self,
        stamp_ns: int,
        step: int,
        action: Sequence[float] | np.ndarray,
        tokens: Sequence[int] | np.ndarray,
        *,
        log_prob: float = 0.0,
        entropy: float = 0.0,
        model_version: str = "",
        log_time_ns: int | None = None,
    ) -> None:
        """``policy_action``: ``stamp_ns`` must be the stamp of the source image."""
        t = self._typestore.types
        msg = t[itf.POLICY_ACTION_TYPE](
            header=t["std_msgs/msg/Header"](stamp=_stamp(self._typestore, stamp_ns), frame_id=""),
            episode_id=self.episode_id,
            step=int(step),
            action=np.asarray(action, dtype=np.float32).reshape(-1),
            tokens=np.asarray(tokens, dtype=np.int32).reshape(-1),
            log_prob=float(log_prob),
            entropy=float(entropy),
            model_version=model_version,
        )
        self.add_message(
            itf.POLICY_ACTION_TOPIC, itf.POLICY_ACTION_TYPE, msg, stamp_ns if log_time_ns is None else log_time_ns
        )

    def add_instruction(self, text: str, stamp_ns: int) -> None:
        """``instruction`` (std_msgs/String; no header, so the log time carries the stamp)."""
        msg = self._typestore.types[itf.STRING_TYPE](data=text)
        self.add_message(itf.INSTRUCTION_TOPIC, itf.STRING_TYPE, msg, stamp_ns)

    def add_event(self, record: EventRecord, *, log_time_ns: int | None = None) -> None:
        """``episode_event``: robot and episode id are this writer's."""
        t = self._typestore.types
        msg = t[itf.EPISODE_EVENT_TYPE](
            header=t["std_msgs/msg/Header"](stamp=_stamp(self._typestore, record.stamp_ns), frame_id=""),
            robot=self.robot,
            episode_id=self.episode_id,
            event=itf.EVENTS.index(record.event),
            instruction=record.instruction,
            termination_reason=record.termination_reason,
            outcome=itf.OUTCOMES.index(record.outcome),
            steps=int(record.steps),
            policy_version=record.policy_version,
            reward_model_version=record.reward_model_version,
            success_threshold=float(record.success_threshold),
            success_k=int(record.success_k),
        )
        log_time = record.stamp_ns if log_time_ns is None else log_time_ns
        self.add_message(itf.EPISODE_EVENT_TOPIC, itf.EPISODE_EVENT_TYPE, msg, log_time)

    def add_steps_to_go(
        self,
        stamp_ns: int,
        step: int,
        expected_steps: float,
        distribution: Sequence[float] | np.ndarray = (),
        *,
        reward: float = 0.0,
        success: bool = False,
        model_version: str = "",
        log_time_ns: int | None = None,
    ) -> None:
        """``steps_to_go``: ``stamp_ns`` must be the stamp of the source image."""
        t = self._typestore.types
        msg = t[itf.STEPS_TO_GO_TYPE](
            header=t["std_msgs/msg/Header"](stamp=_stamp(self._typestore, stamp_ns), frame_id=""),
            episode_id=self.episode_id,
            step=int(step),
            expected_steps=float(expected_steps),
            distribution=np.asarray(distribution, dtype=np.float32).reshape(-1),
            reward=float(reward),
            success=bool(success),
            model_version=model_version,
        )
        self.add_message(
            itf.STEPS_TO_GO_TOPIC, itf.STEPS_TO_GO_TYPE, msg, stamp_ns if log_time_ns is None else log_time_ns
        )

    # ------------------------------------------------------------------------------ internals
    def _release_id_lock(self) -> None:
        fd, self._id_lock_fd = self._id_lock_fd, None
        if fd is not None:
            try:
                os.unlink(self.episodes_dir / STAGING_DIRNAME / f"{self.episode_id}.lock")
            except OSError:
                pass
            os.close(fd)  # unlink first, then unlock: see _lock_episode_id

    def _require(self, state: str) -> None:
        if self._state != state:
            raise RuntimeError(f"episode writer for {self.episode_id!r} is {self._state}, expected {state}")

    def _topic(self, topic: str) -> str:
        return topic if topic.startswith("/") else itf.robot_topic(self.robot, topic)

    def _connection(self, topic: str, msgtype: str, msgdef: str | None, rihs01: str | None):
        self._require("open")
        topic = self._topic(topic)
        key = (topic, msgtype)
        conn = self._connections.get(key)
        if conn is None:
            explicit = msgdef is not None and rihs01 is not None
            if not explicit and msgtype not in self._typestore.types:
                raise ValueError(
                    f"unknown message type {msgtype!r} on {topic}: pass msgdef (.msg text with dependencies) and rihs01"
                )
            conn = self._writer.add_connection(
                topic, msgtype,
                typestore=None if explicit else self._typestore,
                msgdef=msgdef if explicit else None,
                rihs01=rihs01 if explicit else None,
            )
            self._connections[key] = conn
        return conn

    def _write(self, conn, topic: str, log_time_ns: int, data) -> None:
        try:
            self._writer.write(conn, log_time_ns, data)
        except OSError as exc:
            self._fail(exc, "cannot write to the bag")
        self.topic_counts[self._topic(topic)] += 1

    def _fail(self, exc: OSError, what: str, *, keep: bool | None = None) -> NoReturn:
        """Abort and raise a clear error naming the episode and directory.

        The staging bag is removed, or kept for recovery when ``keep`` (default:
        ``keep_staging_on_error``) and it holds something.
        """
        keep = self.keep_staging_on_error if keep is None else keep
        if keep and self._state == "open":  # writing or finishing failed: chunks written so far are on disk
            self._keep_for_recovery()
            fate = f"the incomplete bag was kept at {str(self.staging_path)!r} for recover-bag"
        else:
            self.abort()
            fate = "the incomplete bag was removed"
        reason = "no space left on device" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        where = exc.filename or self.staging_path
        raise EpisodeWriteError(
            exc.errno or errno.EIO,
            f"{what} of episode {self.episode_id!r} in {str(self.episodes_dir)!r}: {reason} ({where}); "
            f"{fate}, completed episodes are untouched",
        ) from exc

    def _keep_for_recovery(self) -> None:
        """Close the files without a summary and release the lock, leaving a crashed-like staging bag."""
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.abort()
            except Exception:  # noqa: BLE001 - best effort (e.g. ENOSPC again while flushing)
                pass
        try:  # a metadata.yaml cut by the failure would make recover-bag take the bag for complete
            (self.staging_path / "metadata.yaml").unlink()
        except OSError:
            pass
        self._state = "aborted"
        self._release_id_lock()


def write_episode(
    episodes_dir: str | os.PathLike,
    episode: Episode,
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    compression: str | None = None,
    fsync: bool = True,
    replace_stale_staging: bool = False,
) -> Path:
    """Write ``episode`` as ``episodes_dir/<episode_id>/`` and return that path.

    Messages go in time order: instruction and the START event at frame 0's stamp, then per tick
    the frame, its action and its steps-to-go (when present), the final frame, then the other
    events at their stamps. ``extras`` are written too (topics as recorded). Same errors as
    :meth:`EpisodeBagWriter.open`; on any failure nothing is left behind.
    """
    w = EpisodeBagWriter(
        episodes_dir, episode.episode_id, robot=episode.robot, chunk_bytes=chunk_bytes,
        compression=compression, fsync=fsync, replace_stale_staging=replace_stale_staging,
    )
    w.open()
    try:
        _write_content(w, episode)
        w.update_custom_data(episode.custom_data)
        return w.close()
    except BaseException:
        w.abort()
        raise


def _write_content(w: EpisodeBagWriter, ep: Episode) -> None:
    stamps = [int(s) for s in ep.frame_stamps_ns]
    starts = [e for e in ep.events if e.event == "start"]
    later = sorted((e for e in ep.events if e.event != "start"), key=lambda e: e.stamp_ns)
    w.add_instruction(ep.instruction, stamps[0])
    for e in sorted(starts, key=lambda e: e.stamp_ns):
        w.add_event(e)
    stg: StepsToGoTrack | None = ep.steps_to_go
    k = 0
    for t, stamp in enumerate(stamps):
        while k < len(later) and later[k].stamp_ns < stamp:
            w.add_event(later[k])
            k += 1
        w.add_image(ep.frames[t], stamp)
        if t < ep.num_steps:
            w.add_action(
                stamp, t, ep.actions[t], ep.tokens[t], log_prob=float(ep.log_probs[t]),
                entropy=float(ep.entropies[t]), model_version=ep.policy_versions[t],
            )
        if stg is not None and stg.present[t]:
            w.add_steps_to_go(
                stamp, t, float(stg.expected_steps[t]), stg.distributions[t] if stg.distributions.shape[1] else (),
                reward=float(stg.rewards[t]), success=bool(stg.success[t]), model_version=stg.model_versions[t],
            )
    for e in later[k:]:
        w.add_event(e)
    for topic, messages in ep.extras.items():
        for log_time, msg in messages:
            w.add_message(topic, msg.__msgtype__, msg, log_time)
