"""Magnitude pruning (Han et al. 2015, "Learning both Weights and Connections"; Deep Compression).

The weights of smallest magnitude are set to zero, either a fraction of each layer ("layer") or
by one threshold over all selected layers ("global", which lets redundant layers lose more). The
pruned tensors are then stored by the sparse codec (values + relative positions). Retraining with
the masks held comes with the retraining methods; this module also provides the masks they hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from netshrink.format.codecs import Sparse
from netshrink.plan import CompressionPlan
from netshrink.step import LayerStep, StepContext, register_step


def magnitude_masks(weights: dict[str, torch.Tensor], sparsity: float, scope: str = "layer") -> dict[str, torch.Tensor]:
    """Boolean keep-masks removing the `sparsity` fraction of smallest-|w| weights.

    Exactly round(sparsity * n) weights are removed per layer (or over all layers for "global");
    ties at the threshold are broken by position, so the count is exact and deterministic.
    """
    if scope == "layer":
        return {name: _keep_largest(w.abs().reshape(-1), sparsity).reshape(w.shape) for name, w in weights.items()}
    flat = torch.cat([w.abs().reshape(-1) for w in weights.values()])
    keep = _keep_largest(flat, sparsity)
    masks, start = {}, 0
    for name, w in weights.items():
        masks[name] = keep[start : start + w.numel()].reshape(w.shape)
        start += w.numel()
    return masks


def _keep_largest(magnitudes: torch.Tensor, sparsity: float) -> torch.Tensor:
    n_remove = int(round(sparsity * magnitudes.numel()))
    keep = torch.ones_like(magnitudes, dtype=torch.bool)
    if n_remove:
        order = torch.argsort(magnitudes, stable=True)
        keep[order[:n_remove]] = False
    return keep


def prune_in_place(
    state: dict[str, torch.Tensor], sparsities: dict[str, float], scope: str = "layer"
) -> dict[str, torch.Tensor]:
    """Zero the smallest weights of each tensor `state[name]` to its sparsity (one threshold over all of
    them for "global", which takes one sparsity); returns the keep-masks."""
    if scope == "global":
        (level,) = set(sparsities.values())
        masks = magnitude_masks({n: state[n] for n in sparsities}, level, "global")
    else:
        masks = {n: magnitude_masks({n: state[n]}, s, "layer")[n] for n, s in sparsities.items()}
    with torch.no_grad():
        for name, mask in masks.items():
            state[name].mul_(mask)
    return masks


@register_step("prune")
@dataclass(frozen=True)
class MagnitudePrune(LayerStep):
    """Zero the smallest weights; the survivors are stored sparse (values + gap positions).

    Per layer (scope "layer" only): `sparsity`, in `overrides`.
    """

    per_layer_fields: ClassVar[tuple[str, ...]] = ("sparsity",)
    sparsity: float = 0.5
    scope: Literal["layer", "global"] = "layer"

    def validate(self) -> None:
        check_sparsity(self.sparsity, self.scope, self.overrides)

    def apply(self, model: nn.Module, plan: CompressionPlan, ctx: StepContext) -> None:
        targets = {f"{name}.weight": self.for_layer(name).sparsity for name, _ in self.layers(model)}
        prune_in_place(model.state_dict(), targets, self.scope)
        for name in targets:
            plan.assign(model, name, sparse_of(plan.codec_for(name)))


def check_sparsity(sparsity: float, scope: str, overrides: dict) -> None:
    """A sparsity is a fraction below 1; one threshold over all layers ("global") has no per-layer values."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if scope == "global" and overrides:
        raise ValueError("per-layer sparsities (overrides) need scope 'layer' (global scope uses one threshold)")


def sparse_of(codec) -> Sparse:
    """Wrap the tensor's current value codec in Sparse (once)."""
    return codec if isinstance(codec, Sparse) else Sparse(inner=codec)
