"""One-shot weight sharing: cluster each selected layer's weights into 2^bits shared values.

Deep Compression (Han et al. 2016, sec. 3) with the optimal 1-D k-means of `netshrink.cluster`;
pruned layers are clustered on their surviving weights only (the palette becomes the sparse
codec's value codec), so zeros stay exactly zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
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
    per_channel: bool | Literal["auto"] = False
    init: Literal["optimal", "linear", "density", "random"] = "optimal"

    def __post_init__(self) -> None:
        Palette(self.bits, self.per_channel is True, self.init)  # validates

    def apply(self, model: nn.Module, plan: CompressionPlan, ctx: StepContext) -> None:
        state = model.state_dict()
        for name in tqdm(self.weight_names(model), desc=f"palette {self.bits}b", disable=not ctx.progress, leave=False):
            current = plan.codec_for(name)
            codec = Palette(self.bits, self.channelwise(state[name], current.name == "sparse"), self.init, ctx.seed)
            plan.assign(model, name, current.with_inner(codec))

    def channelwise(self, weight: torch.Tensor, sparse: bool) -> bool:
        """per_channel "auto": one palette per output channel exactly when a channel has no more
        weights than a palette has entries (depthwise kernels, RGB stems). Sharing values across
        such channels only loses precision; per channel, each keeps its own (fp16) values.
        Pruned (sparse) tensors store their survivors as one flat list: one palette for them."""
        if self.per_channel != "auto":
            return bool(self.per_channel)
        return not sparse and weight.dim() >= 2 and weight[0].numel() <= (1 << self.bits)
