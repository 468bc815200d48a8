"""How much each weight's error costs at the layer's output: importance weights for k-means.

Plain weight sharing minimises the squared error of the weights, as if every weight mattered
equally. What matters is the error of the layer's output. For y = W x followed by a BatchNorm with
scale g_o / sigma_o, the output error of channel o is (g_o / sigma_o) * sum_i (W_oi - Q_oi) x_i;
dropping the cross terms between inputs (the diagonal approximation of the output error's Hessian,
as in Optimal Brain Damage, LeCun et al. 1990), its expectation is

    sum_oi (g_o / sigma_o)^2 E[x_i^2] (W_oi - Q_oi)^2,

a weighted k-means objective with importance (g_o / sigma_o)^2 E[x_i^2] per weight:
  - `norm`: the squared scale of the BatchNorm that directly follows the layer (data-free,
    calibration/batchnorm.py); it matters for one palette shared by channels whose outputs are
    scaled very differently.
  - `activation`: also Var[x_i] of the input channel the weight multiplies, measured on
    calibration samples (training data, never the evaluation split); it changes per-channel
    palettes too. The mean part of the error, sum_i (W_oi - Q_oi) E[x_i], is the same for every
    input and is removed exactly instead of weighted (`correct_bias`, the bias correction of
    Nagel et al. 2019, "Data-Free Quantization"): after inputs through ReLU, whose mean is far from
    zero, the uncentred E[x_i^2] would let that shift dominate the weighting.
"""

from __future__ import annotations

import torch
from torch import nn


def weight_importance(
    module: nn.Module, out_scale: torch.Tensor | None, in_moment: torch.Tensor | None
) -> torch.Tensor:
    """Importance of each weight of a Conv/Linear layer: out_scale[o]^2 * in_moment[input of w]."""
    weight = module.weight
    importance = torch.ones_like(weight, dtype=torch.float64)
    if out_scale is not None:
        importance *= out_scale.double().pow(2).reshape(-1, *([1] * (weight.dim() - 1)))
    if in_moment is not None:
        importance *= _per_weight_input(module, in_moment.double()).reshape(
            weight.shape[0], weight.shape[1], *([1] * (weight.dim() - 2))
        )
    return importance


def _per_weight_input(module: nn.Module, moment: torch.Tensor) -> torch.Tensor:
    """(out, in_per_group) matrix of the input moment each weight multiplies (grouped convs too)."""
    out_channels, in_per_group = module.weight.shape[:2]
    groups = getattr(module, "groups", 1)
    group_of_output = torch.arange(out_channels, device=moment.device) // (out_channels // groups)
    inputs = group_of_output[:, None] * in_per_group + torch.arange(in_per_group, device=moment.device)[None, :]
    return moment[inputs]
