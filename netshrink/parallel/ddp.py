"""Data-parallel training: the one training loop (`training.loop.fit`) on several processes.

When the run is distributed (netshrink/parallel/runtime.py), `fit` trains the model wrapped in
DistributedDataParallel and draws its batches from `shard_batches`: every process draws the SAME
seeded order of the samples (the order one process would draw), cuts each batch of the configured
size into one slice per process and keeps its own. DDP averages the gradients, so a step on N
processes follows the mean gradient of the whole batch: 1 and N processes train with the same
hyper-parameters (batch size, learning rate, schedule, number of steps).

The hooks of a retraining method (training/session.py: pruning masks, shared centroid gradients,
ADMM penalties) run on every process after the gradients are averaged, on identical gradients and
identical parameters, so they keep the parameters identical everywhere. BatchNorm running
statistics are buffers, not parameters: DDP gives every forward rank 0's (`broadcast_buffers`),
and when training ends rank 0's whole state is broadcast (`same_state_as_main`), so every process
continues the recipe with the very model rank 0 writes.

Without a process group every function here returns its input: `fit` reads the same either way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from netshrink.data.arrays import Batch, BatchLoader
from netshrink.parallel.runtime import Ranks, collective_device, ranks


class ShardedBatches:
    """This process's slice of every batch `loader` would give one process.

    The sample order comes from the loader's seed (the same on every process); augmentation draws
    from a generator of its own per process (seeded from the epoch's seed and the rank), so the
    processes do not shift or flip their slices alike. A batch smaller than the number of processes
    (the last one of an epoch, at most) is skipped on every process alike.
    """

    def __init__(self, loader: BatchLoader, here: Ranks) -> None:
        self.loader, self.here = loader, here

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        order, generator = self.loader.next_epoch()
        total = len(self.loader.data)
        order = torch.arange(total) if order is None else order
        augment = torch.Generator().manual_seed(generator.initial_seed() * self.here.world + self.here.rank)
        size = self.loader.batch_size
        for start in range(0, total, size):
            batch = order[start : start + size]
            if len(batch) < self.here.world:
                continue
            yield self.loader.batch_of(shard_of(batch, self.here), augment)


def shard_of(batch: torch.Tensor, here: Ranks) -> torch.Tensor:
    """The contiguous slice of `batch` (sample indices) that process `here.rank` trains on."""
    n = len(batch)
    return batch[n * here.rank // here.world : n * (here.rank + 1) // here.world]


def shard_batches(loader: Any) -> Any:
    """`loader`, or this process's `ShardedBatches` of it in a distributed run."""
    here = ranks()
    if not here.distributed:
        return loader
    if not isinstance(loader, BatchLoader):
        raise TypeError(f"data-parallel training shards a BatchLoader, got {type(loader).__name__}")
    return ShardedBatches(loader, here)


@contextmanager
def data_parallel(model: nn.Module) -> Iterator[nn.Module]:
    """The module to train: `model` itself, or `model` in DistributedDataParallel in a distributed
    run. Hooks keep working on `model` (DDP shares its parameters). On leaving, every process holds
    rank 0's parameters and buffers (BatchNorm statistics), whatever happened on the others."""
    here = ranks()
    if not here.distributed or not any(p.requires_grad for p in model.parameters()):
        yield model
        return
    from torch.nn.parallel import DistributedDataParallel

    same_layout(model)
    yield DistributedDataParallel(model)  # buffers: rank 0's before every forward (the default)
    same_state_as_main(model)


def same_layout(model: nn.Module) -> None:
    """Every parameter in the default (contiguous) memory layout. DDP requires the same strides on
    every rank, and rank 0 alone may have scored the model (evaluation converts it to channels_last)."""
    for param in model.parameters():
        if param.stride() != torch.empty(param.shape, device="meta").stride():  # also size-1 dims (C = 1)
            param.data = param.data.clone(memory_format=torch.contiguous_format)


def same_state_as_main(model: nn.Module) -> None:
    """Overwrite every tensor of `model`'s state with rank 0's (no-op on one process)."""
    if not ranks().distributed:
        return
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.device.type == "meta" or tensor.numel() == 0:
                continue
            buffer = tensor if tensor.is_contiguous() else tensor.contiguous()
            dist.broadcast(buffer, src=0)
            if buffer is not tensor:
                tensor.copy_(buffer)


def global_mean(value: float) -> float:
    """The mean of `value` over the processes (the loss of a step, for the divergence check, which
    must stop every process alike); `value` itself on one process."""
    here = ranks()
    if not here.distributed:
        return value
    total = torch.tensor([value], dtype=torch.float64, device=collective_device())
    dist.all_reduce(total)
    return float(total) / here.world
