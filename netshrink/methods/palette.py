"""One-shot weight sharing: cluster each selected layer's weights into 2^bits shared values.

Deep Compression (Han et al. 2016, sec. 3) with the optimal 1-D k-means of `netshrink.cluster`;
pruned layers are clustered on their surviving weights only (the palette becomes the sparse
codec's value codec), so zeros stay exactly zero. `weighting` clusters by each weight's cost at the
layer's output instead of weight error alone (see netshrink/calibration/importance.py); `compensate` goes
further and assigns the weights of each layer, in forward order, with error feedback under the
full second moment of its inputs (see netshrink/calibration/error_feedback.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from tqdm import tqdm

from netshrink.format.codecs import Dense, Encoded, Palette, Sparse
from netshrink.errors import DataError, RecipeError
from netshrink.calibration.importance import (InputMoments, correct_mean_shift, following_norm_scales, following_norms, input_moments,
                                  norm_scale, weight_importance)
from netshrink.calibration.error_feedback import feedback_assign, refit_values
from netshrink.calibration.layer_inputs import (calibration_batches, following_batchnorms, forward_order, groups_of,
                                            input_statistics, row_groups)
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
    following BatchNorm's running mean). compensate: assign values with error feedback (GPTQ-style)
    and refit them for the layer's output, layer by layer on the inputs of the already-quantized
    network; needs calibration data, dense weights and Conv2d / Linear layers.
    """

    bits: int = 5
    per_channel: bool | Literal["auto"] = False
    init: Literal["optimal", "linear", "density", "random"] = "optimal"
    weighting: Literal["none", "norm", "activation"] = "none"
    calibration: int = 512
    compensate: bool = False
    #: Patch positions sampled per image for `compensate`'s input statistics.
    positions: int = 256

    def __post_init__(self) -> None:
        Palette(self.bits, self.per_channel is True, self.init)  # validates
        if self.calibration < 1:
            raise ValueError(f"calibration must be >= 1 sample, got {self.calibration}")
        if self.positions < 1:
            raise ValueError(f"positions must be >= 1, got {self.positions}")

    @property
    def needs_data(self) -> bool:  # type: ignore[override]
        return self.weighting == "activation" or self.compensate

    def apply(self, model: nn.Module, plan: CompressionPlan, ctx: StepContext) -> None:
        if self.compensate:
            return self.apply_with_feedback(model, plan, ctx)
        state = model.state_dict()
        moments = self.calibrate(model, self.calibration_batches(ctx)) if self.weighting == "activation" else {}
        importance = self.importances(model, moments, following_norm_scales(model) if self.weighting != "none" else {})
        originals = {name: state[f"{name}.weight"].clone() for name in moments}
        for name in tqdm(self.weight_names(model), desc=f"palette {self.bits}b", disable=not ctx.progress, leave=False):
            current = plan.codec_for(name)
            pruned = isinstance(current, Sparse)
            if name in importance and pruned:
                raise RecipeError(f"palette weighting {self.weighting!r} needs dense weights, but {name} is pruned; "
                                  "use weighting: none after pruning")
            codec = Palette(self.bits, self.channelwise(state[name], pruned), self.init, ctx.seed, importance.get(name))
            plan.assign(model, name, current.with_inner(codec))
        norms = following_norms(model) if moments else {}
        for name, original in originals.items():
            correct_mean_shift(model, name, original, moments[name].mean, norms)

    def calibrate(self, model: nn.Module, batches: list) -> dict[str, InputMoments]:
        """Per-channel input moments of the selected layers, for weighting "activation"."""
        return input_moments(model, [name for name, _ in self.layers(model)], batches)

    def calibration_batches(self, ctx: StepContext) -> list:
        """`calibration` training samples in batches, kept for every pass over them."""
        if ctx.data is None:
            what = "compensate" if self.compensate else "weighting 'activation'"
            raise DataError(f"palette {what} measures inputs on training samples (CLI: --dataset; API: data=)")
        return calibration_batches(ctx.data, self.calibration, 64, ctx.seed, "palette")

    def importances(self, model: nn.Module, moments: dict[str, InputMoments],
                    scales: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """weight name -> importance per weight (empty for weighting "none"); `scales`: |g / sigma|
        per output channel of the BatchNorm after each layer."""
        if self.weighting == "none":
            return {}
        return {f"{name}.weight": weight_importance(module, scales.get(name),
                                                    moments[name].variance if name in moments else None)
                for name, module in self.layers(model)}

    def apply_with_feedback(self, model: nn.Module, plan: CompressionPlan, ctx: StepContext) -> None:
        """`compensate`: each layer, in forward order, measured on the inputs the already-quantized
        layers before it produce (as output-aware PQ does), so it also absorbs their errors."""
        layers = dict(self.layers(model))
        for name, module in layers.items():
            codec = plan.codec_for(f"{name}.weight")
            if not isinstance(module, (nn.Conv2d, nn.Linear)) or not isinstance(codec, Dense):
                raise RecipeError(f"palette compensate needs dense weights of Conv2d / Linear layers, but {name} is a "
                                  f"{'pruned ' if isinstance(codec, Sparse) else ''}{type(module).__name__}; "
                                  "exclude it or use compensate: false")
        batches = self.calibration_batches(ctx)
        probe = batches[0]
        norms = following_batchnorms(model, layers, probe)
        scales = {name: norm_scale(norm) for name, norm in norms.items()}
        moments = self.calibrate(model, batches) if self.weighting == "activation" else {}
        importance = self.importances(model, moments, scales)
        for name in tqdm(forward_order(model, layers, probe), desc=f"palette {self.bits}b (feedback)",
                         disable=not ctx.progress, leave=False):
            module = layers[name]
            codec = Palette(self.bits, self.channelwise(module.weight, False), self.init, ctx.seed,
                            importance.get(f"{name}.weight"))
            gram, mean = input_statistics(model, module, module.weight[0].numel(), batches,
                                          positions=self.positions, seed=ctx.seed)
            encoded = assign_layer_with_feedback(module, codec, gram, scales[name].pow(2) if name in scales else None)
            original = module.weight.detach().clone()
            plan.set_encoded(model, f"{name}.weight", codec, encoded)
            cancel_output_shift(module, original, mean, norms.get(name))

    def channelwise(self, weight: torch.Tensor, sparse: bool) -> bool:
        """per_channel "auto": one palette per output channel exactly when a channel has no more
        weights than a palette has entries (depthwise kernels, RGB stems). Sharing values across
        such channels only loses precision; per channel, each keeps its own (fp16) values.
        Pruned (sparse) tensors store their survivors as one flat list: one palette for them."""
        if self.per_channel != "auto":
            return bool(self.per_channel)
        return not sparse and weight.dim() >= 2 and weight[0].numel() <= (1 << self.bits)


def assign_layer_with_feedback(module: nn.Module, codec: Palette, gram: torch.Tensor,
                               row_scale: torch.Tensor | None) -> Encoded:
    """The layer's palette: the codec's k-means values, labels by error feedback under each group's
    input second moment `gram` [groups, cols, cols], values refit for the output error."""
    weight = module.weight.detach().reshape(module.weight.shape[0], -1).double()
    values = codec.fit(module.weight).values.double()
    groups = groups_of(module)
    parts = row_groups(weight.shape[0], groups)
    row_values = values.expand(weight.shape[0], -1) if values.shape[0] == 1 else values
    labels = torch.cat([feedback_assign(weight[p], row_values[p], gram[g]) for g, p in enumerate(parts)])
    if values.shape[0] > 1:  # one palette per row: each refit on its group's inputs
        values = torch.cat([refit_values(weight[p], labels[p], values[p], gram[g],
                                         None if row_scale is None else row_scale[p]) for g, p in enumerate(parts)])
    elif groups == 1:
        values = refit_values(weight, labels, values, gram[0], row_scale)
    return codec.encode_assigned(values, labels, tuple(module.weight.shape))


@torch.no_grad()
def cancel_output_shift(module: nn.Module, original: torch.Tensor, patch_mean: torch.Tensor,
                        norm: nn.Module | None) -> None:
    """Remove the mean output change (Q - W) E[x] (x: the im2col patch, borders included) in the
    layer's bias, or else in the running mean of the BatchNorm after it (Nagel et al. 2019)."""
    rows = module.weight.shape[0]
    groups = groups_of(module)
    delta = (module.weight.detach() - original).reshape(rows, -1).double()
    means = patch_mean.reshape(groups, -1).repeat_interleave(rows // groups, 0)
    shift = (delta * means).sum(1)
    if module.bias is not None:
        module.bias -= shift.to(module.bias.dtype)
    elif norm is not None:
        norm.running_mean += shift.to(norm.running_mean.dtype)
