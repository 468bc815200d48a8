"""In-memory (or memory-mapped) uint8 image datasets and a batched loader over them.

Images stay uint8 until a batch is taken, so a 1.4 GB Imagenette split can be memory-mapped
from the cache, and whole batches are gathered with one index operation instead of one
Python call per sample.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from netshrink.data.augment import augment_batch
from netshrink.errors import DataError

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(eq=False)
class ArrayDataset(Dataset):
    """uint8 images (N, C, H, W) with int64 labels 0..K-1.

    `imagenet_classes`, when set, gives the ImageNet-1k index of each of the K labels, so a
    1000-way model can be scored on a 10-class ImageNet subset (see `label_map`).
    """

    images: torch.Tensor
    labels: torch.Tensor
    label_names: tuple[str, ...] = ()
    imagenet_classes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (len(self.images),):
            raise DataError(f"{len(self.images)} images but labels of shape {tuple(self.labels.shape)}")
        self.labels = self.labels.to(torch.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index].float().div_(255), int(self.labels[index])

    @property
    def num_classes(self) -> int:
        return len(self.label_names) if self.label_names else int(self.labels.max()) + 1

    @property
    def imagenet_labels(self) -> torch.Tensor:
        """Each sample's ImageNet-1k index (only for ImageNet subsets such as Imagenette)."""
        return self.label_map(1000)[self.labels]

    def label_map(self, num_outputs: int) -> torch.Tensor:
        """Maps label k to the output index a `num_outputs`-way model should predict for it."""
        if num_outputs == self.num_classes:
            return torch.arange(num_outputs)
        if self.imagenet_classes is not None and num_outputs == 1000:
            return torch.tensor(self.imagenet_classes, dtype=torch.int64)
        raise DataError(
            f"a model with {num_outputs} outputs cannot be scored on a dataset with "
            f"{self.num_classes} classes" + ("" if self.imagenet_classes is None else " (or 1000 ImageNet classes)")
        )

    def subset(self, indices: torch.Tensor) -> ArrayDataset:
        """The samples at `indices` (copied), keeping the label metadata."""
        return ArrayDataset(self.images[indices], self.labels[indices], self.label_names, self.imagenet_classes)

    def sample(self, n: int, seed: int = 0) -> ArrayDataset:
        """A deterministic random subset of `n` samples, in dataset order.

        Random rather than the first `n` because the image datasets are stored sorted by class.
        """
        if n >= len(self):
            return self
        generator = torch.Generator().manual_seed(seed)
        indices = torch.randperm(len(self), generator=generator)[:n].sort().values
        return self.subset(indices)

    def loader(self, batch_size: int, shuffle: bool = False, augment: str | None = None, seed: int = 0) -> BatchLoader:
        """Batches of (float images in [0, 1], labels); see `augment_batch` for `augment`."""
        return BatchLoader(self, batch_size, shuffle, augment, seed)


class BatchLoader:
    """Iterates over an ArrayDataset in batches; each new iteration is a new epoch.

    Epoch e shuffles and augments with seed `seed + e`, so runs are reproducible yet epochs
    differ.
    """

    def __init__(self, data: ArrayDataset, batch_size: int, shuffle: bool, augment: str | None, seed: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.data, self.batch_size, self.shuffle = data, batch_size, shuffle
        self.augment, self.seed, self.epoch = augment, seed, 0

    def __len__(self) -> int:
        return -(-len(self.data) // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        order, generator = self.next_epoch()
        for start in range(0, len(self.data), self.batch_size):
            yield self._batch(order, start, generator)

    def next_epoch(self) -> tuple[torch.Tensor | None, torch.Generator]:
        """Start the next epoch: its sample order (None: dataset order) and the generator that drew it
        (augmentation continues from it). A data-parallel run cuts each batch of this order into
        per-process slices (netshrink/parallel/ddp.py), so every process must draw the same order."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        order = torch.randperm(len(self.data), generator=generator) if self.shuffle else None
        return order, generator

    def batch_of(self, index: torch.Tensor, generator: torch.Generator) -> Batch:
        """The batch of the samples at `index` (augmented with draws from `generator`)."""
        return self._batch(index, 0, generator)

    def _batch(self, order: torch.Tensor | None, start: int, generator: torch.Generator) -> Batch:
        stop = min(start + self.batch_size, len(self.data))
        index = slice(start, stop) if order is None else order[start:stop]
        x = self.data.images[index].float().div_(255)
        if self.augment:
            x = augment_batch(x, self.augment, generator)
        return x, self.data.labels[index]
