"""Run an exported EFM with ONNX Runtime only (no torch): what the robot-side nodes use.

    model = load_model("models/v003")                       # verifies manifest.json first
    action, tokens, log_prob, entropy = model.act(frame, prev_frame, "push the red block to the blue block", rng)
    d, distribution = model.steps_to_go(frame, prev_frame, instruction)
    success = d <= model.success_threshold                   # held model.success_k ticks (objectives.consecutive_success)

Frames are RGB uint8 (S, S, 3) (or batched (B, S, S, 3)) with S = ``model.image_size``; all other
preprocessing is inside the graphs. Actions are sampled token by token from the policy's
categoricals, and ``log_prob`` is the exact log-probability of the sampled tokens under the served
policy (Σ_d log softmax(logits_d)[token_d], paper §2.2), which Stage-2 REINFORCE needs.

Split graphs (``backbone.onnx`` + ``policy_head.onnx`` + ``reward_head.onnx``, written by export
when both checkpoints share their frozen backbone) are used when the model has them: the backbone
runs once per distinct frame, and its features are kept in a small process-wide memo
(:data:`SHARED_FEATURES`, keyed by the backbone graph's sha256 and a digest of the frame's bytes).
A robot's previous frame, and the frame that the policy and the steps-to-go node of one process
both see, are therefore computed once: one backbone pass per tick instead of four. The numbers
are the same function (export checks ``head(backbone(frame), backbone(prev))`` against torch).

Execution providers: by default the best available of TensorRT > CUDA > CPU (``onnxruntime-gpu``
offers the first two); pass ``providers=[...]`` to choose, e.g. ``["CPUExecutionProvider"]``.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from efm_ros.model.bins import ActionBins, StepsToGoBins
from efm_ros.model.manifest import ROLES, SPLIT_ROLES, ManifestError, verify_manifest
from efm_ros.model.text import InstructionTable

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def select_providers(requested: Sequence[str] | None = None) -> list[str]:
    """``requested`` (each must be available) or the best available of TensorRT > CUDA > CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if requested:
        unknown = [p for p in requested if p not in available]
        if unknown:
            raise ValueError(f"ONNX Runtime providers {unknown} are not available here; available: {available}")
        return list(requested)
    return [p for p in PREFERRED_PROVIDERS if p in available] or list(available)


class FeatureMemo:
    """Backbone features of the most recent distinct frames, for every model of this process that
    runs the same backbone graph (same sha256): computed once, read by the policy and the
    steps-to-go model alike, and again as the next tick's previous frame. Keyed by content (a
    blake2b digest of the frame's bytes), so a hit is the very same input; thread-safe."""

    def __init__(self, capacity: int = 64):
        self.capacity = capacity
        self._items: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def features(self, model: OnnxEFM, frame: np.ndarray) -> np.ndarray:
        """(C, h, w) float32 (read-only) backbone features of one uint8 frame (S, S, 3)."""
        frame = np.ascontiguousarray(frame)
        key = (model.backbone_id, hashlib.blake2b(frame.data, digest_size=16).digest())
        with self._lock:
            cached = self._items.get(key)
            if cached is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return cached
        out = model.backbone(frame[None])[0]
        out.flags.writeable = False
        with self._lock:
            self.misses += 1
            self._items[key] = out
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return out


SHARED_FEATURES = FeatureMemo()
"""the process-wide memo that models use by default (``load_model(memo=...)``)"""


class OnnxEFM:
    """An exported model directory, loaded: policy + reward graphs, bins, instruction table."""

    def __init__(self, model_dir: str | Path, *, providers: Sequence[str] | None = None,
                 intra_op_threads: int = 0, encoder: Callable[[list[str]], np.ndarray] | None = None,
                 memo: FeatureMemo | None = SHARED_FEATURES, functions: Sequence[str] = ROLES):
        import onnxruntime as ort

        unknown = [f for f in functions if f not in ROLES]
        if unknown or not functions:
            raise ValueError(f"functions {list(functions)}: expected some of {ROLES}")
        self.functions: tuple[str, ...] = tuple(f for f in ROLES if f in functions)
        """the functions loaded ("policy", "reward"): a node loads only the one it serves"""
        self.model_dir = Path(model_dir)
        self.manifest = verify_manifest(self.model_dir)
        m = self.manifest
        self.version: str = m["model_version"]
        self.action_bins = ActionBins(**{k: m["action_bins"][k] for k in ("dims", "num_bins", "low", "high")})
        self.stg_bins = StepsToGoBins(m["steps_to_go_bins"]["t_max"], m["steps_to_go_bins"]["num_bins"])
        self.stg_values = np.asarray(m["steps_to_go_bins"]["values"], dtype=np.float64)
        self.success_threshold: float = m["success"]["threshold_steps"]
        self.success_k: int = m["success"]["consecutive"]
        self.control_rate_hz: float = m["control_rate_hz"]
        self.image_size: int = m["preprocessing"]["image_size"]
        self.instructions = InstructionTable.load(self.model_dir / m["instructions"]["file"])
        self.encoder = encoder
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.log_severity_level = 3   # errors only
        chosen = select_providers(providers)
        self.split: bool = all(r in m["graphs"] for r in SPLIT_ROLES)
        """True: the model runs its split graphs (one backbone pass per distinct frame)"""
        self.backbone_id: str | None = (m["files"][m["graphs"]["backbone"]["file"]]["sha256"] if self.split else None)
        self.memo = memo if self.split else None
        self.sessions = {}
        roles = ("backbone", *(f"{f}_head" for f in self.functions)) if self.split else self.functions
        for role in roles:
            spec = m["graphs"][role]
            sess = ort.InferenceSession(str(self.model_dir / spec["file"]), options, providers=chosen)
            self._check_io(role, sess, spec)
            self.sessions[role] = sess
        self.providers: list[str] = next(iter(self.sessions.values())).get_providers()

    @staticmethod
    def _check_io(role: str, sess, spec: dict) -> None:
        ort_type = {"uint8": "tensor(uint8)", "float32": "tensor(float)", "int64": "tensor(int64)"}
        for side, nodes in (("inputs", sess.get_inputs()), ("outputs", sess.get_outputs())):
            got = [(n.name, n.type) for n in nodes]
            want = [(s["name"], ort_type.get(s["dtype"], s["dtype"])) for s in spec[side]]
            if got != want:
                raise ManifestError(f"{spec['file']}: graph {side} {got} do not match the manifest's {want}")

    # -- inputs ---------------------------------------------------------------------------------
    def embed(self, instruction) -> np.ndarray:
        """str | list[str] | (384,) / (B, 384) array -> (B, 384) float32 embeddings."""
        if isinstance(instruction, np.ndarray):
            emb = np.atleast_2d(instruction).astype(np.float32, copy=False)
            if emb.shape[-1] != self.instructions.dim:
                raise ValueError(f"instruction embedding must be {self.instructions.dim}-d, got {emb.shape}")
            return emb
        texts = [instruction] if isinstance(instruction, str) else list(instruction)
        missing = [t for t in dict.fromkeys(texts) if t not in self.instructions]
        if missing and self.encoder is not None:
            for text, emb in zip(missing, self.encoder(missing)):
                self.instructions.add(text, emb)
        return self.instructions.lookup(texts)   # raises UnknownInstructionError with a clear message

    def _inputs(self, frame, prev_frame, instruction) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
        """Checked, batched (frame, prev_frame, embedding) and whether the call was unbatched."""
        frame, prev_frame = np.asarray(frame), np.asarray(prev_frame)
        single = frame.ndim == 3
        if single:
            frame, prev_frame = frame[None], prev_frame[None]
        shape = (self.image_size, self.image_size, 3)
        for name, f in (("frame", frame), ("prev_frame", prev_frame)):
            if f.dtype != np.uint8 or f.ndim != 4 or f.shape[1:] != shape:
                raise ValueError(f"{name} must be RGB uint8 of shape {shape} (or batched), got {f.dtype} {f.shape}")
        if frame.shape[0] != prev_frame.shape[0]:
            raise ValueError(f"frame batch {frame.shape[0]} != prev_frame batch {prev_frame.shape[0]}")
        emb = self.embed(instruction)
        if emb.shape[0] == 1 and frame.shape[0] > 1:
            emb = np.repeat(emb, frame.shape[0], axis=0)
        if emb.shape[0] != frame.shape[0]:
            raise ValueError(f"{emb.shape[0]} instructions for a batch of {frame.shape[0]} frames")
        return np.ascontiguousarray(frame), np.ascontiguousarray(prev_frame), np.ascontiguousarray(emb), single

    def backbone(self, frames: np.ndarray) -> np.ndarray:
        """Backbone features (B, C, h, w) float32 of uint8 frames (B, S, S, 3) (split models only)."""
        if not self.split:
            raise ValueError(f"{self.model_dir}: this model has no split graphs (exported before them, or its "
                             "policy and reward model do not share a backbone)")
        return self.sessions["backbone"].run(["features"], {"frame": np.ascontiguousarray(frames)})[0]

    def distinct_backbone(self, frames: np.ndarray) -> np.ndarray:
        """:meth:`backbone` of a batch, run once per distinct frame (by content): an episode's
        frames and their previous frames are the same frames shifted by one, so a batched call
        (evaluation, calibration, the trainer's reward) needs about half the passes."""
        frames = np.ascontiguousarray(frames)
        keys = np.array([hashlib.blake2b(f.data, digest_size=16).digest() for f in frames], dtype="S16")
        _, rows, slot = np.unique(keys, return_index=True, return_inverse=True)
        if len(rows) == len(frames):
            return self.backbone(frames)
        return self.backbone(frames[rows])[slot.reshape(-1)]

    def _run(self, role: str, outputs: list[str], frame, prev_frame, instruction) -> tuple[list, bool]:
        """Run the ``role`` ("policy" | "reward") function: its split head on backbone features
        (memoised for single frames) when the model has one, else its full graph."""
        if role not in self.functions:
            raise ValueError(f"{self.model_dir}: loaded without its {role} function (load_model(functions=...))")
        frame, prev_frame, emb, single = self._inputs(frame, prev_frame, instruction)
        if not self.split:
            feed = {"frame": frame, "prev_frame": prev_frame, "instruction_embedding": emb}
            return self.sessions[role].run(outputs, feed), single
        if frame.shape[0] == 1 and self.memo is not None:
            feats = [self.memo.features(self, f[0])[None] for f in (frame, prev_frame)]
        else:
            both = self.distinct_backbone(np.concatenate([frame, prev_frame]))
            feats = [both[:frame.shape[0]], both[frame.shape[0]:]]
        feed = {"features": feats[0], "prev_features": feats[1], "instruction_embedding": emb}
        return self.sessions[f"{role}_head"].run(outputs, feed), single

    # -- policy -----------------------------------------------------------------------------------
    def action_logits(self, frame, prev_frame, instruction) -> np.ndarray:
        """Raw policy output (B, D, K) float32 (batched even for a single frame)."""
        return self._run("policy", ["action_logits"], frame, prev_frame, instruction)[0][0]

    def act(self, frame, prev_frame, instruction, rng: np.random.Generator | None = None,
            greedy: bool = False):
        """Sample an action: -> (action (D,) float32, tokens (D,) int64, log_prob float, entropy float).

        Batched frames (B, S, S, 3) give (B, D), (B, D), (B,), (B,). ``greedy`` takes each
        dimension's most likely token (evaluation); otherwise tokens are drawn with ``rng``.
        """
        (logits,), single = self._run("policy", ["action_logits"], frame, prev_frame, instruction)
        logits = logits.astype(np.float64)
        z = logits - logits.max(-1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))          # log softmax, (B, D, K)
        p = np.exp(log_p)
        if greedy:
            tokens = log_p.argmax(-1)
        else:
            rng = rng if rng is not None else np.random.default_rng()
            cdf = np.cumsum(p, axis=-1)
            u = rng.random(cdf.shape[:-1])[..., None] * cdf[..., -1:]   # inverse-CDF sampling
            tokens = np.minimum((cdf <= u).sum(-1), p.shape[-1] - 1)
        tokens = tokens.astype(np.int64)
        log_prob = np.take_along_axis(log_p, tokens[..., None], -1)[..., 0].sum(-1)   # Σ_d log p(a_d)
        entropy = -(p * log_p).sum((-2, -1))
        action = self.action_bins.decode(tokens)
        if single:
            return action[0], tokens[0], float(log_prob[0]), float(entropy[0])
        return action, tokens, log_prob, entropy

    # -- reward / success -------------------------------------------------------------------------
    def steps_to_go(self, frame, prev_frame, instruction):
        """-> (d(o, g) float, distribution (N,) float32) (§2.1); batched input -> ((B,), (B, N))."""
        (probs, d), single = self._run("reward", ["stg_probs", "expected_steps"], frame, prev_frame, instruction)
        return (float(d[0]), probs[0]) if single else (d, probs)

    def is_success(self, d) -> bool | np.ndarray:
        """1[d <= s] with this model's calibrated s (one tick; see objectives.consecutive_success)."""
        return np.asarray(d) <= self.success_threshold if np.ndim(d) else bool(d <= self.success_threshold)


def load_model(model_dir: str | Path, *, providers: Sequence[str] | None = None, intra_op_threads: int = 0,
               encoder: Callable[[list[str]], np.ndarray] | None = None,
               memo: FeatureMemo | None = SHARED_FEATURES, functions: Sequence[str] = ROLES) -> OnnxEFM:
    """Verify and load ``model_dir`` (manifest.json + graphs + instruction table).

    providers: ONNX Runtime execution providers (default: TensorRT > CUDA > CPU, as available).
    intra_op_threads: ORT threads per graph (0 = ORT's default). encoder: optional callable
    list[str] -> (n, 384) for instructions missing from the table (e.g. ``InstructionEncoder()``,
    which needs torch); without one an unknown instruction raises UnknownInstructionError.
    memo: where single-frame backbone features are shared (default: this process's
    :data:`SHARED_FEATURES`; None: none, every call runs the backbone on both frames).
    functions: which of "policy" and "reward" to load graphs for (default both); the manifest and
    every file's sha256 are verified either way. A policy node loads only the policy, so a version
    switch does not build the frozen reward graph's session again.
    """
    return OnnxEFM(model_dir, providers=providers, intra_op_threads=intra_op_threads, encoder=encoder, memo=memo,
                   functions=functions)
