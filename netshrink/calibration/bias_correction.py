"""Bias correction: cancel the mean output shift that changing a layer's weights causes.

Replacing W by Q (a palette, a codebook) shifts output o of y = W x by sum_j (Q_oj - W_oj) E[x_j]
on average, the same for every input; a coarse palette makes that shift systematic. It is removed
exactly by subtracting it from the layer's bias, or, for a layer without one, by adding it to the
running mean of the BatchNorm that follows (Nagel et al. 2019, "Data-Free Quantization", sec. 4.2).
"""

from __future__ import annotations

import torch
from torch import nn

from netshrink.calibration.layer_inputs import groups_of


@torch.no_grad()
def correct_bias(
    module: nn.Module, original: torch.Tensor, input_mean: torch.Tensor, norm: nn.Module | None = None
) -> bool:
    """Cancel the mean output change (Q - W) E[x] of `module` (weights now Q, before `original`).

    `input_mean`: E[x] per im2col entry of each group (`PatchMoments.mean`: border zeros of a padded
    conv counted), or per input channel (`ChannelMoments.mean`: the same at every kernel position,
    so border pixels, which see fewer inputs, are taken as the interior). The shift goes into the
    bias, else into the running mean of `norm` (the BatchNorm after the layer). Returns whether there
    was somewhere to put it.
    """
    rows = module.weight.shape[0]
    groups = groups_of(module)
    delta = (module.weight.detach() - original).reshape(rows, -1).double()
    mean = input_mean.double()
    if mean.numel() != groups * delta.shape[1]:  # one per input channel: the same at each kernel position
        mean = mean.repeat_interleave(module.weight[0, 0].numel())
    shift = (delta * mean.reshape(groups, -1).repeat_interleave(rows // groups, 0)).sum(1)
    if module.bias is not None:
        module.bias -= shift.to(module.bias.dtype)
    elif norm is not None:
        norm.running_mean += shift.to(norm.running_mean.dtype)
    else:
        return False
    return True
