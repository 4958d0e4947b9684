"""``manifest.json`` of an exported model directory: what it holds, and proof that it is intact.

A model directory (``models/<version>/``) is what robots load:

    manifest.json       this file (schema below)
    policy.onnx         the policy checkpoint (best BC val loss, or a Stage-2 iterate)
    reward.onnx         the frozen reward / success model (best steps-to-go val loss)
    backbone.onnx, policy_head.onnx, reward_head.onnx
                        optional, all three or none: the same two graphs split at their shared
                        frozen backbone, so that a robot runs the backbone once per frame
    policy.safetensors, reward_model.safetensors
                        the torch weights of both (Stage 2 continues from any version)
    instructions.npz    instruction -> 384-d embedding table (see efm_ros.model.text)

Every other file in the directory is listed under ``files`` with its sha256 and size; a node
refuses a model whose manifest does not verify (:func:`verify_manifest` raises
:class:`ManifestError` naming the missing / modified file or the malformed field).
numpy/json only: robots verify without torch.
"""
from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from efm_ros.model.bins import ActionBins, StepsToGoBins

SCHEMA = "efm_ros.model/1"
MANIFEST_NAME = "manifest.json"
ROLES = ("policy", "reward")
SPLIT_ROLES = ("backbone", "policy_head", "reward_head")
"""optional graphs: the policy and reward graphs split at their shared backbone (all or none)"""


class ManifestError(ValueError):
    """A model directory whose manifest is missing, malformed, or does not match its files."""


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def io_spec(name: str, shape: list, dtype: str) -> dict:
    """One graph input/output: shape entries are ints or a symbolic name such as "batch"."""
    return {"name": name, "shape": list(shape), "dtype": dtype}


def write_manifest(model_dir: str | Path, *, model_version: str, graphs: dict[str, dict],
                   efm_config: dict, action_bins: ActionBins, stg_bins: StepsToGoBins,
                   success_threshold: float, success_k: int, control_rate_hz: float,
                   data_hash: str, metrics: dict, instructions_file: str, instruction_count: int,
                   embedding_dim: int, encoder: str, action_scale=None, training: dict | None = None,
                   export: dict | None = None) -> dict:
    """Write ``manifest.json`` listing the sha256 of every file now in ``model_dir``; returns it.

    graphs: {"policy": {"file", "inputs", "outputs"}, "reward": {...}} with io_spec() entries.
    action_scale: what one action unit means on the robot (e.g. {"unit": "m", "per_step": 0.02}),
    or None when the robot interprets normalised actions itself. training: further train_meta.
    """
    model_dir = Path(model_dir)
    files = {}
    for p in sorted(model_dir.rglob("*")):
        rel = p.relative_to(model_dir).as_posix()
        if p.is_file() and rel != MANIFEST_NAME:
            files[rel] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    manifest = {
        "schema": SCHEMA,
        "model_version": model_version,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "graphs": graphs,
        "preprocessing": {
            "frame": "RGB uint8 NHWC, image_size x image_size (resized before the graph)",
            "image_size": efm_config["image_size"],
            "inside_graph": "uint8 -> float, backbone normalisation, backbone, heads",
        },
        "action_bins": {**action_bins.to_dict(), "centers": action_bins.centers.tolist()},
        "action_scale": action_scale,
        "steps_to_go_bins": {**stg_bins.to_dict(), "values": stg_bins.values.tolist()},
        "success": {"threshold_steps": float(success_threshold), "consecutive": int(success_k)},
        "control_rate_hz": float(control_rate_hz),
        "instructions": {"file": instructions_file, "count": int(instruction_count),
                         "dim": int(embedding_dim), "encoder": encoder},
        "training": {"data_hash": data_hash, "metrics": metrics, **(training or {})},
        "export": export or {},
        "efm_config": efm_config,
        "files": files,
    }
    _check_schema(manifest)
    (model_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return manifest


def _need(d: dict, key: str, types, where: str):
    if not isinstance(d, dict) or key not in d:
        raise ManifestError(f"{MANIFEST_NAME}: missing field {where}{key}")
    v = d[key]
    if not isinstance(v, types) or isinstance(v, bool):  # no field is a bool; True is an int
        raise ManifestError(f"{MANIFEST_NAME}: field {where}{key} has type {type(v).__name__}")
    return v


def _check_schema(m: dict) -> None:
    """Structural validation; raises ManifestError naming the first bad field."""
    num = (int, float)
    if _need(m, "schema", str, "") != SCHEMA:
        raise ManifestError(f"{MANIFEST_NAME}: schema {m['schema']!r} is not the supported {SCHEMA!r}")
    _need(m, "model_version", str, "")
    graphs = _need(m, "graphs", dict, "")
    split = [r for r in SPLIT_ROLES if r in graphs]
    if split and len(split) != len(SPLIT_ROLES):
        raise ManifestError(f"{MANIFEST_NAME}: graphs has {split} of the split graphs {list(SPLIT_ROLES)}: all or none")
    roles = (*ROLES, *split)
    for role in roles:
        g = _need(graphs, role, dict, "graphs.")
        _need(g, "file", str, f"graphs.{role}.")
        for side in ("inputs", "outputs"):
            for i, spec in enumerate(_need(g, side, list, f"graphs.{role}.")):
                where = f"graphs.{role}.{side}[{i}]."
                _need(spec, "name", str, where)
                _need(spec, "dtype", str, where)
                for dim in _need(spec, "shape", list, where):
                    if not isinstance(dim, (int, str)):
                        raise ManifestError(f"{MANIFEST_NAME}: field {where}shape has a {type(dim).__name__}")
    _need(_need(m, "preprocessing", dict, ""), "image_size", int, "preprocessing.")
    ab = _need(m, "action_bins", dict, "")
    for key in ("dims", "num_bins"):
        _need(ab, key, int, "action_bins.")
    for key in ("low", "high"):
        _need(ab, key, num, "action_bins.")
    sb = _need(m, "steps_to_go_bins", dict, "")
    n = _need(sb, "num_bins", int, "steps_to_go_bins.")
    _need(sb, "t_max", int, "steps_to_go_bins.")
    if len(_need(sb, "values", list, "steps_to_go_bins.")) != n:
        raise ManifestError(f"{MANIFEST_NAME}: steps_to_go_bins.values has not num_bins={n} entries")
    success = _need(m, "success", dict, "")
    s = _need(success, "threshold_steps", num, "success.")
    if not math.isfinite(s) or s < 0:
        raise ManifestError(f"{MANIFEST_NAME}: success.threshold_steps must be finite and >= 0, got {s}")
    if _need(success, "consecutive", int, "success.") < 1:
        raise ManifestError(f"{MANIFEST_NAME}: success.consecutive must be >= 1")
    if _need(m, "control_rate_hz", num, "") <= 0:
        raise ManifestError(f"{MANIFEST_NAME}: control_rate_hz must be > 0")
    ins = _need(m, "instructions", dict, "")
    _need(ins, "file", str, "instructions.")
    _need(ins, "count", int, "instructions.")
    _need(ins, "dim", int, "instructions.")
    training = _need(m, "training", dict, "")
    _need(training, "data_hash", str, "training.")
    _need(training, "metrics", dict, "training.")
    _need(m, "efm_config", dict, "")
    files = _need(m, "files", dict, "")
    for name, entry in files.items():
        p = PurePosixPath(name)
        if p.is_absolute() or ".." in p.parts:
            raise ManifestError(f"{MANIFEST_NAME}: file name {name!r} leaves the model directory")
        _need(entry, "sha256", str, f"files.{name}.")
    for ref in [graphs[r]["file"] for r in roles] + [ins["file"]]:
        if ref not in files:
            raise ManifestError(f"{MANIFEST_NAME}: {ref!r} is referenced but not listed under files")


def verify_manifest(model_dir: str | Path) -> dict:
    """Load and check ``model_dir/manifest.json``: schema, and every listed file's sha256.

    Returns the manifest dict; raises ManifestError naming the offending file or field.
    """
    model_dir = Path(model_dir)
    path = model_dir / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{path}: missing — not an exported model directory")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(manifest, dict):
        raise ManifestError(f"{path}: top level must be an object")
    _check_schema(manifest)
    for name, entry in manifest["files"].items():
        f = model_dir / name
        if not f.is_file():
            raise ManifestError(f"{name}: listed in {MANIFEST_NAME} but missing from {model_dir}")
        digest = sha256_file(f)
        if digest != entry["sha256"]:
            raise ManifestError(f"{name}: sha256 {digest[:16]}… does not match the manifest's "
                                f"{entry['sha256'][:16]}… — the file was modified or corrupted")
    return manifest
