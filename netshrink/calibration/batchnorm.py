"""The BatchNorm after a layer: which one it is, how it scales the layer's output, fresh statistics.

At inference a BatchNorm maps channel o to (y_o - mu_o) * g_o / sigma_o + b_o (sigma_o^2 the running
variance + eps). When it is the only consumer of a layer's output, an error in the layer's output
channel o reaches the rest of the network scaled by |g_o| / sigma_o (the weighting of importance-
weighted palettes and of the pq step's rows), and a mean shift of that channel can be cancelled in
mu_o when the layer has no bias (bias correction, Nagel et al. 2019).

The pairs are read from the model's graph, so they are known without data (the data-free `norm`
weighting of the palette step). Every module without submodules is traced as one call: layers that
compute with their input's size inside `forward` (TF "SAME" convolutions) do not stop the trace.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm

from netshrink.devices import model_device, to_device
from netshrink.errors import ModelError
from netshrink.training.loop import call_model


class _LayerTracer(fx.Tracer):
    """Traces containers only: every module without submodules stays one `call_module` node."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return next(module.children(), None) is None or super().is_leaf_module(module, qualified_name)


def following_batchnorms(model: nn.Module) -> dict[str, _BatchNorm]:
    """layer name -> the BatchNorm (with running statistics, over the layer's output channels) that
    is the only consumer of the layer's output. A model without BatchNorms is not traced."""
    modules = dict(model.named_modules())
    if not any(isinstance(module, _BatchNorm) for module in modules.values()):
        return {}
    try:
        graph = _LayerTracer().trace(model)
    except Exception as exc:  # fx raises many types for untraceable Python control flow
        raise ModelError(f"cannot trace {type(model).__name__} to find the BatchNorm after each layer: {exc}") from None
    norms = {}
    for node in graph.nodes:
        users = list(node.users)
        if node.op != "call_module" or len(users) != 1 or users[0].op != "call_module":
            continue
        layer, norm = modules[node.target], modules[users[0].target]
        weight = getattr(layer, "weight", None)
        if (
            isinstance(norm, _BatchNorm)
            and norm.running_var is not None
            and isinstance(weight, torch.Tensor)
            and weight.dim() >= 1
            and weight.shape[0] == norm.num_features
        ):
            norms[node.target] = norm
    return norms


def batchnorm_scale(norm: _BatchNorm) -> torch.Tensor:
    """|g| / sigma per channel: how much the norm multiplies each channel at inference."""
    ones = torch.ones(norm.num_features, device=norm.running_var.device)
    scale = ones if norm.weight is None else norm.weight.detach().abs()
    return scale / torch.sqrt(norm.running_var + norm.eps)


def batchnorm_scales(model: nn.Module) -> dict[str, torch.Tensor]:
    """layer name -> `batchnorm_scale` of the BatchNorm that follows it (`following_batchnorms`)."""
    return {name: batchnorm_scale(norm) for name, norm in following_batchnorms(model).items()}


@torch.no_grad()
def recalibrate_batchnorms(model: nn.Module, batches: Iterable[Any]) -> int:
    """Re-estimate every BatchNorm's running mean and variance on `batches` (equal-weight average
    over the batches, the rest of the model in eval mode: no dropout or drop-connect noise). After
    a layer's weights are replaced, the statistics of everything after it are stale; fresh ones
    remove most of the damage before any training (BN re-estimation). Returns how many norms.
    Calibration batches are not sharded in a run on several processes: every rank re-estimates on
    the same batches and gets the same statistics, so nothing needs reducing."""
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not norms:
        return 0
    was_training, device = model.training, model_device(model)
    saved = [(m, m.momentum) for m in norms]
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
        norm.train()
    try:
        for inputs in batches:
            call_model(model, to_device(inputs, device))
    finally:
        for norm, momentum in saved:
            norm.momentum = momentum
        model.train(was_training)
    return len(norms)
