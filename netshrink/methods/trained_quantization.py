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

from dataclasses import dataclass
from typing import ClassVar, Literal

from torch import nn

from netshrink.cluster.kmeans1d import KMeans1DInit
from netshrink.format.codecs import Palette, Sparse
from netshrink.plan import CompressionPlan
from netshrink.step import StepContext, register_step
from netshrink.training.loop import TrainHook
from netshrink.training.retraining import (
    MaskHook,
    RetrainingStep,
    RetrainSettings,
    SharedValueHook,
    nonzero_masks,
    value_labels,
)


@register_step("trained_quantization")
@dataclass(frozen=True)
class TrainedQuantization(RetrainingStep):
    """Palette-cluster the selected layers into 2^`bits` values, then fine-tune the centroids.

    Per layer: `bits`, `init` (in `overrides`). Retraining: `epochs`, `lr` (default 1e-4), ... as
    in `RetrainSettings`, written flat in a recipe. Runs from your own training loop too:
    `session = step.prepare(model)` (see training/session.py).
    """

    per_layer_fields: ClassVar[tuple[str, ...]] = ("bits", "init")
    train: RetrainSettings = RetrainSettings(lr=1e-4)
    bits: int = 5
    init: KMeans1DInit = "linear"
    reduce: Literal["sum", "mean"] = "sum"

    def validate(self) -> None:
        Palette(self.bits, init=self.init)  # validates

    def apply(self, model: nn.Module, plan: CompressionPlan, ctx: StepContext) -> None:
        hooks = self.prepare_training(model, plan, ctx)
        self.retrain(model, ctx, hooks, desc="trained quantization")
        self.finalize_training(model, plan, ctx)

    def prepare_training(self, model: nn.Module, plan: CompressionPlan, ctx: StepContext) -> list[TrainHook]:
        """Cluster each selected layer; the hooks that move each cluster as one value and hold the
        weights earlier steps pruned at zero."""
        names = {f"{name}.weight": self.for_layer(name) for name, _ in self.layers(model)}
        for name, layer in names.items():
            palette = Palette(layer.bits, init=layer.init, seed=ctx.seed)
            plan.assign(model, name, plan.codec_for(name).with_inner(palette))
        state = model.state_dict()
        labels = {name: value_labels(state[name]) for name in names}
        others = [n for n, p in model.named_parameters() if n not in names and isinstance(plan.codec_for(n), Sparse)]
        return [SharedValueHook(labels, self.reduce), MaskHook(nonzero_masks(model, others))]

    def finalize_training(self, model: nn.Module, plan: CompressionPlan, ctx: StepContext) -> None:
        """Store the trained centroids: at most 2^bits distinct values per layer, so exactly."""
        for name in self.weight_names(model):
            plan.assign(model, name, plan.codec_for(name))
