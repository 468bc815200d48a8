"""Counting the multiply-accumulates of a model's conv and linear layers, and their shapes.

Convention: `flops` returns MACs (one multiply plus one add = 1), the unit most compression
papers call "FLOPs" (He et al. 2016 give ResNet costs this way; Li et al. 2017 report pruned
FLOPs likewise). Multiply by 2 for floating-point operations in the strict sense. Biases,
normalisation, activations and pooling are not counted: they are a few percent at most and
no method here changes how many there are per channel. FLOPs *ratios* are the same in either
convention, which is what `filter_prune` targets.

`layer_shapes` records, per call of a conv or linear layer, what the energy model needs beyond
the MAC count: input and output sizes, kernel, stride and groups (one forward pass, so the
shapes are the real ones for the given input size).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

COUNTED = (nn.modules.conv._ConvNd, nn.Linear)


def layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    """MACs one sample costs in `module` (Conv or Linear), given its batched output."""
    per_sample = output[0].numel()
    if isinstance(module, nn.modules.conv._ConvNd):
        # Each output value is a dot product over (in_channels / groups) x kernel taps.
        taps = module.in_channels // module.groups
        for size in module.kernel_size:
            taps *= size
        return per_sample * taps
    if isinstance(module, nn.Linear):
        return per_sample * module.in_features
    return 0


@dataclass(frozen=True)
class LayerShape:
    """One call of a conv or linear layer on a single sample (no batch dimension in the shapes)."""

    name: str  # module name; its weight is the state-dict tensor f"{name}.weight"
    module_type: str  # "Conv2d", "Linear", ...
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    kernel: tuple[int, ...]  # () for Linear
    stride: tuple[int, ...]  # () for Linear
    groups: int
    weight_numel: int
    macs: int

    @property
    def weight_name(self) -> str:
        return f"{self.name}.weight"

    @property
    def input_numel(self) -> int:
        return math.prod(self.input_shape)

    @property
    def output_numel(self) -> int:
        return math.prod(self.output_shape)

    @property
    def output_width(self) -> int:
        """Outputs along the last spatial axis (1 for Linear): how often a kernel row is reused
        while an input row slides past it."""
        return self.output_shape[-1] if self.kernel else 1


def _shape_of(name: str, module: nn.Module, inputs: tuple, output: torch.Tensor) -> LayerShape:
    is_conv = isinstance(module, nn.modules.conv._ConvNd)
    return LayerShape(
        name=name,
        module_type=type(module).__name__,
        input_shape=tuple(inputs[0].shape[1:]),
        output_shape=tuple(output.shape[1:]),
        kernel=tuple(module.kernel_size) if is_conv else (),
        stride=tuple(module.stride) if is_conv else (),
        groups=module.groups if is_conv else 1,
        weight_numel=module.weight.numel(),
        macs=layer_macs(module, output),
    )


def layer_shapes(model: nn.Module, input_shape: Sequence[int]) -> list[LayerShape]:
    """Every conv/linear call of one forward pass on a zero input of `input_shape` (no batch dim).

    Measured with forward hooks, so it follows whatever the forward really runs (a layer called
    twice appears twice; a layer skipped does not appear).
    """
    shapes: list[LayerShape] = []
    hooks = [
        module.register_forward_hook(lambda m, inputs, out, name=name: shapes.append(_shape_of(name, m, inputs, out)))
        for name, module in model.named_modules()
        if isinstance(module, COUNTED)
    ]
    param = next(model.parameters(), None)
    x = torch.zeros(
        1,
        *input_shape,
        dtype=param.dtype if param is not None else torch.float32,
        device=param.device if param is not None else None,
    )
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return shapes


def flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """MACs of one forward pass of a single input of `input_shape` (no batch dimension, e.g. (1, 28, 28))."""
    return sum(shape.macs for shape in layer_shapes(model, input_shape))
