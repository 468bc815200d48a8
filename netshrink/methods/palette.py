"""One-shot weight sharing: cluster each selected layer's weights into 2^bits shared values.

Deep Compression (Han et al. 2016, sec. 3) with the optimal 1-D k-means of `netshrink.cluster`;
pruned layers are clustered on their surviving weights only (the palette becomes the sparse
codec's value codec), so zeros stay exactly zero. `weighting` clusters by each weight's cost at the
layer's output instead of weight error alone (see netshrink/importance.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from tqdm import tqdm

from netshrink.codecs import Palette
from netshrink.errors import DataError, RecipeError
from netshrink.importance import (InputMoments, correct_mean_shift, following_norm_scales, following_norms, input_moments,
                                  weight_importance)
from netshrink.plan import CompressionPlan
from netshrink.recipe import LayerStep, StepContext, register_step

WEIGHTINGS = ("none", "norm", "activation")


@register_step("palette")
@dataclass(frozen=True)
class WeightSharing(LayerStep):
    """k-means weight sharing with a 16-bit codebook, per layer or per output channel.

    weighting: "none" (weight error), "norm" (x the squared scale of the BatchNorm after the layer;
    data-free) or "activation" (also x the variance of the input each weight multiplies, measured
    on `calibration` training samples, and the mean output shift corrected in the bias or the
    following BatchNorm's running mean).
    """

    bits: int = 5
    per_channel: bool | Literal["auto"] = False
    init: Literal["optimal", "linear", "density", "random"] = "optimal"
    weighting: Literal["none", "norm", "activation"] = "none"
    calibration: int = 512

    def __post_init__(self) -> None:
        Palette(self.bits, self.per_channel is True, self.init)  # validates
        if self.calibration < 1:
            raise ValueError(f"calibration must be >= 1 sample, got {self.calibration}")

    @property
    def needs_data(self) -> bool:  # type: ignore[override]
        return self.weighting == "activation"

    def apply(self, model: nn.Module, plan: CompressionPlan, ctx: StepContext) -> None:
        state = model.state_dict()
        moments = self.calibrate(model, ctx)
        importance = self.importances(model, moments)
        originals = {name: state[f"{name}.weight"].clone() for name in moments}
        for name in tqdm(self.weight_names(model), desc=f"palette {self.bits}b", disable=not ctx.progress, leave=False):
            current = plan.codec_for(name)
            if name in importance and current.name == "sparse":
                raise RecipeError(f"palette weighting {self.weighting!r} needs dense weights, but {name} is pruned; "
                                  "use weighting: none after pruning")
            codec = Palette(self.bits, self.channelwise(state[name], current.name == "sparse"), self.init, ctx.seed,
                            importance.get(name))
            plan.assign(model, name, current.with_inner(codec))
        norms = following_norms(model) if moments else {}
        for name, original in originals.items():
            correct_mean_shift(model, name, original, moments[name].mean, norms)

    def calibrate(self, model: nn.Module, ctx: StepContext) -> dict[str, InputMoments]:
        """Input statistics of the selected layers (weighting "activation" only), from training samples."""
        if self.weighting != "activation":
            return {}
        if ctx.data is None:
            raise DataError("palette weighting 'activation' measures inputs on training samples "
                            "(CLI: --dataset; API: data=)")
        batches = (x for x, _ in ctx.data.sample(min(self.calibration, len(ctx.data)), seed=ctx.seed).loader(64))
        return input_moments(model, [name for name, _ in self.layers(model)], batches)

    def importances(self, model: nn.Module, moments: dict[str, InputMoments]) -> dict[str, torch.Tensor]:
        """weight name -> importance per weight (empty for weighting "none")."""
        if self.weighting == "none":
            return {}
        scales = following_norm_scales(model)
        return {f"{name}.weight": weight_importance(module, scales.get(name),
                                                    moments[name].variance if name in moments else None)
                for name, module in self.layers(model)}

    def channelwise(self, weight: torch.Tensor, sparse: bool) -> bool:
        """per_channel "auto": one palette per output channel exactly when a channel has no more
        weights than a palette has entries (depthwise kernels, RGB stems). Sharing values across
        such channels only loses precision; per channel, each keeps its own (fp16) values.
        Pruned (sparse) tensors store their survivors as one flat list: one palette for them."""
        if self.per_channel != "auto":
            return bool(self.per_channel)
        return not sparse and weight.dim() >= 2 and weight[0].numel() <= (1 << self.bits)
