"""Input normalisation as the first module of every zoo model.

Each model takes float images in [0, 1] and normalises them itself, so callers (the data
loaders, the evaluator, the CLI) never need to know which statistics a checkpoint was trained
with. The constants are non-persistent buffers: they follow `.to(device)` but stay out of the
state_dict, so the published checkpoints load with `strict=True`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Normalize(nn.Module):
    """`(x - mean) / std` per channel, with constants that are not saved in the state_dict."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} channels but std has {len(std)}")
        shape = (1, len(mean), 1, 1)
        self.register_buffer("mean", torch.tensor(mean).reshape(shape), persistent=False)
        self.register_buffer("std", torch.tensor(std).reshape(shape), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def mnist_normalize() -> Normalize:
    """MNIST statistics (mean 0.1307, std 0.3081), the usual choice for LeNet training."""
    return Normalize((0.1307,), (0.3081,))


def imagenet_normalize() -> Normalize:
    """ImageNet mean/std; the CIFAR ResNet-20 checkpoint (akamaster) was trained with these."""
    return Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def tflite_normalize(channels: int = 3) -> Normalize:
    """`(255 x - 127) / 128`, the EfficientNet-Lite input convention, written as mean/std on [0, 1]."""
    return Normalize((127.0 / 255.0,) * channels, (128.0 / 255.0,) * channels)
