"""How much each weight's error costs at the layer's output: importance weights for k-means.

Plain weight sharing minimises the squared error of the weights, as if every weight mattered
equally. What matters is the error of the layer's output. For y = W x followed by a BatchNorm with
scale g_o / sigma_o, the output error of channel o is (g_o / sigma_o) * sum_i (W_oi - Q_oi) x_i;
dropping the cross terms between inputs (the diagonal approximation of the output error's Hessian,
as in Optimal Brain Damage, LeCun et al. 1990), its expectation is

    sum_oi (g_o / sigma_o)^2 E[x_i^2] (W_oi - Q_oi)^2,

a weighted k-means objective with importance (g_o / sigma_o)^2 E[x_i^2] per weight:
  - `norm`: the squared scale of the BatchNorm that directly follows the layer (data-free); it
    matters for one palette shared by channels whose outputs are scaled very differently.
  - `activation`: also Var[x_i] of the input channel the weight multiplies, measured on
    calibration samples (training data, never the evaluation split); it changes per-channel
    palettes too. The mean part of the error, sum_i (W_oi - Q_oi) E[x_i], is the same for every
    input and is removed exactly instead of weighted (`correct_mean_shift`, the bias correction of
    Nagel et al. 2019, "Data-Free Quantization"): after inputs through ReLU, whose mean is far from
    zero, the uncentred E[x_i^2] would let that shift dominate the weighting.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from netshrink.errors import ModelError
from netshrink.training.loop import call_model

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def following_norm_scales(model: nn.Module) -> dict[str, torch.Tensor]:
    """layer name -> |g / sigma| per output channel of the BatchNorm that is its only consumer."""
    return {name: norm_scale(norm) for name, norm in following_norms(model).items()}


def norm_scale(norm: nn.Module) -> torch.Tensor:
    scale = torch.ones(norm.num_features) if norm.weight is None else norm.weight.detach().abs()
    return scale / torch.sqrt(norm.running_var + norm.eps)


def following_norms(model: nn.Module) -> dict[str, nn.Module]:
    """layer name -> the BatchNorm (with running statistics) that is the layer's only consumer."""
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as exc:  # fx raises many types for untraceable Python control flow
        raise ModelError(f"cannot trace {type(model).__name__} to find the norms after its layers: {exc}") from None
    modules = dict(model.named_modules())
    norms = {}
    for node in graph.nodes:
        users = list(node.users)
        if node.op != "call_module" or len(users) != 1 or users[0].op != "call_module":
            continue
        norm = modules[users[0].target]
        if isinstance(norm, NORMS) and norm.running_var is not None:
            norms[node.target] = norm
    return norms


@dataclass(frozen=True)
class InputMoments:
    """Per input channel (conv) or input feature (linear): the mean and the mean square."""

    mean: torch.Tensor
    square: torch.Tensor

    @property
    def variance(self) -> torch.Tensor:
        return (self.square - self.mean.pow(2)).clamp_min(0)


@torch.no_grad()
def input_moments(model: nn.Module, names: Iterable[str], batches: Iterable[Any]) -> dict[str, InputMoments]:
    """layer name -> mean and mean square of its inputs per channel, over `batches` (model inputs:
    a tensor, or a tuple / dict of tensors as `train.call_model` takes them)."""
    modules = dict(model.named_modules())
    sums: dict[str, torch.Tensor] = {}
    squares: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def record(name: str):
        channel_dim = 1 if isinstance(modules[name], nn.modules.conv._ConvNd) else -1

        def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0].detach().double().movedim(channel_dim, -1)
            x = x.reshape(-1, x.shape[-1])
            sums[name] = sums.get(name, 0) + x.sum(0)
            squares[name] = squares.get(name, 0) + x.pow(2).sum(0)
            counts[name] = counts.get(name, 0) + x.shape[0]
        return hook

    handles = [modules[name].register_forward_pre_hook(record(name)) for name in names]
    was_training = model.training
    model.eval()
    try:
        for inputs in batches:
            call_model(model, inputs)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return {name: InputMoments(sums[name] / counts[name], squares[name] / counts[name]) for name in sums}


def weight_importance(module: nn.Module, out_scale: torch.Tensor | None, in_moment: torch.Tensor | None) -> torch.Tensor:
    """Importance of each weight of a Conv/Linear layer: out_scale[o]^2 * in_moment[input of w]."""
    weight = module.weight
    importance = torch.ones_like(weight, dtype=torch.float64)
    if out_scale is not None:
        importance *= out_scale.double().pow(2).reshape(-1, *([1] * (weight.dim() - 1)))
    if in_moment is not None:
        importance *= _per_weight_input(module, in_moment.double()).reshape(weight.shape[0], weight.shape[1],
                                                                            *([1] * (weight.dim() - 2)))
    return importance


def _per_weight_input(module: nn.Module, moment: torch.Tensor) -> torch.Tensor:
    """(out, in_per_group) matrix of the input moment each weight multiplies (grouped convs too)."""
    out_channels, in_per_group = module.weight.shape[:2]
    groups = getattr(module, "groups", 1)
    group_of_output = torch.arange(out_channels) // (out_channels // groups)
    inputs = group_of_output[:, None] * in_per_group + torch.arange(in_per_group)[None, :]
    return moment[inputs]


@torch.no_grad()
def correct_mean_shift(model: nn.Module, name: str, original: torch.Tensor, input_mean: torch.Tensor,
                       norms: dict[str, nn.Module]) -> bool:
    """Cancel the mean output shift sum_i (Q_oi - W_oi) E[x_i] that quantizing layer `name` from
    `original` caused: into its bias if it has one, else into the running mean of the BatchNorm that
    follows it. (Border pixels of a padded conv see fewer inputs; the interior dominates.) Returns
    whether there was somewhere to put it."""
    module = dict(model.named_modules())[name]
    delta = module.weight.detach().double() - original.double()
    per_input = _per_weight_input(module, input_mean.double())
    shift = (delta.reshape(*per_input.shape, -1).sum(-1) * per_input).sum(1)
    if module.bias is not None:
        module.bias -= shift.to(module.bias.dtype)
    elif name in norms:
        norms[name].running_mean += shift.to(norms[name].running_mean.dtype)
    else:
        return False
    return True
