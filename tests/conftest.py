"""Shared fixtures: small models and the location of ../shared/data (tests needing it skip without it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NETSHRINK_DATA", REPO.parent / "shared" / "data"))


def shared_data_or_skip() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"needs the shared data folder {SHARED_DATA} (set NETSHRINK_DATA)")
    return SHARED_DATA


class TinyNet(nn.Module):
    """Conv + BN + Linear: every kind of tensor a real model has, small enough for fast tests."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


@pytest.fixture
def tiny_net() -> TinyNet:
    torch.manual_seed(0)
    net = TinyNet()
    with torch.no_grad():  # non-trivial BN statistics, so round-trips of buffers are meaningful
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2)
        net.bn.num_batches_tracked.fill_(7)
    return net.eval()


def random_images(n: int, size: int, seed: int):
    """n random 3 x size x size uint8 images with random labels of 10 named classes (TinyNet's width)."""
    from netshrink.data import ArrayDataset

    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    return ArrayDataset(x, torch.randint(0, 10, (n,), generator=g), tuple("abcdefghij"))


@pytest.fixture
def tiny_images():
    """256 random 3x8x8 images whose label is the brightest colour channel: learnable in a few steps,
    the right input size for TinyNet. For tests of the retraining mechanics."""
    from netshrink.data import ArrayDataset

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (256, 3, 8, 8), generator=g, dtype=torch.uint8)
    return ArrayDataset(x, x.float().mean((2, 3)).argmax(1))


@pytest.fixture(autouse=True)
def computes_on_cpu(request, monkeypatch):
    """The default suite computes on CPU on any machine (its exact numbers are CPU numbers); tests
    marked `device` choose their devices themselves."""
    if request.node.get_closest_marker("device") is None:
        monkeypatch.setenv("NETSHRINK_DEVICE", "cpu")
