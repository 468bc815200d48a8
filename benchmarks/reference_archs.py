"""AlexNet and GoogLeNet (v1) as shapes only, for validating the energy model against the per-layer
figures published for them. No weights are published with netshrink for these, so they are not in
the user-facing zoo; build them on the meta device (`torch.device("meta")`) to allocate nothing.

- AlexNet as in Caffe's bvlc_alexnet (the network Yang et al. CVPR 2017 and Eyeriss measure):
  227x227 input, two-group conv2/4/5 (Krizhevsky et al. 2012, Fig. 2), LRN omitted (no weights,
  no MACs counted).
- GoogLeNet as in Szegedy et al. CVPR 2015, Table 1: 224x224 input, the 5x5 branch really 5x5
  (torchvision's version uses 3x3 there), max-pools with ceil rounding as in Caffe, auxiliary
  classifiers omitted (inference only).
"""

from __future__ import annotations

import torch
from torch import nn

ALEXNET_INPUT = (3, 227, 227)
GOOGLENET_INPUT = (3, 224, 224)


class ConvReLU(nn.Conv2d):
    """A convolution followed by ReLU, as one module so each layer has the name the papers give it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(super().forward(x))


def _conv(cin: int, cout: int, kernel: int, stride: int = 1, padding: int | None = None, groups: int = 1) -> ConvReLU:
    return ConvReLU(cin, cout, kernel, stride, kernel // 2 if padding is None else padding, groups=groups)


class AlexNet(nn.Module):
    """Caffe bvlc_alexnet: conv1..conv5, fc6..fc8 (module names match the papers' layer names)."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = _conv(3, 96, 11, stride=4, padding=0)
        self.conv2 = _conv(96, 256, 5, groups=2)
        self.conv3 = _conv(256, 384, 3)
        self.conv4 = _conv(384, 384, 3, groups=2)
        self.conv5 = _conv(384, 256, 3, groups=2)
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.fc6 = nn.Linear(256 * 6 * 6, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.fc8 = nn.Linear(4096, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.conv2(self.pool(self.conv1(x))))
        x = self.pool(self.conv5(self.conv4(self.conv3(x))))
        x = torch.relu(self.fc6(x.flatten(1)))
        return self.fc8(torch.relu(self.fc7(x)))


class Inception(nn.Module):
    """One inception module (Szegedy et al. 2015, Fig. 2b): 1x1, 1x1->3x3, 1x1->5x5, pool->1x1."""

    def __init__(self, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, pool_proj: int) -> None:
        super().__init__()
        self.b1 = _conv(cin, c1, 1)
        self.b3_reduce, self.b3 = _conv(cin, c3r, 1), _conv(c3r, c3, 3)
        self.b5_reduce, self.b5 = _conv(cin, c5r, 1), _conv(c5r, c5, 5)
        self.pool, self.pool_proj = nn.MaxPool2d(3, 1, 1), _conv(cin, pool_proj, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.b1(x), self.b3(self.b3_reduce(x)), self.b5(self.b5_reduce(x)), self.pool_proj(self.pool(x))]
        return torch.cat(branches, 1)


#: (name, in channels, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj): Szegedy et al. Table 1.
INCEPTIONS = (
    ("inception3a", 192, 64, 96, 128, 16, 32, 32),
    ("inception3b", 256, 128, 128, 192, 32, 96, 64),
    ("inception4a", 480, 192, 96, 208, 16, 48, 64),
    ("inception4b", 512, 160, 112, 224, 24, 64, 64),
    ("inception4c", 512, 128, 128, 256, 24, 64, 64),
    ("inception4d", 512, 112, 144, 288, 32, 64, 64),
    ("inception4e", 528, 256, 160, 320, 32, 128, 128),
    ("inception5a", 832, 256, 160, 320, 32, 128, 128),
    ("inception5b", 832, 384, 192, 384, 48, 128, 128),
)
_POOL_AFTER = {"inception3b", "inception4e"}


class GoogLeNet(nn.Module):
    """GoogLeNet v1 without auxiliary heads; children named as in Szegedy et al. Table 1."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = _conv(3, 64, 7, stride=2, padding=3)
        self.conv2_reduce = _conv(64, 64, 1)
        self.conv2 = _conv(64, 192, 3)
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.inceptions = nn.ModuleDict({name: Inception(*sizes) for name, *sizes in INCEPTIONS})
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.conv2(self.conv2_reduce(self.pool(self.conv1(x)))))
        for name, block in self.inceptions.items():
            x = block(x)
            if name in _POOL_AFTER:
                x = self.pool(x)
        return self.fc(x.mean((2, 3)))
