"""What every retraining method shares: its settings in a recipe, the call into the one training
loop, and the hook that keeps pruned weights at zero.

A retraining step mixes `RetrainSettings` into its config dataclass, so every such step reads the
same fields from YAML (`epochs`, `lr`, `batch_size`, ...) and trains through `train.fit` with its
own hooks; none owns an epoch loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

import torch
from torch import nn

from netshrink.data import DEFAULT_AUGMENTATION
from netshrink.errors import DataError
from netshrink.recipe import StepContext
from netshrink.train import TrainConfig, TrainHook, TrainResult, fit


@dataclass(frozen=True)
class RetrainSettings:
    """Recipe fields of a retraining step (SGD + Nesterov momentum, cosine schedule)."""

    needs_data: ClassVar[bool] = True

    epochs: float = 2.0
    lr: float = 0.01
    batch_size: int = 64
    momentum: float = 0.9
    weight_decay: float = 1e-4

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.lr <= 0 or self.batch_size < 1 or self.weight_decay < 0:
            raise ValueError("epochs must be >= 0, lr > 0, batch_size >= 1, weight_decay >= 0")

    def train_config(self, ctx: StepContext, epochs: float | None = None, lr: float | None = None) -> TrainConfig:
        return TrainConfig(epochs=self.epochs if epochs is None else epochs, batch_size=self.batch_size,
                           lr=self.lr if lr is None else lr, momentum=self.momentum,
                           weight_decay=self.weight_decay, augment=DEFAULT_AUGMENTATION.get(ctx.dataset or ""),
                           seed=ctx.seed)

    def retrain(self, model: nn.Module, ctx: StepContext, hooks: Sequence[TrainHook], desc: str, *,
                epochs: float | None = None, lr: float | None = None,
                params: Sequence[nn.Parameter] | None = None) -> TrainResult | None:
        """Train `model` on the step's data with `hooks`; zero epochs means no training."""
        if ctx.data is None:
            raise DataError(f"{desc} retrains the model and needs training data (CLI: --dataset; API: data=)")
        config = self.train_config(ctx, epochs, lr)
        if config.epochs == 0:
            return None
        return fit(model, ctx.data, config, hooks, progress=ctx.progress, desc=desc, params=params)


class MaskHook(TrainHook):
    """Holds pruned weights at exactly zero: their gradients are zeroed and the weights re-zeroed."""

    def __init__(self, masks: dict[str, torch.Tensor]) -> None:
        self.masks = masks
        self.params: dict[str, nn.Parameter] = {}

    def prepare(self, model: nn.Module) -> None:
        named = dict(model.named_parameters())
        self.params = {name: named[name] for name in self.masks}

    def after_backward(self, model: nn.Module) -> None:
        for name, param in self.params.items():
            if param.grad is not None:
                param.grad.mul_(self.masks[name])

    def after_step(self, model: nn.Module, step: int) -> None:
        with torch.no_grad():
            for name, param in self.params.items():
                param.mul_(self.masks[name])


def nonzero_masks(model: nn.Module, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """Keep-masks of the weights that are currently nonzero (what earlier pruning left)."""
    state = model.state_dict()
    return {name: state[name] != 0 for name in names}
