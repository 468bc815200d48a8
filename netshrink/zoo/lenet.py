"""LeNet-300-100 and LeNet-5 (Caffe variant), the MNIST baselines of Han et al. 2016.

No pretrained weights are published for them; `netshrink train` produces a checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn

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
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.normalize = mnist_normalize()
        self.conv1 = nn.Conv2d(1, 20, kernel_size=5)
        self.conv2 = nn.Conv2d(20, 50, kernel_size=5)
        self.fc1 = nn.Linear(50 * 4 * 4, 500)
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        x = nn.functional.max_pool2d(self.conv1(x), 2)
        x = nn.functional.max_pool2d(self.conv2(x), 2)
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)
