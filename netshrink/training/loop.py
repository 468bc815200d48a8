"""The one training loop. Methods that retrain plug into it through hooks (`TrainHook`), driven by a
`TrainingSession` (training/session.py), as the caller's own loop would drive them. No method owns a
copy of the epoch loop.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from netshrink.data import ArrayDataset
from netshrink.devices import Autocast, autocast_context, model_device, resolve_device, to_device
from netshrink.errors import NetshrinkError
from netshrink.parallel.ddp import data_parallel, global_mean, shard_batches
from netshrink.parallel.runtime import is_main
from netshrink.training.session import TrainHook, TrainingSession

log = logging.getLogger(__name__)


def call_model(model: nn.Module, inputs: Any) -> Any:
    """Run `model` on one batch's inputs: an image tensor, or a text batch given as a tuple/list
    (model(*inputs)) or a dict of tensors (model(**inputs)). Every loop, loss and calibration pass
    calls models through this, so a method written for CNNs also runs on a transformer."""
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser and schedule settings (SGD with momentum and a cosine schedule by default)."""

    epochs: float = 10
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    optimizer: Literal["sgd", "adam"] = "sgd"
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = 0
    augment: str | None = None
    label_smoothing: float = 0.0
    seed: int = 0
    #: "bf16": forward passes and the loss under bfloat16 autocast (faster on GPUs with bf16 units); None: float32.
    autocast: Autocast = None
    #: Train in eval mode: BatchNorm keeps its running statistics and dropout stays off, as in the
    #: teacher a fine-tuning against the uncompressed network compares with.
    eval_mode: bool = False

    def __post_init__(self) -> None:
        if self.epochs <= 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs, batch_size and lr must be positive")
        if self.autocast not in (None, "bf16"):
            raise ValueError(f"autocast must be 'bf16' or None, got {self.autocast!r}")


@dataclass
class TrainResult:
    steps: int
    losses: list[float] = field(default_factory=list)


def make_optimizer(params: Sequence[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, nesterov=config.momentum > 0
    )


def _lr_factor(step: int, total: int, config: TrainConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return 1.0
    progress = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def fit(
    model: nn.Module,
    data: ArrayDataset,
    config: TrainConfig,
    hooks: Sequence[TrainHook] = (),
    *,
    progress: bool = True,
    loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    params: Sequence[nn.Parameter] | None = None,
    desc: str = "train",
    device: torch.device | str | None = None,
) -> TrainResult:
    """Train `model` on `data` for `config.epochs` epochs (fractions allowed) with `hooks` plugged in.
    In a distributed run, data-parallel: each process trains on its slice of every batch
    (netshrink/parallel/ddp.py).

    `loss_fn(model, x, y)` defaults to cross-entropy on `call_model(model, x)`; distillation passes
    its own (`netshrink.training.distill.DistillationLoss`). `params` limits what the optimiser updates
    (default: all parameters). `device`: where to train (the model is moved there and stays; batches
    and labels follow); None: where the model is.
    """
    device = model_device(model) if device is None else resolve_device(device)
    model.to(device)
    torch.manual_seed(config.seed)
    # Penalties that pull weights to zero (ADMM, weight decay on pruned weights) leave subnormal
    # floats, which x86 multiplies up to ~80x slower (LeNet-5 ADMM: 57 -> 12 steps/s). Flushing
    # them to zero changes no result above 1e-38.
    torch.set_flush_denormal(True)
    loader = shard_batches(data.loader(config.batch_size, shuffle=True, augment=config.augment, seed=config.seed))
    total = max(1, int(round(config.epochs * len(loader))))
    optimizer = make_optimizer(list(params if params is not None else model.parameters()), config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, total, config))
    loss_fn = loss_fn or (lambda m, x, y: F.cross_entropy(call_model(m, x), y, label_smoothing=config.label_smoothing))
    targets = _imagenet_targets(model, data)
    session = TrainingSession(model, hooks)
    model.train(not config.eval_mode)
    result, step = TrainResult(total), 0
    with (
        data_parallel(model) as trained,
        tqdm(total=total, desc=desc, disable=not progress or not is_main(), unit="step") as bar,
    ):
        while step < total:
            for x, y in loader:
                x, y = to_device(x, device), to_device(y if targets is None else targets[y], device)
                precision = autocast_context(device, config.autocast)
                loss = global_mean(_train_step(trained, loss_fn, x, y, session, optimizer, precision))
                if not math.isfinite(loss):
                    raise NetshrinkError(
                        f"training diverged at step {step} (loss {loss}); lower the learning rate (--lr)"
                    )
                scheduler.step()
                session.after_step()
                result.losses.append(loss)
                step += 1
                bar.update(1)
                if step % 20 == 0:
                    bar.set_postfix(loss=f"{sum(result.losses[-20:]) / 20:.4f}")
                if step >= total:
                    break
    session.finalize()
    model.eval()
    return result


def _imagenet_targets(model: nn.Module, data: ArrayDataset) -> torch.Tensor | None:
    """Label k -> its ImageNet-1k index when a 1000-way model trains on an ImageNet subset
    (Imagenette's labels are 0..9; evaluation maps them the same way), else None."""
    if getattr(data, "imagenet_classes", None) is None or len(data) == 0:
        return None
    was_training = model.training
    with torch.no_grad():
        inputs = next(iter(data.subset(torch.arange(1)).loader(1)))[0]
        outputs = call_model(model.eval(), to_device(inputs, model_device(model)))
    model.train(was_training)
    if isinstance(outputs, torch.Tensor) and outputs.dim() == 2 and outputs.shape[1] != data.num_classes:
        return data.label_map(outputs.shape[1])
    return None


def _train_step(
    model: nn.Module,
    loss_fn: Callable,
    x: torch.Tensor,
    y: torch.Tensor,
    session: TrainingSession,
    optimizer: torch.optim.Optimizer,
    precision: AbstractContextManager,
) -> float:
    optimizer.zero_grad(set_to_none=True)
    with precision:  # the forward pass and loss only: backward runs outside autocast, as autocast asks
        loss = session.loss(loss_fn(model, x, y))
    loss.backward()
    session.after_backward()
    optimizer.step()
    return float(loss.detach())


#: Tuned from-scratch settings per (model, data set); fine-tuning uses a lower rate (see below).
_DEFAULTS: dict[tuple[str, str], TrainConfig] = {
    ("lenet5", "mnist5k"): TrainConfig(epochs=6, batch_size=64, lr=0.05, weight_decay=5e-4),
    ("lenet5", "mnist"): TrainConfig(
        epochs=12, batch_size=64, lr=0.02, weight_decay=5e-4, augment="shift", warmup_steps=200
    ),
    ("lenet300", "mnist"): TrainConfig(
        epochs=15, batch_size=128, lr=0.05, weight_decay=1e-4, augment="shift", warmup_steps=200
    ),
    ("lenet300", "mnist5k"): TrainConfig(epochs=10, batch_size=64, lr=0.05, weight_decay=1e-4),
    ("resnet20", "cifar10"): TrainConfig(epochs=160, batch_size=128, lr=0.1, weight_decay=1e-4, augment="crop_flip"),
}


def default_train_config(model: str, dataset: str, fine_tune: bool = False) -> TrainConfig:
    """The settings `netshrink train` uses unless told otherwise."""
    from netshrink.data import DEFAULT_AUGMENTATION

    base = _DEFAULTS.get((model, dataset), TrainConfig(augment=DEFAULT_AUGMENTATION.get(dataset)))
    if fine_tune:  # from published weights: a short, gentle run
        return TrainConfig(**{**base.__dict__, "epochs": 2, "lr": base.lr / 10, "warmup_steps": 0})
    return base
