"""Iterative magnitude pruning with retraining (Han et al. 2015; Deep Compression, sec. 2).

Each round raises every layer's sparsity along a cubic ramp (Zhu & Gupta 2017: big steps while
the network is redundant, small ones near the target), zeroes the smallest weights, and retrains
with the masks held (`MaskHook`), so the surviving weights learn to cover for the removed ones.
Per-layer targets come from the recipe (Deep Compression prunes fc layers far harder than conv1);
"global" scope uses one threshold over all selected layers instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from netshrink.methods.prune import magnitude_masks, sparse_of
from netshrink.training.retraining import MaskHook, RetrainSettings
from netshrink.plan import CompressionPlan
from netshrink.recipe import LayerStep, StepContext, register_step
from netshrink.select import per_layer

log = logging.getLogger(__name__)


@register_step("iterative_prune")
@dataclass(frozen=True)
class IterativePrune(RetrainSettings, LayerStep):
    """Prune to `sparsity` (per layer: `per_layer` patterns) over `rounds` rounds of `epochs` each."""

    sparsity: float = 0.9
    per_layer: dict[str, float] = field(default_factory=dict)
    scope: Literal["layer", "global"] = "layer"
    rounds: int = 3

    def __post_init__(self) -> None:
        RetrainSettings.__post_init__(self)
        for where, value in [("sparsity", self.sparsity), *((f"per_layer[{k!r}]", v) for k, v in self.per_layer.items())]:
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{where} must be in [0, 1), got {value}")
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if self.scope == "global" and self.per_layer:
            raise ValueError("per_layer sparsities need scope 'layer' (global scope uses one threshold)")

    def targets(self, model: nn.Module) -> dict[str, float]:
        """Final sparsity of each selected weight tensor."""
        return {f"{name}.weight": per_layer(name, self.sparsity, self.per_layer) for name, _ in self.layers(model)}

    def apply(self, model: nn.Module, plan: CompressionPlan, ctx: StepContext) -> None:
        targets = self.targets(model)
        for round_ in range(1, self.rounds + 1):
            fraction = 1 - (1 - round_ / self.rounds) ** 3
            masks = self._prune(model, {name: s * fraction for name, s in targets.items()})
            log.info("iterative_prune round %d/%d: sparsity %.1f %% of selected weights", round_, self.rounds,
                     100 * sparsity_of(masks))
            self.retrain(model, ctx, [MaskHook(masks)], desc=f"prune round {round_}/{self.rounds}")
        for name in targets:
            plan.assign(model, name, sparse_of(plan.codec_for(name)))

    def _prune(self, model: nn.Module, sparsities: dict[str, float]) -> dict[str, torch.Tensor]:
        state = model.state_dict()
        if self.scope == "global":
            (level,) = set(sparsities.values())
            masks = magnitude_masks({n: state[n] for n in sparsities}, level, "global")
        else:
            masks = {n: magnitude_masks({n: state[n]}, s, "layer")[n] for n, s in sparsities.items()}
        with torch.no_grad():
            for name, mask in masks.items():
                state[name].mul_(mask)
        return masks


def sparsity_of(masks: dict[str, torch.Tensor]) -> float:
    total = sum(m.numel() for m in masks.values())
    return 1 - sum(int(m.sum()) for m in masks.values()) / max(1, total)
