"""Policy hot-swap without ROS: find the newest complete model version, load it off the control
thread, hand it to the control loop between two ticks.

Layout the trainer writes (``efm_ros.model.export`` renames a verified temporary directory into
place, so a version appears complete or not at all)::

    watch_dir/
      v0001/  manifest.json policy.onnx reward.onnx instructions.npz
      v0002/  ...
      .v0003.x8k2/   hidden: an export in progress, never looked at

Which version wins. Candidates are the non-hidden subdirectories with a readable
``manifest.json``; they are ordered by :func:`version_key` of the manifest's ``model_version``,
ties broken by the directory name's key. ``version_key`` is a natural sort: digit runs compare as
numbers, so ``v9 < v10 < v0011`` and ``iter_2 < iter_10``. Name versions so that this order is
the training order (the trainer's ``v0001, v0002, ...`` is). The newest candidate that loads
(its manifest verifies: every file's sha256, see :func:`efm_ros.model.manifest.verify_manifest`)
wins. A directory without a manifest (half-written in place) is ignored; one whose manifest does
not verify is refused, counted and reported once, and retried only when its files change.

Versions only move forward through ``watch_dir``: the watcher loads a candidate only if it is newer
than the newest one it has loaded before (its high-water mark), so deleting the newest version
does not roll the robot back, and an explicit :meth:`HotSwapper.request` (an operator's
``model_dir``) stays in force until a newer version appears.

Threads. :class:`ModelSlot` holds the model the control loop uses and at most one that is waiting
to replace it. The control loop calls :meth:`ModelSlot.take` once at the start of every tick and
uses the returned model for the whole tick, so a swap always falls between two ticks. The
background thread of :class:`HotSwapper` does all the slow work (listing, sha256, building the
ONNX Runtime sessions) and only ever calls :meth:`ModelSlot.offer`.
"""
from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from efm_ros.model.manifest import MANIFEST_NAME, ManifestError

M = TypeVar("M")
LogFn = Callable[[str, str], None]
"""log(level, message) with level in "info", "warning", "error" (the node maps it to its logger)"""

_DIGITS = re.compile(r"(\d+)")


def version_key(text: str) -> tuple:
    """Natural sort key: ``"v10"`` -> ``("v", 10, "")``; digit runs compare as numbers."""
    parts = _DIGITS.split(text)
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts))


@dataclass(frozen=True)
class Candidate:
    """A version directory with a readable manifest (not yet verified)."""

    path: Path
    version: str
    """the manifest's model_version"""
    fingerprint: tuple
    """(name, size, mtime_ns) of every file: a changed directory is looked at again"""

    @property
    def key(self) -> tuple:
        return version_key(self.version), version_key(self.path.name)


def _fingerprint(path: Path) -> tuple:
    entries = []
    for p in sorted(path.rglob("*")):
        try:
            st = p.stat()
        except OSError:      # removed while we looked: the next scan sees the new state
            continue
        if p.is_file():
            entries.append((p.relative_to(path).as_posix(), st.st_size, st.st_mtime_ns))
    return tuple(entries)


def list_candidates(watch_dir: str | Path) -> tuple[list[Candidate], list[str]]:
    """(candidates oldest -> newest, names of subdirectories without a readable manifest).

    Hidden directories (``.name``, exports in progress) are skipped silently. Nothing is verified
    here; reading a manifest's ``model_version`` is cheap.
    """
    watch_dir = Path(watch_dir)
    candidates, incomplete = [], []
    if not watch_dir.is_dir():
        return candidates, incomplete
    for sub in sorted(watch_dir.iterdir()):
        if sub.name.startswith(".") or not sub.is_dir():
            continue
        try:
            version = json.loads((sub / MANIFEST_NAME).read_text())["model_version"]
            if not isinstance(version, str) or not version:
                raise ValueError("model_version is not a non-empty string")
        except (OSError, ValueError, KeyError, TypeError):
            incomplete.append(sub.name)
            continue
        candidates.append(Candidate(sub, version, _fingerprint(sub)))
    candidates.sort(key=lambda c: c.key)
    return candidates, incomplete


class ModelSlot(Generic[M]):
    """The model in use and at most one waiting to replace it; swaps only in :meth:`take`."""

    def __init__(self, model: M | None = None):
        self._lock = threading.Lock()
        self._current: M | None = model
        self._pending: M | None = None

    def take(self) -> tuple[M | None, M | None]:
        """The swap point, called by the control loop at the start of a tick.

        Installs the pending model if there is one; returns (model to use for this tick, the
        model it replaced or None). The caller keeps using the returned object for the whole tick.
        """
        with self._lock:
            if self._pending is None:
                return self._current, None
            replaced, self._current, self._pending = self._current, self._pending, None
            return self._current, replaced

    def offer(self, model: M) -> M | None:
        """Queue ``model`` for the next :meth:`take` (replacing, and returning, an untaken one)."""
        with self._lock:
            dropped, self._pending = self._pending, model
            return dropped

    def set(self, model: M | None) -> None:
        """Install ``model`` at once (no tick running: configure / cleanup)."""
        with self._lock:
            self._current, self._pending = model, None

    @property
    def current(self) -> M | None:
        with self._lock:
            return self._current

    @property
    def pending(self) -> M | None:
        with self._lock:
            return self._pending


class HotSwapper(Generic[M]):
    """Loads model versions (initial, requested, found in ``watch_dir``) into a :class:`ModelSlot`.

    loader(path) -> model must verify what it loads and raise :class:`ManifestError` for a model
    that does not verify (``efm_ros.model.runtime.load_model`` does); any other exception counts
    as a load failure. Models need a ``version`` attribute (for messages). Counters in ``counts``:
    ``loaded``, ``rejected`` (manifest does not verify), ``load_failed``.
    """

    def __init__(self, loader: Callable[[Path], M], *, watch_dir: str | Path | None = None,
                 period_s: float = 2.0, log: LogFn | None = None):
        self.loader = loader
        self.watch_dir = Path(watch_dir) if watch_dir else None
        self.period_s = float(period_s)
        self.log: LogFn = log or (lambda level, message: None)
        self.slot: ModelSlot[M] = ModelSlot()
        self.counts: Counter = Counter()
        self.last_error = ""
        self.incomplete: list[str] = []
        """subdirectories of watch_dir without a readable manifest at the last scan"""
        self._incomplete_seen: set[str] = set()   # logged once each
        self._high: tuple | None = None           # key of the newest watch_dir version loaded
        self._refused: dict[Path, tuple] = {}     # path -> fingerprint it was refused with
        self._requests: list[Path] = []
        self._lock = threading.Lock()             # guards _requests
        self._scan_lock = threading.Lock()        # one scan / load at a time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- loading ------------------------------------------------------------------------------
    def _try_load(self, path: Path) -> M | None:
        try:
            model = self.loader(path)
        except ManifestError as exc:
            self.counts["rejected"] += 1
            self.last_error = f"{path}: {exc}"
            self.log("error", f"refused model {path}: manifest does not verify: {exc}")
            return None
        except Exception as exc:  # noqa: BLE001 — any loader failure leaves the current model running
            self.counts["load_failed"] += 1
            self.last_error = f"{path}: {exc!r}"
            self.log("error", f"could not load model {path}: {exc!r}")
            return None
        self.counts["loaded"] += 1
        return model

    def _newest_from_watch_dir(self) -> tuple[Candidate, M] | None:
        """Load the newest candidate above the high-water mark that loads (caller holds _scan_lock)."""
        candidates, self.incomplete = list_candidates(self.watch_dir)
        for name in sorted(set(self.incomplete) - self._incomplete_seen):
            self.log("warning", f"{self.watch_dir / name}: no readable {MANIFEST_NAME} (still being written, or not "
                                f"a model version): ignored until it has one")
        self._incomplete_seen = set(self.incomplete)
        for cand in reversed(candidates):
            if self._high is not None and cand.key <= self._high:
                return None
            if self._refused.get(cand.path) == cand.fingerprint:
                continue                                   # refused before and unchanged since
            model = self._try_load(cand.path)
            if model is None:
                self._refused[cand.path] = cand.fingerprint
                continue
            self._refused.pop(cand.path, None)
            self._high = cand.key
            return cand, model
        return None

    def load_initial(self, model_dir: str | Path | None) -> M:
        """Synchronous first load (lifecycle configure): the newest complete version in
        ``watch_dir`` if there is one, else ``model_dir``. Raises ValueError saying why neither
        could be loaded."""
        with self._scan_lock:
            if self.watch_dir is not None:
                found = self._newest_from_watch_dir()
                if found is not None:
                    self.slot.set(found[1])
                    return found[1]
            if not model_dir:
                where = f"no loadable version in watch_dir {self.watch_dir}" if self.watch_dir else "no watch_dir"
                raise ValueError(f"no model: model_dir is empty and {where}")
            model = self._try_load(Path(model_dir))
            if model is None:
                raise ValueError(f"cannot load model_dir: {self.last_error}")
            self.slot.set(model)
            return model

    # -- background thread --------------------------------------------------------------------
    def request(self, model_dir: str | Path) -> None:
        """Load ``model_dir`` in the background and offer it (an operator's explicit choice)."""
        with self._lock:
            self._requests.append(Path(model_dir))
        self._wake.set()

    def rescan(self) -> None:
        """Scan ``watch_dir`` now instead of at the next period (returns at once)."""
        self._wake.set()

    def poll_once(self) -> M | None:
        """One pass of the background loop: pending requests, then the watch_dir scan.
        Returns the model offered last in this pass (None if none)."""
        offered = None
        with self._lock:
            requests, self._requests = self._requests, []
        with self._scan_lock:
            for path in requests:
                model = self._try_load(path)
                if model is not None:
                    self.slot.offer(model)
                    offered = model
                    self.log("info", f"loaded requested model {getattr(model, 'version', path.name)} from {path}")
            if self.watch_dir is not None:
                found = self._newest_from_watch_dir()
                if found is not None:
                    cand, model = found
                    self.slot.offer(model)
                    offered = model
                    self.log("info", f"loaded new version {cand.version} from {cand.path}; swapping at the next tick")
        return offered

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.period_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.poll_once()
            except Exception as exc:  # noqa: BLE001 — the watcher must outlive e.g. a vanished watch_dir
                self.counts["scan_errors"] += 1
                self.last_error = repr(exc)
                try:
                    self.log("error", f"model watcher: {exc!r}")
                except Exception:  # noqa: BLE001 — a failing log function must not end the thread either
                    pass

    def start(self) -> None:
        """Start the background thread (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the background thread; a load in progress finishes first (up to ``timeout``)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def status(self) -> dict[str, Any]:
        """Key/values for /diagnostics."""
        current, pending = self.slot.current, self.slot.pending
        out = {"model_version": getattr(current, "version", "") if current is not None else "",
               "pending_version": getattr(pending, "version", "") if pending is not None else "",
               "watch_dir": str(self.watch_dir or ""),
               "versions_loaded": self.counts["loaded"], "versions_rejected": self.counts["rejected"],
               "versions_load_failed": self.counts["load_failed"]}
        if self.counts["scan_errors"]:
            out["watch_scan_errors"] = self.counts["scan_errors"]
        if self.incomplete:
            out["watch_incomplete"] = ",".join(self.incomplete)
        if self.last_error:
            out["last_model_error"] = self.last_error
        return out
