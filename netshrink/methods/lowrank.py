"""Truncated SVD of fully connected (and optionally conv) weights.

Stores W ~= U V with the rank given or chosen by retained energy (see `codecs.lowrank`); a later
`palette` step clusters the factors (the codec nests), as in the compound pipeline of the thesis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from netshrink.format.codecs import Dense, LowRank
from netshrink.plan import CompressionPlan
from netshrink.step import LayerStep, StepContext, register_step


@register_step("lowrank")
@dataclass(frozen=True)
class TruncatedSVD(LayerStep):
    """Replace each selected Linear weight by a rank-r factorisation (rank, or energy kept).
    Per layer: `rank`, `energy`, `dtype`, in `overrides`."""

    layer_types: ClassVar[tuple[type[nn.Module], ...]] = (nn.Linear, nn.Conv2d)
    per_layer_fields: ClassVar[tuple[str, ...]] = ("rank", "energy", "dtype")
    include: tuple[str, ...] = ("*",)
    rank: int | None = None
    energy: float | None = None
    dtype: str = "fp32"

    def validate(self) -> None:
        LowRank(self.rank, self.energy, Dense(self.dtype))  # validates

    def layers(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        chosen = super().layers(model)
        literal = [p for p in self.include if not any(c in p for c in "*?[")]
        # Wildcards pick Linear layers only; conv layers must be named explicitly.
        return [(n, m) for n, m in chosen if isinstance(m, nn.Linear) or n in literal]

    def apply(self, model: nn.Module, plan: CompressionPlan, ctx: StepContext) -> None:
        for name, _ in self.layers(model):
            layer = self.for_layer(name)
            plan.assign(model, f"{name}.weight", LowRank(layer.rank, layer.energy, Dense(layer.dtype)))
