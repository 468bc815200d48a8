"""LeNet-300-100 and LeNet-5 (Caffe variant), the MNIST baselines of Han et al. 2016.

No pretrained weights are published for them; `netshrink train` produces a checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

from netshrink.errors import ModelError
from netshrink.zoo.normalize import mnist_normalize


class LeNet300(nn.Module):
    """784-300-100-10 fully connected network with ReLU (LeCun et al. 1998)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.normalize = mnist_normalize()
        self.fc1 = nn.Linear(28 * 28, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x).flatten(1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


class LeNet5(nn.Module):
    """Caffe's LeNet: conv 20@5x5, pool, conv 50@5x5, pool, fc 500, ReLU, fc 10.

    As in Caffe's `lenet_train_test.prototxt` (the model Han et al. 2016 compress), there is
    no nonlinearity after the convolutions; the max-pools provide it.

    `widths` (conv1, conv2, fc1) lets filter pruning record a thinner network. `head="gap"`
    replaces flatten + fc1 by fc1 as a 1x1 convolution at each of the 4x4 positions, ReLU,
    then global average pooling before fc2 (Lin et al. 2014, "Network in Network", sec. 3.2).
    fc1 is kept, not dropped: the ReLU before the pooling lets each position's features fire
    on their own, while pooling first would average the linear conv2 features into 50
    numbers and lose what the 400 K-weight fc1 did. The head keeps fc1's multiply-adds
    (16 positions x 50 x 500) but needs 16x fewer of its weights.
    """

    def __init__(
        self, num_classes: int = 10, widths: Sequence[int] = (20, 50, 500), head: Literal["fc", "gap"] = "fc"
    ) -> None:
        super().__init__()
        if len(widths) != 3 or min(widths) < 1:
            raise ModelError(f"lenet5: widths must be three positive channel counts (conv1, conv2, fc1), got {widths}")
        if head not in ("fc", "gap"):
            raise ModelError(f"lenet5: head must be 'fc' or 'gap', got {head!r}")
        conv1, conv2, fc1 = (int(w) for w in widths)
        self.head = head
        self.normalize = mnist_normalize()
        self.conv1 = nn.Conv2d(1, conv1, kernel_size=5)
        self.conv2 = nn.Conv2d(conv1, conv2, kernel_size=5)
        self.fc1: nn.Module = nn.Linear(conv2 * 4 * 4, fc1) if head == "fc" else nn.Conv2d(conv2, fc1, 1)
        self.fc2 = nn.Linear(fc1, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        x = nn.functional.max_pool2d(self.conv1(x), 2)
        x = nn.functional.max_pool2d(self.conv2(x), 2)
        if self.head == "gap":
            x = torch.relu(self.fc1(x)).mean((2, 3))
        else:
            x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)

    def arch_options(self) -> dict[str, Any]:
        """The `build_model("lenet5", ...)` arguments that rebuild this module's shape."""
        widths = [self.conv1.out_channels, self.conv2.out_channels, self.fc2.in_features]
        return {"num_classes": self.fc2.out_features, "widths": widths, "head": self.head}

    def to_gap_head(self) -> None:
        """Switch to the GAP head in place, warm-starting the 1x1 fc1 from the dense fc1.

        Summing fc1's weights over the 16 positions gives the 1x1 kernel that reproduces the
        old pre-activation whenever the feature map is spatially constant; fc2 is kept.
        """
        if self.head == "gap":
            return
        fc1 = self.fc1
        assert isinstance(fc1, nn.Linear)
        channels = self.conv2.out_channels
        conv = nn.Conv2d(channels, fc1.out_features, 1).to(fc1.weight)
        with torch.no_grad():
            conv.weight.copy_(fc1.weight.reshape(fc1.out_features, channels, -1).sum(-1)[..., None, None])
            conv.bias.copy_(fc1.bias)
        self.fc1, self.head = conv, "gap"
