"""Counting the multiply-accumulates of a model's conv and linear layers.

Convention: `flops` returns MACs (one multiply plus one add = 1), the unit most compression
papers call "FLOPs" (He et al. 2016 give ResNet costs this way; Li et al. 2017 report pruned
FLOPs likewise). Multiply by 2 for floating-point operations in the strict sense. Biases,
normalisation, activations and pooling are not counted: they are a few percent at most and
no method here changes how many there are per channel. FLOPs *ratios* are the same in either
convention, which is what `filter_prune` targets.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


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


def flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """MACs of one forward pass of a single input of `input_shape` (no batch dimension, e.g. (1, 28, 28)).

    Measured with forward hooks on a zero input, so it follows whatever the forward really runs
    (a layer called twice counts twice; a layer skipped counts nothing).
    """
    counts: list[int] = []
    hooks = [module.register_forward_hook(lambda m, _inputs, out: counts.append(layer_macs(m, out)))
             for module in model.modules() if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear))]
    param = next(model.parameters(), None)
    x = torch.zeros(1, *input_shape, dtype=param.dtype if param is not None else torch.float32,
                    device=param.device if param is not None else None)
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return sum(counts)
