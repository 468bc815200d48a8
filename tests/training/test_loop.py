"""The training loop's label handling: a 1000-way model trained on an ImageNet subset."""

from __future__ import annotations

import torch
from torch import nn

from netshrink.data import ArrayDataset
from netshrink.training.loop import TrainConfig, fit


def test_a_1000_way_model_trains_on_the_imagenet_index_of_each_subset_label():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 4, 4), generator=g, dtype=torch.uint8)
    labels = images.float().mean((2, 3)).argmax(1)  # 3 classes: the brightest channel
    data = ArrayDataset(images, labels, ("a", "b", "c"), imagenet_classes=(7, 500, 999))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 1000))
    fit(model, data, TrainConfig(epochs=30, batch_size=16, lr=0.05), progress=False)
    predicted = model(images.float() / 255).argmax(1)
    assert set(predicted.tolist()) <= {7, 500, 999}
    assert (predicted == torch.tensor([7, 500, 999])[labels]).float().mean() > 0.8
