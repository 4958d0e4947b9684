"""Export a trained EFM to ONNX + manifest: ``efm-ros export RUN --out models/NAME``.

Two graphs, because the paper uses two checkpoints of the one network (§1 checkpoint selection,
§2.1 frozen reward model): ``policy.onnx`` from the policy checkpoint and ``reward.onnx`` from the
reward-model checkpoint. In Stage 2 each new version changes only the policy; the reward graph is
byte-identical across versions. Both graphs carry the preprocessing (uint8 NHWC frames in):

    policy.onnx  frame, prev_frame (B,S,S,3) uint8, instruction_embedding (B,384) float32
                 -> action_logits (B,D,K), action_probs (B,D,K)
    reward.onnx  same inputs
                 -> stg_logits (B,N), stg_probs (B,N), expected_steps (B,) = d(o,g) (§2.1)

When both checkpoints share one frozen backbone (always, unless a backbone was fine-tuned apart),
the same two functions are also written split at the backbone, so that a robot runs the backbone
once per camera frame instead of four times per tick (current + previous frame, two graphs):

    backbone.onnx     frame (B,S,S,3) uint8 -> features (B,C,h,w) float32 (preprocessing inside)
    policy_head.onnx  features, prev_features (B,C,h,w), instruction_embedding -> as policy.onnx
    reward_head.onnx  same inputs -> as reward.onnx

head(backbone(frame), backbone(prev_frame)) is parity-checked against torch like the full graphs
(keys ``split:<output>``); the runtime (efm_ros.model.runtime) prefers the split graphs.

Run directory (what the trainer writes; ``export`` reads it):

    RUN/
      config.json               EFMConfig.to_dict() — the network both checkpoints use
      policy.safetensors        save_checkpoint(policy)       (best BC val loss / Stage-2 iterate)
      reward_model.safetensors  save_checkpoint(reward_model) (best steps-to-go val loss, frozen)
      train_meta.json           {"data_hash": str,              hash of the training episodes
                                 "metrics": {name: number},     validation metrics
                                 "success_threshold": float,    s of success = 1[d <= s]
                                 "success_k": int,              consecutive ticks for success
                                 "control_rate_hz": float,
                                 "instructions": [str, ...],    optional: embedded at export
                                 "action_scale": ...,           optional: see manifest.write_manifest
                                 ...}                           any other keys: copied to the manifest
      instructions.npz          optional InstructionTable (efm_ros.model.text) of the instructions

Usage:
    efm-ros export runs/stage1 --out models/v001                    # version = "v001"
    efm-ros export models/old --out models/old_split                # export a model directory again (same version)
    efm-ros export runs/iter7 --out models/v008 --instructions sim_instructions.txt --force

The model directory is written next to its destination and renamed into place once it verifies,
so a node watching ``models/`` never sees a half-written version.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

import efm_ros
from efm_ros.learn.objectives import expected_steps_to_go
from efm_ros.model.manifest import MANIFEST_NAME, SPLIT_ROLES, io_spec, verify_manifest, write_manifest
from efm_ros.model.network import EFM, EFMConfig, load_checkpoint, random_inputs, save_checkpoint
from efm_ros.model.text import ENCODER_NAME, InstructionEncoder, InstructionTable

INPUT_NAMES = ("frame", "prev_frame", "instruction_embedding")
HEAD_INPUT_NAMES = ("features", "prev_features", "instruction_embedding")
POLICY_OUTPUTS = ("action_logits", "action_probs")
REWARD_OUTPUTS = ("stg_logits", "stg_probs", "expected_steps")
GRAPH_FILES = {"policy": "policy.onnx", "reward": "reward.onnx",
               "backbone": "backbone.onnx", "policy_head": "policy_head.onnx", "reward_head": "reward_head.onnx"}
INSTRUCTIONS_FILE = "instructions.npz"
OPSET = 18
PARITY_TOLERANCE = 1e-3  # export refuses a graph whose outputs drift more than this from torch
CHECKPOINT_FILES = {"policy": "policy.safetensors", "reward": "reward_model.safetensors"}
RUN_FILES = ("config.json", "policy.safetensors", "reward_model.safetensors", "train_meta.json")


class PolicyHeadGraph(nn.Module):
    """``policy_head.onnx``: features of the current and previous frame + instruction -> action."""

    def __init__(self, efm: EFM):
        super().__init__()
        self.efm = efm

    def forward(self, features, prev_features, instruction_embedding):
        action_logits, _ = self.efm.head(features, prev_features, instruction_embedding)
        return action_logits, action_logits.softmax(-1)


class PolicyGraph(PolicyHeadGraph):
    """``policy.onnx``: frames + instruction embedding -> action logits and probabilities."""

    def forward(self, frame, prev_frame, instruction_embedding):
        return super().forward(self.efm.backbone_features(frame), self.efm.backbone_features(prev_frame),
                               instruction_embedding)


class RewardHeadGraph(nn.Module):
    """``reward_head.onnx``: features of the current and previous frame + instruction -> d(o,g)."""

    def __init__(self, efm: EFM):
        super().__init__()
        self.efm = efm

    def forward(self, features, prev_features, instruction_embedding):
        _, stg_logits = self.efm.head(features, prev_features, instruction_embedding)
        d = expected_steps_to_go(stg_logits, self.efm.stg_values)   # d(o,g) = Σ p_k value_k
        return stg_logits, stg_logits.softmax(-1), d


class RewardGraph(RewardHeadGraph):
    """``reward.onnx``: frames + instruction -> steps-to-go distribution and d (§2.1)."""

    def forward(self, frame, prev_frame, instruction_embedding):
        return super().forward(self.efm.backbone_features(frame), self.efm.backbone_features(prev_frame),
                               instruction_embedding)


def shares_backbone(policy: EFM, reward_model: EFM) -> bool:
    """True when one backbone graph serves both checkpoints: camera models whose frozen backbones
    have the same configuration and the same weights (a Stage-2 policy and its Stage-1 judge)."""
    a, b = policy.config, reward_model.config
    if policy.is_state or not (a.freeze_backbone and b.freeze_backbone):
        return False
    if (a.backbone, a.image_size, policy.feature_shape) != (b.backbone, b.image_size, reward_model.feature_shape):
        return False
    sa, sb = policy.backbone.state_dict(), reward_model.backbone.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _head_inputs(model: EFM, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(features, prev_features, text) of random frames: example inputs of the head graphs."""
    frame, prev, text = random_inputs(model.config, batch, seed)
    with torch.no_grad():
        return model.backbone_features(frame), model.backbone_features(prev), text


def graph_specs(config: EFMConfig) -> dict[str, dict]:
    """Input/output names, shapes and dtypes of both graphs (as recorded in the manifest)."""
    s, d, k, n = config.image_size, config.action_dims, config.action_bins, config.stg_bins
    inputs = [io_spec("frame", ["batch", s, s, 3], "uint8"), io_spec("prev_frame", ["batch", s, s, 3], "uint8"),
              io_spec("instruction_embedding", ["batch", config.text_dim], "float32")]
    return {
        "policy": {"file": GRAPH_FILES["policy"], "inputs": inputs,
                   "outputs": [io_spec("action_logits", ["batch", d, k], "float32"),
                               io_spec("action_probs", ["batch", d, k], "float32")]},
        "reward": {"file": GRAPH_FILES["reward"], "inputs": inputs,
                   "outputs": [io_spec("stg_logits", ["batch", n], "float32"),
                               io_spec("stg_probs", ["batch", n], "float32"),
                               io_spec("expected_steps", ["batch"], "float32")]},
    }


def split_graph_specs(model: EFM, reward_model: EFM) -> dict[str, dict]:
    """Specs of the graphs split at the shared backbone (see the module docstring)."""
    full = {"policy": graph_specs(model.config)["policy"], "reward": graph_specs(reward_model.config)["reward"]}
    feat = ["batch", *model.feature_shape]
    head_inputs = [io_spec("features", feat, "float32"), io_spec("prev_features", feat, "float32"),
                   full["policy"]["inputs"][2]]
    return {"backbone": {"file": GRAPH_FILES["backbone"], "inputs": full["policy"]["inputs"][:1],
                         "outputs": [io_spec("features", feat, "float32")]},
            "policy_head": {"file": GRAPH_FILES["policy_head"], "inputs": head_inputs, "outputs": full["policy"]["outputs"]},
            "reward_head": {"file": GRAPH_FILES["reward_head"], "inputs": head_inputs, "outputs": full["reward"]["outputs"]}}


def _export_graph(module: nn.Module, path: Path, example: tuple, input_names, output_names,
                  opset: int = OPSET, optimize: bool = True) -> None:
    """torch.onnx.export with the batch dimension of every input dynamic: the dynamo exporter
    (opset 18, one file), else the TorchScript one. ``optimize=False`` keeps every parameter the
    graph uses as an initializer named after it (no constant folding; ONNX Runtime folds at load)."""
    module.eval()   # exporters must see eval mode (BatchNorm running stats, no dropout)
    batch = torch.export.Dim("batch", min=1, max=4096)
    dynamic = {name: {0: batch} for name in input_names}
    kwargs = dict(input_names=list(input_names), output_names=list(output_names), opset_version=opset)
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)  # torchvision
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", (FutureWarning, UserWarning))   # exporter-internal chatter
        try:
            torch.onnx.export(module, example, str(path), dynamo=True, external_data=False,
                              dynamic_shapes=dynamic, verbose=False, optimize=optimize, **kwargs)
        except Exception as dynamo_error:  # noqa: BLE001 — fall back to the TorchScript exporter
            if not optimize:
                raise RuntimeError(f"ONNX export of {path.name} (parameters kept as initializers) failed: "
                                   f"{dynamo_error!r}") from dynamo_error
            try:
                dyn_axes = {name: {0: "batch"} for name in (*input_names, *output_names)}
                torch.onnx.export(module, example, str(path), dynamo=False, dynamic_axes=dyn_axes, **kwargs)
            except Exception as legacy_error:
                raise RuntimeError(f"ONNX export of {path.name} failed with both exporters: "
                                   f"dynamo: {dynamo_error!r}; legacy: {legacy_error!r}") from legacy_error
        finally:
            module.eval()   # the legacy exporter can leave wrapped modules in train mode


def graph_module(role: str, model: EFM) -> tuple[nn.Module, tuple, tuple, tuple]:
    """(torch module, example inputs, input names, output names) of the graph ``role``: the one
    description of what each exported graph computes, for export, templates and parity."""
    if role == "policy":
        return PolicyGraph(model), random_inputs(model.config, 2), INPUT_NAMES, POLICY_OUTPUTS
    if role == "reward":
        return RewardGraph(model), random_inputs(model.config, 2), INPUT_NAMES, REWARD_OUTPUTS
    if role == "backbone":
        return BackboneGraph(model), random_inputs(model.config, 2)[:1], ("frame",), ("features",)
    if role == "policy_head":
        return PolicyHeadGraph(model), _head_inputs(model, 2), HEAD_INPUT_NAMES, POLICY_OUTPUTS
    if role == "reward_head":
        return RewardHeadGraph(model), _head_inputs(model, 2), HEAD_INPUT_NAMES, REWARD_OUTPUTS
    raise ValueError(f"unknown graph role {role!r}; expected one of {list(GRAPH_FILES)}")


def export_onnx(model: EFM, out_dir: str | Path, *, reward_model: EFM | None = None,
                opset: int = OPSET, roles: tuple[str, ...] | None = None) -> dict[str, dict]:
    """Write the graphs named in ``roles`` into ``out_dir``: ``policy.onnx`` (from ``model``),
    ``reward.onnx`` (from ``reward_model``, default ``model``) and, when the two share their
    backbone (:func:`shares_backbone`), the split graphs (``SPLIT_ROLES``; backbone and reward
    head from ``reward_model``). Default: every graph the pair has. Returns the specs of every
    graph the pair has (``graph_specs``, ``split_graph_specs``). Batch size is dynamic."""
    reward_model = reward_model or model
    if reward_model.config.image_size != model.config.image_size:
        raise ValueError("policy and reward model must take the same frame size")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    specs = graph_specs(model.config)
    specs["reward"]["outputs"] = graph_specs(reward_model.config)["reward"]["outputs"]
    if shares_backbone(model, reward_model):
        specs.update(split_graph_specs(model, reward_model))
    roles = tuple(specs) if roles is None else roles
    missing = [r for r in roles if r not in specs]
    if missing:
        raise ValueError(f"cannot write {missing}: the policy and the reward model do not share one frozen backbone")
    modes = [(m, m.training) for m in (model, reward_model)]
    try:
        for role in roles:
            source = model if role in ("policy", "policy_head") else reward_model
            module, example, inputs, outputs = graph_module(role, source)
            _export_graph(module, out_dir / GRAPH_FILES[role], example, inputs, outputs, opset)
    finally:
        for m, training in modes:   # a trainer exporting mid-run gets its modes back
            m.train(training)
    return specs


class PolicyGraphTemplate:
    """The policy graphs traced once, whose weights are refreshed for every later version of the
    same network (Stage 2: the architecture never changes between versions, only the weights).

    Tracing and exporting the EFM takes 5-10 s on a CPU, on the critical path of a fleet's version
    switch (issue 12). Each graph of ``roles`` (``policy``, and ``policy_head`` when the backbone
    is frozen, so that the split graphs exist) is exported once without constant folding, so every
    parameter and buffer it uses is an initializer named after it; :meth:`write` copies the
    model's current tensors into them and then runs the exporter's own optimiser (onnxscript's
    ``optimize_ir``: without it the graph runs ~3x slower in ONNX Runtime), ~0.3-0.5 s per graph.
    Nothing that a graph uses can be missed: at construction every state tensor that is not an
    initializer must be unused by its outputs (no gradient reaches it; the steps-to-go head,
    BatchNorm counters, the backbone for the head), else ValueError.
    ``export_model(policy_template=...)`` still checks ORT-vs-torch parity of the written graphs."""

    PREFIX = "efm."   # the graph modules' attribute holding the EFM

    def __init__(self, model: EFM, opset: int = OPSET, roles: tuple[str, ...] | None = None):
        import onnx

        if roles is None:
            roles = ("policy", "policy_head") if shares_backbone(model, model) else ("policy",)
        was_training = model.training
        self.config = model.config.to_dict()
        state = model.state_dict()
        self.protos, self._index, self.names = {}, {}, {}
        for role in roles:
            if role not in ("policy", "policy_head"):
                raise ValueError(f"a policy template holds policy graphs, not {role!r}")
            module, example, inputs, outputs = graph_module(role, model)
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / GRAPH_FILES[role]
                _export_graph(module, path, example, inputs, outputs, opset, optimize=False)
                proto = onnx.load(str(path))
            model.train(was_training)
            index = {init.name: i for i, init in enumerate(proto.graph.initializer)}
            missing = [k for k in state if self.PREFIX + k not in index]
            used = self._used_by(role, model)
            hidden = [k for k in missing if state[k].is_floating_point() and k in used]
            if hidden:
                raise ValueError(f"the {role} graph folded tensors it depends on: {hidden[:5]}; its weights cannot "
                                 "be refreshed in place")
            self.protos[role], self._index[role] = proto, index
            self.names[role] = [k for k in state if self.PREFIX + k in index]

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(self.protos)

    @staticmethod
    def _used_by(role: str, model: EFM) -> set[str]:
        """Names of the parameters that the graph's outputs depend on (one backward pass)."""
        flags = {n: p.requires_grad for n, p in model.named_parameters()}
        try:
            for p in model.parameters():
                p.requires_grad_(True)
                p.grad = None
            was_training = model.training
            model.eval()
            module, example, _, _ = graph_module(role, model)
            module(*example)[0].sum().backward()
            model.train(was_training)
            return {n for n, p in model.named_parameters() if p.grad is not None}
        finally:
            for n, p in model.named_parameters():
                p.grad = None
                p.requires_grad_(flags[n])

    def write(self, model: EFM, path: str | Path, role: str = "policy") -> None:
        """Write the ``role`` graph (``policy.onnx`` by default) of ``model`` (the template's network
        with any weights) to ``path``."""
        import onnx_ir as ir
        from onnx import helper, numpy_helper
        from onnxscript.optimizer import optimize_ir

        if model.config.to_dict() != self.config:
            raise ValueError("the model's network differs from the template's: export it with export_onnx")
        if role not in self.protos:
            raise ValueError(f"this template holds {list(self.protos)}, not {role!r}")
        proto, index = self.protos[role], self._index[role]
        state = model.state_dict()
        inits = proto.graph.initializer
        for k in self.names[role]:
            i = index[self.PREFIX + k]
            arr = state[k].detach().cpu().numpy()
            if tuple(arr.shape) != tuple(inits[i].dims):
                raise ValueError(f"{k}: shape {tuple(arr.shape)} is not the template's {tuple(inits[i].dims)}")
            dtype = helper.tensor_dtype_to_np_dtype(inits[i].data_type)
            inits[i].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(arr, dtype=dtype), inits[i].name))
        model_ir = ir.serde.deserialize_model(proto)    # a copy: the template keeps its names
        optimize_ir(model_ir)                            # what torch.onnx.export(optimize=True) runs
        Path(path).write_bytes(ir.serde.serialize_model(model_ir).SerializeToString())


def onnx_parity(model: EFM, reward_model: EFM | None, out_dir: str | Path,
                batch_sizes=(1, 4), seed: int = 0, roles: tuple[str, ...] = ("policy", "reward")) -> dict[str, float]:
    """Max |ORT - torch| of every output of the graphs in ``roles`` over random inputs at each batch
    size. A head role (``policy_head``, ``reward_head``) is checked end to end, the way the runtime
    runs it: ORT's ``backbone.onnx`` on both frames, then the head, against torch's full graph
    (keys ``split:<output>``); ``backbone`` against torch's ``backbone_features`` (key ``features``)."""
    import onnxruntime as ort

    reward_model = reward_model or model
    out_dir = Path(out_dir)
    modes = [(m, m.training) for m in (model, reward_model)]
    diffs: dict[str, float] = {}

    def session(role):
        return ort.InferenceSession(str(out_dir / GRAPH_FILES[role]), providers=["CPUExecutionProvider"])

    def note(key, expected, got):
        diffs[key] = max(diffs.get(key, 0.0), float(np.abs(expected.numpy() - got).max()))

    checks = (("policy", PolicyGraph(model).eval(), POLICY_OUTPUTS),
              ("reward", RewardGraph(reward_model).eval(), REWARD_OUTPUTS),
              ("policy_head", PolicyGraph(model).eval(), POLICY_OUTPUTS),
              ("reward_head", RewardGraph(reward_model).eval(), REWARD_OUTPUTS))
    backbone = session("backbone") if any(r in roles for r in SPLIT_ROLES) else None
    for role, torch_module, names in checks:
        if role not in roles:
            continue
        sess = session(role)
        for b in batch_sizes:
            frame, prev, text = random_inputs(torch_module.efm.config, b, seed=seed + b)
            with torch.no_grad():
                expected = torch_module(frame, prev, text)
            if role.endswith("_head"):
                feats = [backbone.run(["features"], {"frame": f.numpy()})[0] for f in (frame, prev)]
                got = sess.run(list(names), dict(zip(HEAD_INPUT_NAMES, (*feats, text.numpy()))))
            else:
                got = sess.run(list(names), dict(zip(INPUT_NAMES, (frame.numpy(), prev.numpy(), text.numpy()))))
            for name, e, g in zip(names, expected, got):
                note(("split:" if role.endswith("_head") else "") + name, e, g)
    if "backbone" in roles:
        for b in batch_sizes:
            frame = random_inputs(reward_model.config, b, seed=seed + b)[0]
            with torch.no_grad():
                note("features", reward_model.eval().backbone_features(frame), backbone.run(["features"], {"frame": frame.numpy()})[0])
    for m, training in modes:
        m.train(training)
    return diffs


class BackboneGraph(nn.Module):
    """``EFM.backbone_features`` alone: uint8 frames (B,S,S,3) -> features (B,C,h,w)."""

    def __init__(self, efm: EFM):
        super().__init__()
        self.efm = efm

    def forward(self, frame):
        return self.efm.backbone_features(frame)


class OnnxFeatureExtractor:
    """Backbone features for Stage-1 caching, computed by ONNX Runtime.

    Same function as ``model.backbone_features`` (max abs diff ~1e-5), and the same engine that
    serves it on the robot, but ~5-8x faster than eager torch on a CPU (ORT folds BatchNorm into
    the convolutions and uses blocked layouts). Only for a frozen backbone: the features are a
    snapshot of its current weights. ``extractor(frames uint8 (B,S,S,3) numpy) -> (B,C,h,w) float32``.
    """

    def __init__(self, model: EFM, threads: int = 0):
        import onnxruntime as ort

        if not model.config.freeze_backbone:
            raise ValueError("feature caching needs a frozen backbone (config.freeze_backbone=True)")
        self.feature_shape = model.feature_shape
        was_training = model.training
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "backbone.onnx"
            _export_graph(BackboneGraph(model), path, random_inputs(model.config, 2)[:1], ["frame"], ["features"])
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        model.train(was_training)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        frames = np.ascontiguousarray(frames, dtype=np.uint8)
        return self.session.run(["features"], {"frame": frames})[0]


def export_model(policy: EFM, out_dir: str | Path, *, reward_model: EFM | None = None,
                 instructions: InstructionTable, success_threshold: float, success_k: int,
                 control_rate_hz: float, data_hash: str, metrics: dict, model_version: str | None = None,
                 action_scale=None, training: dict | None = None, overwrite: bool = False,
                 signing_key: str | Path | None = None, reward_from: str | Path | None = None,
                 policy_template: PolicyGraphTemplate | None = None) -> dict:
    """Write a complete, verified model directory (graphs, instruction table, manifest.json).

    Checks ORT-vs-torch parity (batch 1 and 4) and refuses an export that drifts more than
    PARITY_TOLERANCE. With ``signing_key`` (an Ed25519 PEM private key, ``efm-ros keygen``) the
    manifest is signed (signature.json, :mod:`efm_ros.model.signing`) before the directory
    becomes visible. Returns the manifest.

    ``reward_from``: a model directory whose reward graph and reward checkpoint ARE
    ``reward_model`` (the frozen Stage-1 model a Stage-2 trainer judges with). They are copied
    after their sha256 is checked against that directory's manifest, instead of being exported
    and parity-checked again: the reward graph is the same file in every version (issue 12, the
    export on the critical path of a version switch).

    ``policy_template``: write the policy graphs by refreshing the weights of graphs traced once
    (:class:`PolicyGraphTemplate`) instead of tracing ``policy`` again; parity is checked the same.

    The split graphs (``SPLIT_ROLES``) are written when the two checkpoints share their frozen
    backbone (:func:`shares_backbone`); with ``reward_from`` its backbone and reward head are
    copied like the reward graph, and a ``reward_from`` exported before them gives versions
    without split graphs (not a backbone export on every version's critical path).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir} exists and is not empty (overwrite=True / --force replaces it)")
    if len(instructions) == 0:
        raise ValueError("the instruction table is empty: the robot could not embed any instruction")
    if instructions.dim != policy.config.text_dim:
        raise ValueError(f"instruction embeddings are {instructions.dim}-d, the model takes {policy.config.text_dim}")
    reward_model = reward_model or policy
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        t0 = time.perf_counter()
        split = shares_backbone(policy, reward_model)
        reward_roles = ("reward", "backbone", "reward_head") if split else ("reward",)
        parity, copied = _copy_frozen_reward(Path(reward_from), tmp, reward_roles) if reward_from else ({}, ())
        if reward_from and split and "backbone" not in copied:
            split = False          # a frozen model exported before the split graphs: no version has them
            reward_roles = ("reward",)       # (efm-ros export OLD --out NEW adds them, once)
        policy_roles = ("policy", "policy_head") if split else ("policy",)
        written = policy_roles + tuple(r for r in reward_roles if r not in copied)   # parity-checked here
        templated = tuple(r for r in policy_roles if policy_template is not None and r in policy_template.roles)
        for role in templated:
            policy_template.write(policy, tmp / GRAPH_FILES[role], role)
        specs = export_onnx(policy, tmp, reward_model=reward_model,
                            roles=tuple(r for r in written if r not in templated))
        specs = {role: spec for role, spec in specs.items() if split or role not in SPLIT_ROLES}
        export_s = time.perf_counter() - t0
        parity = {**parity, **onnx_parity(policy, reward_model, tmp, roles=written)}
        worst = max(parity.values())
        if worst > PARITY_TOLERANCE:
            raise RuntimeError(f"ONNX output differs from torch by {worst:.2e} > {PARITY_TOLERANCE}: {parity}")
        instructions.save(tmp / INSTRUCTIONS_FILE)
        # the torch weights travel with the graphs (listed and hashed in the manifest), so Stage 2
        # can continue from any deployed version: load_model_checkpoints(model_dir)
        save_checkpoint(policy, tmp / CHECKPOINT_FILES["policy"])
        if not reward_from:
            save_checkpoint(reward_model, tmp / CHECKPOINT_FILES["reward"])
        cfg = policy.config
        manifest = write_manifest(
            tmp, model_version=model_version or out_dir.name, graphs=specs, efm_config=cfg.to_dict(),
            action_bins=cfg.action_spec, stg_bins=reward_model.config.stg_spec,
            success_threshold=success_threshold, success_k=success_k, control_rate_hz=control_rate_hz,
            data_hash=data_hash, metrics=metrics, instructions_file=INSTRUCTIONS_FILE,
            instruction_count=len(instructions), embedding_dim=instructions.dim, encoder=ENCODER_NAME,
            action_scale=action_scale, training=training,
            export={"opset": OPSET, "torch": torch.__version__, "efm_ros": efm_ros.__version__, "seconds": round(export_s, 2),
                    "parity_max_abs_diff": parity, "reward_config": reward_model.config.to_dict(),
                    "trainable_parameters": policy.num_parameters()})
        verify_manifest(tmp)
        if signing_key:
            from efm_ros.model.signing import sign_model

            sign_model(tmp, signing_key)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return manifest


def _copy_frozen_reward(src: Path, dst: Path, roles: tuple[str, ...] = ("reward",)) -> tuple[dict[str, float], tuple[str, ...]]:
    """Copy the reward checkpoint and the graphs of ``roles`` that the verified model directory
    ``src`` has (the reward graph it must have) into ``dst``, sha256 checked against its manifest.
    Returns the parity it recorded for them, and the roles copied."""
    from efm_ros.model.manifest import ManifestError, sha256_file

    manifest = verify_manifest(src)
    copied = tuple(r for r in roles if r == "reward" or r in manifest["graphs"])
    for name in [GRAPH_FILES[r] for r in copied] + [CHECKPOINT_FILES["reward"]]:
        entry = manifest["files"].get(name)
        if entry is None:
            raise ManifestError(f"{src}: no {name} to reuse as the frozen reward model")
        shutil.copyfile(src / name, dst / name)
        expected = entry["sha256"] if isinstance(entry, dict) else entry
        if sha256_file(dst / name) != expected:
            raise ManifestError(f"{src / name}: changed while it was copied (sha256 mismatch)")
    recorded = manifest.get("export", {}).get("parity_max_abs_diff", {})
    keys = set(REWARD_OUTPUTS)
    if "reward_head" in copied:
        keys |= {f"split:{k}" for k in REWARD_OUTPUTS} | {"features"}
    return {k: v for k, v in recorded.items() if k in keys}, copied


def load_model_checkpoints(model_dir: str | Path) -> tuple[EFM, EFM]:
    """The torch policy and reward model of an exported model directory (manifest verified first)."""
    model_dir = Path(model_dir)
    manifest = verify_manifest(model_dir)
    missing = [f for f in CHECKPOINT_FILES.values() if f not in manifest["files"]]
    if missing:
        raise FileNotFoundError(f"{model_dir}: no torch checkpoints {missing} (exported before they were included?)")
    config = EFMConfig.from_dict(manifest["efm_config"])
    reward_config = EFMConfig.from_dict(manifest.get("export", {}).get("reward_config", manifest["efm_config"]))
    return (load_checkpoint(model_dir / CHECKPOINT_FILES["policy"], config),
            load_checkpoint(model_dir / CHECKPOINT_FILES["reward"], reward_config))


def load_model_dir_as_run(model_dir: str | Path) -> tuple[EFM, EFM, dict, InstructionTable]:
    """An exported model directory read like a run (:func:`load_run`), to export it again with this
    exporter (e.g. to add the split graphs to a model exported before them): its checkpoints, its
    instruction table, and its manifest's facts as train_meta."""
    model_dir = Path(model_dir)
    policy, reward_model = load_model_checkpoints(model_dir)       # verifies the manifest and its files
    manifest = json.loads((model_dir / MANIFEST_NAME).read_text())
    training = dict(manifest["training"])
    meta = {**{k: v for k, v in training.items() if k not in ("data_hash", "metrics")},
            "data_hash": training["data_hash"], "metrics": training["metrics"],
            "success_threshold": manifest["success"]["threshold_steps"], "success_k": manifest["success"]["consecutive"],
            "control_rate_hz": manifest["control_rate_hz"], "action_scale": manifest.get("action_scale")}
    return policy, reward_model, meta, InstructionTable.load(model_dir / manifest["instructions"]["file"])


def load_run(run_dir: str | Path) -> tuple[EFM, EFM, dict, InstructionTable]:
    """Read a trainer's run directory (layout in the module docstring)."""
    run_dir = Path(run_dir)
    missing = [f for f in RUN_FILES if not (run_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{run_dir}: not a training run, missing {missing} (expected {list(RUN_FILES)})")
    config = EFMConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    policy = load_checkpoint(run_dir / "policy.safetensors", config)
    reward_model = load_checkpoint(run_dir / "reward_model.safetensors", config)
    meta = json.loads((run_dir / "train_meta.json").read_text())
    need = ("data_hash", "metrics", "success_threshold", "success_k", "control_rate_hz")
    absent = [k for k in need if k not in meta]
    if absent:
        raise ValueError(f"{run_dir / 'train_meta.json'}: missing {absent}")
    table_path = run_dir / INSTRUCTIONS_FILE
    table = InstructionTable.load(table_path) if table_path.is_file() else InstructionTable(dim=config.text_dim)
    return policy, reward_model, meta, table


REWARD_METRICS = ("val_stg_loss", "val_d_mae", "val_d_goal", "reward_model_step", "success_episode_precision",
                  "success_episode_recall", "success_frame_precision", "success_frame_recall", "success_roc_auc")
"""train_meta metrics that describe the reward model (``--reward-run`` takes them from its run)"""


def reward_run_meta(meta: dict, rmeta: dict, reward_run: str | Path) -> dict:
    """``meta`` of the policy's run with the reward model's facts from ``reward_run``'s train_meta:
    success threshold s and k, the reward metrics, and where they came from."""
    out = {**meta, "success_threshold": rmeta["success_threshold"], "success_k": rmeta["success_k"],
           "metrics": {**meta["metrics"], **{k: rmeta["metrics"][k] for k in REWARD_METRICS if k in rmeta["metrics"]}},
           "reward_run": {"dir": str(reward_run), "data_hash": rmeta.get("data_hash", ""),
                          **({"rollouts": rmeta["rollouts"]} if "rollouts" in rmeta else {})}}
    out["instructions"] = list(dict.fromkeys([*meta.get("instructions", []), *rmeta.get("instructions", [])]))
    return out


def success_point_meta(meta: dict, s: float, k: int, facts: dict | None = None) -> dict:
    """``meta`` with the success detector's operating point set by hand to (s, k), e.g. a point
    chosen on the policy's own marked rollouts (``efm-ros calibrate``) rather than the
    trainer's calibration on held-out demonstrations. The calibrated point stays on record next to
    it (``training.success_override`` of the manifest)."""
    if not (np.isfinite(s) and s >= 0.0) or int(k) != k or k < 1:
        raise ValueError(f"a success point needs s >= 0 (steps) and an integer k >= 1 (ticks), got s {s}, k {k}")
    return {**meta, "success_threshold": float(s), "success_k": int(k),
            "success_override": {"threshold_steps": float(s), "consecutive": int(k), **(facts or {}),
                                 "calibrated": {"threshold_steps": float(meta["success_threshold"]),
                                                "consecutive": int(meta["success_k"])}}}


def export_dir(run: Path, out: Path, *, version: str | None = None, reward_run: Path | None = None,
               instructions: Sequence[Path] = (), force: bool = False, signing_key: Path | None = None,
               success: tuple[float, float] | None = None, success_facts: dict | None = None) -> dict:
    """What ``efm-ros export`` does: export the training run (or exported model directory) ``run``
    to ``out`` and return the verified manifest. reward_run: take the reward model and its s / k
    from this run; success: the detector's operating point (s, k) set by hand
    (:func:`success_point_meta`), with ``success_facts`` (how it was chosen) on record."""
    run, out = Path(run), Path(out)
    reexport = (run / MANIFEST_NAME).is_file()
    policy, reward_model, meta, table = (load_model_dir_as_run if reexport else load_run)(run)
    if reexport and version is None:    # verified just above
        version = json.loads((run / MANIFEST_NAME).read_text())["model_version"]
    if reward_run is not None:
        _, reward_model, reward_meta, reward_table = load_run(reward_run)   # its own config (e.g. stg_bins)
        meta = reward_run_meta(meta, reward_meta, reward_run)
        for text in reward_table:
            if text not in table:
                table.add(text, reward_table[text])
    if success is not None:
        meta = success_point_meta(meta, success[0], success[1], success_facts)
    extra = list(meta.get("instructions", []))
    for f in instructions:
        extra += [line.strip() for line in Path(f).read_text().splitlines() if line.strip()]
    if any(t not in table for t in extra):
        InstructionEncoder(table=table).encode(extra)   # embeds the new ones into `table`
    mapped = {"data_hash", "metrics", "success_threshold", "success_k", "control_rate_hz",
              "instructions", "action_scale"}
    return export_model(
        policy, out, reward_model=reward_model, instructions=table,
        success_threshold=float(meta["success_threshold"]), success_k=int(meta["success_k"]),
        control_rate_hz=float(meta["control_rate_hz"]), data_hash=str(meta["data_hash"]),
        metrics=dict(meta["metrics"]), model_version=version, action_scale=meta.get("action_scale"),
        training={k: v for k, v in meta.items() if k not in mapped}, overwrite=force,
        signing_key=signing_key)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="efm-ros export", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="training run directory (see layout below), or an exported model directory "
                    "to export again (its checkpoints and manifest facts; e.g. to add the split graphs)")
    ap.add_argument("--out", type=Path, required=True, help="model directory to write, e.g. models/v001")
    ap.add_argument("--version", help="model version string (default: the --out directory name)")
    ap.add_argument("--instructions", type=Path, action="append", default=[],
                    help="text file, one instruction per line, to add to the table (repeatable)")
    ap.add_argument("--force", action="store_true", help="replace --out if it exists")
    ap.add_argument("--signing-key", type=Path, help="Ed25519 private key (efm-ros keygen) that signs the manifest")
    ap.add_argument("--reward-run", type=Path, help="take the reward model, its metrics and its success threshold s / k "
                    "from this run instead (its own network config, the same image size), e.g. steps-to-go retrained on marked rollouts "
                    "(train-sft --rollouts) under the policy of RUN")
    ap.add_argument("--success", nargs=2, type=float, metavar=("S", "K"),
                    help="the success detector's operating point (d <= S steps for K ticks) instead of the calibrated "
                    "one, e.g. a point chosen on the policy's marked rollouts; the calibrated point stays on record")
    ap.epilog = __doc__[__doc__.index("Run directory"):__doc__.index("Usage:")]
    args = ap.parse_args(argv)
    manifest = export_dir(args.run, args.out, version=args.version, reward_run=args.reward_run,
                          instructions=args.instructions, force=args.force, signing_key=args.signing_key,
                          success=tuple(args.success) if args.success is not None else None)
    parity = manifest["export"]["parity_max_abs_diff"]
    print(f"exported {manifest['model_version']} -> {args.out}: {len(manifest['files'])} files, "
          f"{manifest['instructions']['count']} instructions, max |ORT - torch| {max(parity.values()):.1e}")
    print(f"verified {args.out / MANIFEST_NAME}")
    return 0
