"""Iterative magnitude pruning with retraining (Han et al. 2015; Deep Compression, sec. 2).

Each round raises every layer's sparsity along a cubic ramp (Zhu & Gupta 2017: big steps while
the network is redundant, small ones near the target), zeroes the smallest weights, and retrains
with the masks held (`MaskHook`), so the surviving weights learn to cover for the removed ones.
Per-layer targets come from the recipe (Deep Compression prunes fc layers far harder than conv1);
"global" scope uses one threshold over all selected layers instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from netshrink.methods.prune import check_sparsity, prune_in_place, sparse_of
from netshrink.plan import CompressionPlan
from netshrink.step import StepContext, register_step
from netshrink.training.retraining import MaskHook, RetrainingStep

log = logging.getLogger(__name__)


@register_step("iterative_prune")
@dataclass(frozen=True)
class IterativePrune(RetrainingStep):
    """Prune to `sparsity` over `rounds` rounds, retraining `epochs` after each (`RetrainSettings`,
    written flat in a recipe). Per layer (scope "layer" only): `sparsity`, in `overrides`."""

    per_layer_fields: ClassVar[tuple[str, ...]] = ("sparsity",)
    sparsity: float = 0.9
    scope: Literal["layer", "global"] = "layer"
    rounds: int = 3

    def validate(self) -> None:
        check_sparsity(self.sparsity, self.scope, self.overrides)
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")

    def targets(self, model: nn.Module) -> dict[str, float]:
        """Final sparsity of each selected weight tensor."""
        return {f"{name}.weight": self.for_layer(name).sparsity for name, _ in self.layers(model)}

    def apply(self, model: nn.Module, plan: CompressionPlan, ctx: StepContext) -> None:
        targets = self.targets(model)
        for round_ in range(1, self.rounds + 1):
            fraction = 1 - (1 - round_ / self.rounds) ** 3
            masks = prune_in_place(model.state_dict(), {name: s * fraction for name, s in targets.items()}, self.scope)
            log.info(
                "iterative_prune round %d/%d: sparsity %.1f %% of selected weights",
                round_,
                self.rounds,
                100 * sparsity_of(masks),
            )
            self.retrain(model, ctx, [MaskHook(masks)], desc=f"prune round {round_}/{self.rounds}")
        for name in targets:
            plan.assign(model, name, sparse_of(plan.codec_for(name)))


def sparsity_of(masks: dict[str, torch.Tensor]) -> float:
    total = sum(m.numel() for m in masks.values())
    return 1 - sum(int(m.sum()) for m in masks.values()) / max(1, total)
