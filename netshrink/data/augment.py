"""Training augmentation in plain tensor ops on whole batches (no torchvision here)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

AUGMENTATIONS = ("flip", "crop_flip", "shift")

# The standard recipe per dataset: He et al. 2016 (CIFAR: pad 4, random 32x32 crop, flip).
DEFAULT_AUGMENTATION: dict[str, str | None] = {
    "mnist": "shift",
    "mnist5k": None,
    "cifar10": "crop_flip",
    "imagenette": "flip",
}


def augment_batch(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Augment a float batch (N, C, H, W). `kind`: "flip", "crop_flip" (pad 4 + crop + flip), or
    "shift" (random translation by up to 2 pixels, no flip: digits are not mirror-symmetric)."""
    if kind == "flip":
        return random_flip(x, generator)
    if kind == "shift":
        return random_crop(x, 2, generator)
    if kind == "crop_flip":
        return random_flip(random_crop(x, 4, generator), generator)
    raise ValueError(f"unknown augmentation {kind!r}; choose one of {AUGMENTATIONS}")


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(len(x), generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by `padding` and cut a random H x W window per image, in one gather."""
    n, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    channel = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return padded[batch, channel, rows, cols]
