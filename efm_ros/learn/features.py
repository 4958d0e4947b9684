"""Frozen-backbone features of recorded episodes, computed once and cached on disk.

The EFM's vision backbone is frozen (``EFMConfig.freeze_backbone``; paper §2.2 freezes the ViT in
Stage 2, and our Stage 1 trains only the head too), so a frame's features never change during
training. Stage 1 therefore runs the backbone once per frame and trains the head on the stored
maps, ~50x cheaper per step than running the backbone inside the training loop.

What is cached, per episode set and backbone:

    CACHE/<key>/features.npy   float32 (F, C, h, w): backbone_features of every frame of every
                               episode, episodes back to back (episode e = rows starts[e] ..
                               starts[e] + lengths[e], i.e. its T+1 frames 0..T)
    CACHE/<key>/index.npz      episode_ids, instructions, starts, lengths (T), tokens (ΣT, D)
                               action tokens, token_starts: everything the trainer needs, so a cache
                               hit decodes no bag
    CACHE/<key>/meta.json      data_hash, backbone_key, control_rate_hz, shapes, seconds

Why train and serve stay identical: the features are produced by :class:`OnnxFeatureExtractor`,
i.e. by the ONNX export of ``EFM.backbone_features`` (uint8 frame -> normalisation -> backbone)
run by ONNX Runtime, the same sub-graph and engine that begin the exported ``policy.onnx`` /
``reward.onnx`` on the robot (they agree with eager torch to ~1e-4). The head therefore learns on
the numbers the served graph computes before its head, not on a re-implementation.

The key is sha256(data_hash, backbone_key): ``data_hash`` hashes every byte of every episode bag
(with its id), and ``backbone_key`` hashes the backbone's config, its weights (so a randomly
initialised backbone of another seed is another cache) and the ONNX Runtime version. A cache is
written to a temporary directory and renamed into place, so a crashed run never leaves a partial
one. Stage 2 reuses :func:`extract_features` / :func:`frame_pairs` on practice episodes.

Frame pairs (the EFM sees the current and the previous frame, paper §1): the previous frame of
frame t is frame t-1, and frame 0's previous frame is frame 0 itself (:func:`prev_frame_index`);
the runtime feeds the first tick of an episode the same way.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from efm_ros.learn.symmetry import symmetry_matrix, transform_frames

FEATURES_FILE = "features.npy"
INDEX_FILE = "index.npz"
META_FILE = "meta.json"
EXTRACT_BATCH = 256
"""frames per ONNX Runtime call: large enough to amortise the call, small enough for the cache"""


def prev_frame_index(t):
    """Index of the frame paired with frame ``t`` as "previous": t - 1, and 0 for t = 0."""
    return np.maximum(np.asarray(t) - 1, 0)


def frame_pairs(starts: np.ndarray, lengths: np.ndarray, include_last: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows of (current frame, previous frame) for every step of every episode.

    starts (E,) row of frame 0 of each episode, lengths (E,) its T. ``include_last`` adds frame
    T (the final/goal frame; it has no action). Returns (cur_rows, prev_rows, episode (E index),
    t) int64 arrays of equal length, episodes in order, t ascending within each.
    """
    starts, lengths = np.asarray(starts, np.int64), np.asarray(lengths, np.int64)
    per = lengths + (1 if include_last else 0)
    episode = np.repeat(np.arange(len(starts)), per)
    offsets = np.concatenate([[0], np.cumsum(per)[:-1]]) if len(per) else np.zeros(0, np.int64)
    t = np.arange(per.sum()) - np.repeat(offsets, per)
    cur = starts[episode] + t
    prev = starts[episode] + prev_frame_index(t)
    return cur, prev, episode, t


def shift_frames(frames: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """uint8 frames (N, S, S, 3) translated by (dx, dy) pixels (right, down), the border pixels
    repeated into the gap: the random shift of DrQ / RAD (Kostrikov et al. 2020; Laskin et al. 2020),
    here one shift for a whole episode so that a frame and its previous frame move together."""
    p = max(abs(int(dx)), abs(int(dy)))
    if p == 0:
        return frames
    size_y, size_x = frames.shape[1:3]
    padded = np.pad(frames, ((0, 0), (p, p), (p, p), (0, 0)), mode="edge")
    return padded[:, p - dy:p - dy + size_y, p - dx:p - dx + size_x]


def view_shift(episode_id: str, view: int, pixels: int) -> tuple[int, int]:
    """The (dx, dy) of an episode in shifted view ``view`` >= 1: uniform in [-pixels, pixels]^2,
    fixed by (episode id, view, pixels), so a cache of that view is reproducible."""
    seed = int.from_bytes(hashlib.sha256(f"{episode_id}:{view}:{pixels}".encode()).digest()[:8], "little")
    dx, dy = np.random.default_rng(seed).integers(-pixels, pixels + 1, size=2)
    return int(dx), int(dy)


def hash_episodes(paths: Sequence[Path]) -> str:
    """sha256 of an episode set: every bag's name and the bytes of its files, in sorted order."""
    h = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        h.update(path.name.encode() + b"\0")
        for f in sorted(path.iterdir()):
            if f.is_file():
                h.update(f.name.encode() + b"\0")
                h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def backbone_key(model) -> str:
    """sha256 of what determines the features: backbone config fields, weights, ORT version."""
    import onnxruntime

    c = model.config
    h = hashlib.sha256(json.dumps({"backbone": c.backbone, "pretrained": c.pretrained,
                                   "feature_stride": c.feature_stride, "image_size": c.image_size,
                                   "onnxruntime": onnxruntime.__version__}, sort_keys=True).encode())
    for name, tensor in sorted(model.backbone.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def extract_features(extractor, frames: np.ndarray, batch: int = EXTRACT_BATCH) -> np.ndarray:
    """Backbone features of uint8 frames (N, S, S, 3) -> float32 (N, C, h, w), in batches."""
    out = [extractor(frames[i:i + batch]) for i in range(0, len(frames), batch)]
    return np.concatenate(out) if out else np.zeros((0, *extractor.feature_shape), np.float32)


@dataclass
class EpisodeFeatures:
    """Cached features of an episode set plus the per-episode facts training needs."""

    features: np.ndarray
    """float32 (F, C, h, w), all frames of all episodes back to back"""
    episode_ids: list[str]
    instructions: list[str]
    """the instruction of each episode"""
    starts: np.ndarray
    """int64 (E,): row of each episode's frame 0 in ``features``"""
    lengths: np.ndarray
    """int64 (E,): T of each episode (T actions, T + 1 frames)"""
    tokens: np.ndarray
    """int64 (ΣT, D): action tokens, episode e at rows token_starts[e] .. + lengths[e]"""
    token_starts: np.ndarray
    """int64 (E,)"""
    meta: dict
    """meta.json: data_hash, backbone_key, control_rate_hz, ..."""

    def __len__(self) -> int:
        return len(self.episode_ids)


def _load(path: Path) -> EpisodeFeatures:
    with np.load(path / INDEX_FILE, allow_pickle=False) as z:
        index = {k: z[k] for k in z.files}
    return EpisodeFeatures(
        features=np.load(path / FEATURES_FILE), episode_ids=index["episode_ids"].tolist(),
        instructions=index["instructions"].tolist(), starts=index["starts"].astype(np.int64),
        lengths=index["lengths"].astype(np.int64), tokens=index["tokens"].astype(np.int64),
        token_starts=index["token_starts"].astype(np.int64), meta=json.loads((path / META_FILE).read_text()))


def episode_rate(ep) -> float | None:
    """The control rate of an episode: its ``control_rate_hz`` fact, else (live recordings, e.g. record
    mode) 1 / the median interval between its actions' stamps, to 0.1 Hz; None if it cannot say."""
    if "control_rate_hz" in ep.custom_data:
        return float(ep.custom_data["control_rate_hz"])
    stamps = ep.action_stamps_ns()
    if len(stamps) < 2:
        return None
    return round(1e9 / float(np.median(np.diff(stamps))), 1)


@dataclass(frozen=True)
class ShiftedView:
    """View ``view`` >= 1 of ``SFTConfig.shift_views``: every episode translated by
    :func:`view_shift` (at most ``pixels``), the border repeated (:func:`shift_frames`)."""

    view: int
    pixels: int

    def __post_init__(self) -> None:
        if self.view < 1 or self.pixels < 1:
            raise ValueError(f"a shifted view needs view >= 1 and pixels > 0, got view {self.view}, {self.pixels} px")

    @property
    def key(self) -> str:
        """what the view adds to its cache key"""
        return f":shift{self.pixels}:view{self.view}"

    @property
    def meta(self) -> dict:
        return {"shift": {"view": self.view, "pixels": self.pixels}}

    @property
    def label(self) -> str:
        return f"shifted view {self.view}"

    def __call__(self, episode_id: str, frames: np.ndarray) -> np.ndarray:
        return shift_frames(frames, *view_shift(episode_id, self.view, self.pixels))


@dataclass(frozen=True)
class SymmetricView:
    """Every episode mirrored or turned by a symmetry of the view (``SFTConfig.symmetries``,
    :func:`efm_ros.learn.symmetry.transform_frames`)."""

    name: str

    def __post_init__(self) -> None:
        symmetry_matrix(self.name)                                   # an unknown name fails here

    @property
    def key(self) -> str:
        """what the view adds to its cache key"""
        return f":symmetry:{self.name}"

    @property
    def meta(self) -> dict:
        return {"symmetry": self.name}

    @property
    def label(self) -> str:
        return f"view {self.name}"

    def __call__(self, episode_id: str, frames: np.ndarray) -> np.ndarray:
        return transform_frames(frames, self.name)


def cached_episode_features(paths: Sequence[Path], model, cache_dir: str | Path, *, threads: int = 0,
                            progress: bool = True, view: ShiftedView | SymmetricView | None = None) -> EpisodeFeatures:
    """Features of the episode bags ``paths`` under ``model``'s frozen backbone, from the cache
    in ``cache_dir`` or computed (ONNX Runtime, ``threads`` intra-op threads) and stored there.

    ``view``: the features of a transformed copy of every episode's frames (training augmentation:
    :class:`ShiftedView`, :class:`SymmetricView`), a cache of its own with the same index and rows as
    the recording's. The index (tokens, instructions) is the recording's: what the transform does to
    actions and instructions is the trainer's to apply."""
    from efm_ros.data import read_episode
    from efm_ros.data.episode import CONTINUOUS_SOURCES

    paths = sorted(Path(p) for p in paths)
    data_hash = hash_episodes(paths)
    bkey = backbone_key(model)
    bins = model.config.action_spec   # teleoperated demos are tokenised with the model's bins
    viewed = view.key if view is not None else ""
    key = hashlib.sha256(f"{data_hash}:{bkey}:{bins.num_bins}:{bins.low}:{bins.high}{viewed}".encode()).hexdigest()[:20]
    cache_dir = Path(cache_dir)
    target = cache_dir / key
    if (target / META_FILE).is_file():
        return _load(target)

    from efm_ros.model.export import OnnxFeatureExtractor

    t0 = time.perf_counter()
    extractor = OnnxFeatureExtractor(model, threads=threads)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=cache_dir))
    try:
        n_frames = []
        ids, instructions, tokens, rates = [], [], [], set()
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=len(paths), desc=f"backbone features, {view.label}" if view is not None else "backbone features",
                       unit="ep", dynamic_ncols=True)
        chunks = []
        for path in paths:
            ep = read_episode(path)
            if tokens and ep.tokens.shape[1] != tokens[0].shape[1]:
                raise ValueError(f"{path}: {ep.tokens.shape[1]} action dimensions, but {paths[0].name} has "
                                 f"{tokens[0].shape[1]}: train on demonstrations of one robot")
            frames = view(ep.episode_id, ep.frames) if view is not None else ep.frames
            chunks.append(extract_features(extractor, frames))
            n_frames.append(len(ep.frames))
            ids.append(ep.episode_id)
            instructions.append(ep.instruction)
            if ep.custom_data.get("source") in CONTINUOUS_SOURCES:   # continuous commands: the model's bins
                tokens.append(model.config.action_spec.encode(ep.actions).astype(np.int64))
            else:
                tokens.append(ep.tokens.astype(np.int64))
            rate = episode_rate(ep)
            if rate is not None:
                rates.add(rate)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        if len(rates) > 1:
            raise ValueError(f"episodes recorded at different control rates {sorted(rates)}: train on one rate")
        features = np.concatenate(chunks) if chunks else np.zeros((0, *extractor.feature_shape), np.float32)
        del chunks
        lengths = np.asarray(n_frames, np.int64) - 1
        starts = np.concatenate([[0], np.cumsum(n_frames)[:-1]]).astype(np.int64) if n_frames else np.zeros(0, np.int64)
        token_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if n_frames else np.zeros(0, np.int64)
        np.save(tmp / FEATURES_FILE, features)
        dims = tokens[0].shape[1] if tokens else model.config.action_dims
        np.savez(tmp / INDEX_FILE, episode_ids=np.array(ids, dtype=str), instructions=np.array(instructions, dtype=str),
                 starts=starts, lengths=lengths, token_starts=token_starts,
                 tokens=np.concatenate(tokens) if tokens else np.zeros((0, dims), np.int64))
        meta = {"data_hash": data_hash, "backbone_key": bkey, "episodes": len(ids), "frames": int(len(features)),
                "feature_shape": list(features.shape[1:]), "control_rate_hz": rates.pop() if rates else None,
                "seconds": round(time.perf_counter() - t0, 1), "extractor": "OnnxFeatureExtractor (ONNX Runtime)",
                **(view.meta if view is not None else {})}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
        if target.exists():   # another run finished the same cache meanwhile: keep theirs
            shutil.rmtree(tmp)
        else:
            tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return _load(target)


__all__ = ["EpisodeFeatures", "ShiftedView", "SymmetricView", "backbone_key", "cached_episode_features", "extract_features", "frame_pairs",
           "hash_episodes", "prev_frame_index", "shift_frames", "view_shift"]
