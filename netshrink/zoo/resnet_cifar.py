"""CIFAR ResNet-20 (He et al. 2016, sec. 4.2) with option-A shortcuts.

Option A: when a block halves the resolution and doubles the width, the shortcut subsamples
with stride 2 and zero-pads the new channels, so the shortcut has no parameters. Module names
match the public `pytorch_resnet_cifar10` checkpoint (`conv1`, `bn1`, `layerX.Y.conv1`, `linear`)
so it loads strictly once the `module.` (DataParallel) prefix is removed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from netshrink.errors import ModelError
from netshrink.select import MATRIX_LAYERS
from netshrink.zoo.normalize import imagenet_normalize


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: stride-2 subsampling plus zero channels on both sides."""

    def __init__(self, extra_channels: int) -> None:
        super().__init__()
        self.pad = extra_channels // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or option-A) shortcut.

    `inner` is the width between the two convolutions (default `planes`). Only it can shrink
    when filters are pruned: conv2's outputs are added to the shortcut, so their count is fixed.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1, inner: int | None = None) -> None:
        super().__init__()
        inner = planes if inner is None else inner
        self.conv1 = nn.Conv2d(in_planes, inner, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        needs_projection = stride != 1 or in_planes != planes
        self.shortcut: nn.Module = ZeroPadShortcut(planes - in_planes) if needs_projection else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs: 3 stages of `n` blocks at 16/32/64 channels (depth 6n+2).

    `inner_widths` (one per block, in order) gives each block's width between its two convs,
    so a filter-pruned network rebuilds from its recorded widths; default: the stage width.
    """

    #: Already global average pooling + linear: there is no flatten + FC head to replace.
    head = "gap"

    def __init__(
        self, blocks_per_stage: int = 3, num_classes: int = 10, inner_widths: Sequence[int] | None = None
    ) -> None:
        super().__init__()
        inner = self._inner_widths(blocks_per_stage, inner_widths)
        self.normalize = imagenet_normalize()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, inner[:blocks_per_stage], stride=1)
        self.layer2 = self._stage(16, 32, inner[blocks_per_stage : 2 * blocks_per_stage], stride=2)
        self.layer3 = self._stage(32, 64, inner[2 * blocks_per_stage :], stride=2)
        self.linear = nn.Linear(64, num_classes)
        self._init_weights()

    @staticmethod
    def _inner_widths(blocks_per_stage: int, inner_widths: Sequence[int] | None) -> list[int]:
        default = [planes for planes in (16, 32, 64) for _ in range(blocks_per_stage)]
        if inner_widths is None:
            return default
        widths = [int(w) for w in inner_widths]
        if len(widths) != len(default) or min(widths) < 1:
            raise ModelError(
                f"inner_widths must be {len(default)} positive widths (one per block), got {list(inner_widths)}"
            )
        return widths

    @staticmethod
    def _stage(in_planes: int, planes: int, inner: Sequence[int], stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_planes, planes, stride, inner[0])]
        layers += [BasicBlock(planes, planes, inner=width) for width in inner[1:]]
        return nn.Sequential(*layers)

    def blocks(self) -> list[BasicBlock]:
        return [block for stage in (self.layer1, self.layer2, self.layer3) for block in stage]

    def arch_options(self) -> dict[str, Any]:
        """The `build_model(...)` arguments that rebuild this module's shape (for filter pruning)."""
        return {
            "num_classes": self.linear.out_features,
            "inner_widths": [block.conv1.out_channels for block in self.blocks()],
        }

    def _init_weights(self) -> None:
        # He et al. 2015 initialisation, as used to train the published checkpoint.
        for module in self.modules():
            if isinstance(module, MATRIX_LAYERS):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(self.normalize(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.linear(x)


def resnet20(num_classes: int = 10, inner_widths: Sequence[int] | None = None) -> CifarResNet:
    """ResNet-20: 3 blocks per stage, 0.27 M parameters; `inner_widths`: 9 per-block widths."""
    return CifarResNet(blocks_per_stage=3, num_classes=num_classes, inner_widths=inner_widths)
