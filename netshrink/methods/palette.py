"""One-shot weight sharing: cluster each selected layer's weights into 2^bits shared values.

Deep Compression (Han et al. 2016, sec. 3) with the optimal 1-D k-means of `netshrink.cluster`;
pruned layers are clustered on their surviving weights only (the palette becomes the sparse
codec's value codec), so zeros stay exactly zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn
from tqdm import tqdm

from netshrink.codecs import Palette
from netshrink.plan import CompressionPlan
from netshrink.recipe import LayerStep, StepContext, register_step


@register_step("palette")
@dataclass(frozen=True)
class WeightSharing(LayerStep):
    """k-means weight sharing with a 16-bit codebook, per layer or per output channel."""

    bits: int = 5
    per_channel: bool = False
    init: Literal["optimal", "linear", "density", "random"] = "optimal"

    def __post_init__(self) -> None:
        Palette(self.bits, self.per_channel, self.init)  # validates

    def apply(self, model: nn.Module, plan: CompressionPlan, ctx: StepContext) -> None:
        codec = Palette(self.bits, self.per_channel, self.init, ctx.seed)
        for name in tqdm(self.weight_names(model), desc=f"palette {self.bits}b", disable=not ctx.progress, leave=False):
            plan.assign(model, name, plan.codec_for(name).with_inner(codec))
