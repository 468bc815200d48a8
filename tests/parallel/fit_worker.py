"""Train a small MLP with `fit` on fixed random data and save its parameters: python fit_worker.py OUT.

Run once alone and once on several ranks (RANK / WORLD_SIZE from the environment) to compare
data-parallel training with one process."""

import sys

import torch
from torch import nn

from netshrink.data import ArrayDataset
from netshrink.parallel.runtime import init_from_env, ranks
from netshrink.training.loop import TrainConfig, fit


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10))


def data() -> ArrayDataset:
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (256, 3, 4, 4), generator=generator, dtype=torch.uint8)
    return ArrayDataset(images, images.float().mean((2, 3)).argmax(1))


def main(out: str) -> None:
    init_from_env()
    model = mlp()
    fit(model, data(), TrainConfig(epochs=2, batch_size=32, lr=0.1, momentum=0.9), progress=False)
    torch.save(model.state_dict(), f"{out}.{ranks().rank}")


if __name__ == "__main__":
    main(sys.argv[1])
