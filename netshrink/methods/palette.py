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
from typing import ClassVar, Literal

import torch
from torch import nn
from tqdm import tqdm

from netshrink.calibration.batchnorm import batchnorm_scale, following_batchnorms
from netshrink.calibration.bias_correction import correct_bias
from netshrink.calibration.error_feedback import feedback_assign, refit_values
from netshrink.calibration.importance import weight_importance
from netshrink.calibration.layer_inputs import (
    ChannelMoments,
    calibration_batches,
    channel_moments,
    forward_order,
    groups_of,
    patch_moments,
    row_groups,
)
from netshrink.cluster.kmeans1d import KMeans1DInit
from netshrink.errors import DATA_HINT, DataError, RecipeError
from netshrink.format.codecs import Codec, Dense, Encoded, Palette, Sparse
from netshrink.parallel.plans import encode_apart
from netshrink.plan import CompressionPlan, tied_names
from netshrink.select import MATRIX_LAYERS
from netshrink.step import LayerStep, StepContext, register_step


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
    group (with per_channel: true): that many consecutive output channels share one palette, which
    halves (2) or quarters (4) what the fp16 values cost per weight.
    Per layer: `bits`, `per_channel`, `group`, `init`, in `overrides`.
    """

    per_layer_fields: ClassVar[tuple[str, ...]] = ("bits", "per_channel", "group", "init")
    bits: int = 5
    per_channel: bool | Literal["auto"] = False
    group: int = 1
    init: KMeans1DInit = "optimal"
    weighting: Literal["none", "norm", "activation"] = "none"
    calibration: int = 512
    compensate: bool = False
    #: Patch positions sampled per image for `compensate`'s input statistics.
    positions: int = 256

    def validate(self) -> None:
        Palette(self.bits, self.per_channel is True, self.init, group=self.group)  # validates
        if self.group > 1 and self.per_channel is not True:
            raise ValueError(f"palette group {self.group} needs per_channel: true")
        if self.calibration < 1:
            raise ValueError(f"calibration must be >= 1 sample, got {self.calibration}")
        if self.positions < 1:
            raise ValueError(f"positions must be >= 1, got {self.positions}")

    @property
    def needs_data(self) -> bool:
        return self.weighting == "activation" or self.compensate

    def apply(self, model: nn.Module, plan: CompressionPlan, ctx: StepContext) -> None:
        if self.compensate:
            return self.apply_with_feedback(model, plan, ctx)
        state = model.state_dict()
        moments = self.calibrate(model, self.calibration_batches(ctx)) if self.weighting == "activation" else {}
        norms = following_batchnorms(model) if self.weighting != "none" else {}
        importance = self.importances(model, moments, {name: batchnorm_scale(norm) for name, norm in norms.items()})
        originals = {name: state[f"{name}.weight"].clone() for name in moments}
        codecs = {}
        for module_name, _ in self.layers(model):
            name, layer = f"{module_name}.weight", self.for_layer(module_name)
            current = plan.codec_for(name)
            pruned = isinstance(current, Sparse)
            if name in importance and pruned:
                raise RecipeError(
                    f"palette weighting {self.weighting!r} needs dense weights, but {name} is pruned; "
                    "use weighting: none after pruning"
                )
            codec = Palette(
                layer.bits,
                layer.channelwise(state[name], pruned),
                layer.init,
                ctx.seed,
                importance.get(name),
                group=layer.group,
            )
            codecs[name] = current.with_inner(codec)
        self.assign_shared(model, plan, codecs, ctx.progress)
        modules = dict(model.named_modules())
        for name, original in originals.items():
            correct_bias(modules[name], original, moments[name].mean, norms.get(name))

    def assign_shared(self, model: nn.Module, plan: CompressionPlan, codecs: dict[str, Codec], progress: bool) -> None:
        """Encode each weight with its codec: each layer's k-means on one rank (parallel/plans.py),
        the same codes for any number of ranks. A weight tied to another (one tensor, two names) is
        encoded after the others, as one process would: it takes the first name's decoded value."""
        first_of = tied_names(model.state_dict())
        alone = [[name] for name in codecs if first_of.get(name, name) == name]
        with tqdm(total=len(codecs), desc=f"palette {self.bits}b", disable=not progress, leave=False) as bar:

            def encode(scratch: CompressionPlan, names: list[str]) -> None:
                scratch.assign(model, names[0], codecs[names[0]])
                bar.update(1)

            encode_apart(model, plan, alone, encode)
            bar.update(bar.total - bar.n)  # the layers the other ranks encoded
        for name, codec in codecs.items():
            if [name] not in alone:
                plan.assign(model, name, codec)

    def calibrate(self, model: nn.Module, batches: list) -> dict[str, ChannelMoments]:
        """Per-channel input moments of the selected layers, for weighting "activation"."""
        return channel_moments(model, [name for name, _ in self.layers(model)], batches)

    def calibration_batches(self, ctx: StepContext) -> list:
        """`calibration` training samples in batches, kept for every pass over them."""
        if ctx.data is None:
            what = "compensate" if self.compensate else "weighting 'activation'"
            raise DataError(f"palette {what} measures inputs on training samples {DATA_HINT}")
        return calibration_batches(ctx.data, self.calibration, 64, ctx.seed, "palette")

    def importances(
        self, model: nn.Module, moments: dict[str, ChannelMoments], scales: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """weight name -> importance per weight (empty for weighting "none"); `scales`: |g / sigma|
        per output channel of the BatchNorm after each layer."""
        if self.weighting == "none":
            return {}
        return {  # for the codec's clustering, which runs on CPU
            f"{name}.weight": weight_importance(
                module, scales.get(name), moments[name].variance if name in moments else None
            ).cpu()
            for name, module in self.layers(model)
        }

    def apply_with_feedback(self, model: nn.Module, plan: CompressionPlan, ctx: StepContext) -> None:
        """`compensate`: each layer, in forward order, measured on the inputs the already-quantized
        layers before it produce (as output-aware PQ does), so it also absorbs their errors. Being
        sequential by layer, this is computed identically on every rank of a distributed run."""
        layers = dict(self.layers(model))
        for name, module in layers.items():
            codec = plan.codec_for(f"{name}.weight")
            if not isinstance(module, MATRIX_LAYERS) or not isinstance(codec, Dense):
                raise RecipeError(
                    f"palette compensate needs dense weights of Conv2d / Linear layers, but {name} is a "
                    f"{'pruned ' if isinstance(codec, Sparse) else ''}{type(module).__name__}; "
                    "exclude it or use compensate: false"
                )
        batches = self.calibration_batches(ctx)
        norms = following_batchnorms(model)
        scales = {name: batchnorm_scale(norm) for name, norm in norms.items()}
        moments = self.calibrate(model, batches) if self.weighting == "activation" else {}
        importance = self.importances(model, moments, scales)
        for name in tqdm(
            forward_order(model, layers, batches[0]),
            desc=f"palette {self.bits}b (feedback)",
            disable=not ctx.progress,
            leave=False,
        ):
            module, layer = layers[name], self.for_layer(name)
            codec = Palette(
                layer.bits,
                layer.channelwise(module.weight, False),
                layer.init,
                ctx.seed,
                importance.get(f"{name}.weight"),
                group=layer.group,
            )
            inputs = patch_moments(
                model, module, module.weight[0].numel(), batches, positions=self.positions, seed=ctx.seed
            )
            encoded = assign_layer_with_feedback(
                module, codec, inputs.gram, scales[name].pow(2) if name in scales else None
            )
            original = module.weight.detach().clone()
            plan.set_encoded(model, f"{name}.weight", codec, encoded)
            correct_bias(module, original, inputs.mean, norms.get(name))

    def channelwise(self, weight: torch.Tensor, sparse: bool) -> bool:
        """per_channel "auto": one palette per output channel exactly when a channel has no more
        weights than a palette has entries (depthwise kernels, RGB stems). Sharing values across
        such channels only loses precision; per channel, each keeps its own (fp16) values.
        Pruned (sparse) tensors store their survivors as one flat list: one palette for them."""
        if self.per_channel != "auto":
            return bool(self.per_channel)
        return not sparse and weight.dim() >= 2 and weight[0].numel() <= (1 << self.bits)


def assign_layer_with_feedback(
    module: nn.Module, codec: Palette, gram: torch.Tensor, row_scale: torch.Tensor | None
) -> Encoded:
    """The layer's palette: the codec's k-means values, labels by error feedback under each group's
    input second moment `gram` [groups, cols, cols], values refit for the output error. The feedback
    runs where `gram` is (the model's device); the k-means and the codec on CPU."""
    weight = module.weight.detach().reshape(module.weight.shape[0], -1).double().to(gram.device)
    values = codec.fit(module.weight.detach().cpu()).values.double().to(gram.device)
    groups = groups_of(module)
    parts = row_groups(weight.shape[0], groups)
    rows_per_book = weight.shape[0] // values.shape[0]
    row_values = values.repeat_interleave(rows_per_book, 0) if values.shape[0] > 1 else values.expand(len(weight), -1)
    labels = torch.cat([feedback_assign(weight[p], row_values[p], gram[g]) for g, p in enumerate(parts)])
    if values.shape[0] > 1 and all(_books_within(p, rows_per_book) for p in parts):
        # palettes per row (or group of rows): each refit on its convolution group's inputs
        values = torch.cat(
            [
                refit_values(
                    weight[p],
                    labels[p],
                    values[p.start // rows_per_book : p.stop // rows_per_book],
                    gram[g],
                    None if row_scale is None else row_scale[p],
                )
                for g, p in enumerate(parts)
            ]
        )
    elif groups == 1:
        values = refit_values(weight, labels, values, gram[0], row_scale)
    return codec.encode_assigned(values.cpu(), labels.cpu(), tuple(module.weight.shape))


def _books_within(rows: slice, rows_per_book: int) -> bool:
    """Whether the palettes of `rows_per_book` rows each lie wholly inside this slice of rows."""
    return rows.start % rows_per_book == 0 and rows.stop % rows_per_book == 0
