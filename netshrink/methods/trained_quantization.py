"""Trained quantization (Deep Compression, Han et al. 2016, sec. 3.3).

Each selected layer is clustered into 2^bits shared values (the palette codec); then the network
is retrained with the weights of a cluster tied together: a centroid moves by the sum of its
weights' gradients (`SharedValueHook`), pruned weights stay zero. Deep Compression found linear
initialisation of the centroids best, because it keeps the rare large weights that matter most;
it is our default here. After retraining, the plan re-encodes each layer: a tensor with at most
2^bits distinct values clusters onto exactly those values, so the file holds the trained centroids
(rounded to fp16, which the model is then evaluated with).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from netshrink.format.codecs import Palette, Sparse
from netshrink.training.retraining import MaskHook, RetrainSettings, SharedValueHook, nonzero_masks, value_labels
from netshrink.plan import CompressionPlan
from netshrink.recipe import LayerStep, StepContext, register_step
from netshrink.select import per_layer


@register_step("trained_quantization")
@dataclass(frozen=True)
class TrainedQuantization(RetrainSettings, LayerStep):
    """Palette-cluster the selected layers (`bits`, per layer `per_layer_bits`), then fine-tune centroids."""

    bits: int = 5
    per_layer_bits: dict[str, int] = field(default_factory=dict)
    init: Literal["optimal", "linear", "density", "random"] = "linear"
    reduce: Literal["sum", "mean"] = "sum"
    lr: float = 1e-4

    def __post_init__(self) -> None:
        RetrainSettings.__post_init__(self)
        for bits in (self.bits, *self.per_layer_bits.values()):
            Palette(bits, init=self.init)  # validates

    def apply(self, model: nn.Module, plan: CompressionPlan, ctx: StepContext) -> None:
        names = {f"{name}.weight": per_layer(name, self.bits, self.per_layer_bits) for name, _ in self.layers(model)}
        for name, bits in names.items():
            plan.assign(model, name, plan.codec_for(name).with_inner(Palette(bits, init=self.init, seed=ctx.seed)))
        state = model.state_dict()
        labels = {name: value_labels(state[name]) for name in names}
        others = [n for n, p in model.named_parameters() if n not in names and isinstance(plan.codec_for(n), Sparse)]
        hooks = [SharedValueHook(labels, self.reduce), MaskHook(nonzero_masks(model, others))]
        self.retrain(model, ctx, hooks, desc="trained quantization")
        for name in names:  # store the trained centroids (at most 2^bits distinct values: exact)
            plan.assign(model, name, plan.codec_for(name))
