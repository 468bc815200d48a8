"""Structured filter pruning: whole output channels removed, leaving a smaller dense model.

Which channels can go is read from the model's traced graph (torch.fx), not from per-architecture
lists: a Conv2d/Linear "producer" is prunable when every path from its output passes only through
channel-wise ops (BatchNorm, ReLU, pooling, flatten, spatial mean) into other Conv2d/Linear
"consumers". Removing channel c then means deleting the producer's filter c, entry c of the
BatchNorms on the way, and the consumers' input channel c (a block of h*w columns after a flatten).
A producer whose output reaches a residual add, a concatenation or the model output is left alone:
in a ResNet with option-A shortcuts that leaves exactly the inner channels of each basic block.

The schedule is Li et al. 2017 ("Pruning Filters for Efficient ConvNets", sec. 3.2 and 3.4):
filters are ranked by L1 norm within a layer, layers by their sensitivity, the accuracy lost on a
held-out slice of the training data when `prune_fraction` of their filters are removed; the least
sensitive layers are pruned first, and the network is retrained between rounds.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import ClassVar

import torch
from torch import fx, nn
from torch.nn import functional as F

from netshrink.data import ArrayDataset
from netshrink.errors import DATA_HINT, DataError, ModelError, RecipeError
from netshrink.evaluate import evaluate
from netshrink.flops import flops
from netshrink.plan import CompressionPlan
from netshrink.select import MATRIX_LAYERS
from netshrink.step import StepContext, register_step
from netshrink.training.retraining import RetrainingStep
from netshrink.zoo.protocols import DescribesArch

log = logging.getLogger(__name__)

_CHANNELWISE_MODULES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.ReLU,
    nn.ReLU6,
    nn.Identity,
    nn.Dropout,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
)
_CHANNELWISE_FUNCTIONS = {F.relu, torch.relu, F.relu6, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.dropout}


@dataclass(frozen=True)
class ChannelGroup:
    """A prunable producer layer and the modules whose shapes follow its output channels."""

    producer: str
    norms: tuple[str, ...] = ()
    consumers: tuple[str, ...] = ()


# --- finding the groups ----------------------------------------------------------------------------


def channel_groups(model: nn.Module) -> list[ChannelGroup]:
    """Every producer whose output channels can be removed without breaking a shape, in model order."""
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as exc:  # fx raises many types for untraceable Python control flow
        raise ModelError(f"cannot trace {type(model).__name__} to find prunable channels: {exc}") from None
    modules = dict(model.named_modules())
    calls = [n.target for n in graph.nodes if n.op == "call_module"]
    single = {name for name in calls if calls.count(name) == 1}
    groups = []
    for node in graph.nodes:
        if node.op == "call_module" and node.target in single and _is_plain_layer(modules[node.target]):
            group = _follow(node, modules, single)
            if group is not None:
                groups.append(group)
    return groups


def _is_plain_layer(module: nn.Module) -> bool:
    return isinstance(module, MATRIX_LAYERS) and getattr(module, "groups", 1) == 1


def _follow(start: fx.Node, modules: dict[str, nn.Module], single: set[str]) -> ChannelGroup | None:
    """Walk from a producer through channel-wise ops; None when a path ends anywhere but a layer."""
    norms, consumers, stack, seen = [], [], list(start.users), set()
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        module = modules.get(node.target) if node.op == "call_module" else None
        if module is not None and _is_plain_layer(module) and node.target in single:
            consumers.append(node.target)
        elif _is_channelwise(node, module):
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                norms.append(node.target)
            stack.extend(node.users)
        else:
            return None
    return ChannelGroup(start.target, tuple(sorted(norms)), tuple(sorted(consumers))) if consumers else None


def _is_channelwise(node: fx.Node, module: nn.Module | None) -> bool:
    """Ops that keep dim 1 as the channel dimension, one value per channel in, per channel out."""
    if module is not None:
        return isinstance(module, _CHANNELWISE_MODULES) or (isinstance(module, nn.Flatten) and module.start_dim == 1)
    if node.op == "call_function" and node.target in _CHANNELWISE_FUNCTIONS:
        return True
    if (node.op, node.target) in (("call_function", torch.flatten), ("call_method", "flatten")):
        return _arg(node, 1, "start_dim", 0) == 1
    if node.op == "call_method" and node.target == "relu":
        return True
    if node.op == "call_method" and node.target == "mean":
        dims = _arg(node, 1, "dim", None)
        dims = (dims,) if isinstance(dims, int) else dims
        return isinstance(dims, (tuple, list)) and all(isinstance(d, int) and d >= 2 for d in dims)
    return False


def _arg(node: fx.Node, index: int, name: str, default: object) -> object:
    return node.args[index] if len(node.args) > index else node.kwargs.get(name, default)


# --- removing channels -------------------------------------------------------------------------------


def width(model: nn.Module, group: ChannelGroup) -> int:
    """How many output channels the group's producer has now."""
    return int(model.get_submodule(group.producer).weight.shape[0])


def smallest_l1_removed(model: nn.Module, group: ChannelGroup, count: int) -> torch.Tensor:
    """Sorted indices of the channels to keep after dropping the `count` filters of smallest L1 norm."""
    weight = model.get_submodule(group.producer).weight.detach()
    order = torch.argsort(weight.abs().reshape(weight.shape[0], -1).sum(1), stable=True)
    return order[count:].sort().values


def prune_channels(model: nn.Module, group: ChannelGroup, keep: torch.Tensor) -> None:
    """Keep only channels `keep` of the group, in place: producer rows, norm entries, consumer inputs."""
    old = width(model, group)
    _keep_rows(model.get_submodule(group.producer), keep)
    for name in group.norms:
        _keep_norm(model.get_submodule(name), keep)
    for name in group.consumers:
        _keep_inputs(model.get_submodule(name), keep, old)


def _replace(module: nn.Module, name: str, value: torch.Tensor) -> None:
    param = getattr(module, name)
    setattr(module, name, nn.Parameter(value.clone(), requires_grad=param.requires_grad))


def _keep_rows(layer: nn.Module, keep: torch.Tensor) -> None:
    _replace(layer, "weight", layer.weight.detach()[keep])
    if layer.bias is not None:
        _replace(layer, "bias", layer.bias.detach()[keep])
    if isinstance(layer, nn.Linear):
        layer.out_features = len(keep)
    else:
        layer.out_channels = len(keep)


def _keep_norm(norm: nn.Module, keep: torch.Tensor) -> None:
    for name in ("weight", "bias"):
        if getattr(norm, name, None) is not None:
            _replace(norm, name, getattr(norm, name).detach()[keep])
    for name in ("running_mean", "running_var"):
        if getattr(norm, name, None) is not None:
            setattr(norm, name, getattr(norm, name)[keep].clone())
    norm.num_features = len(keep)


def _keep_inputs(layer: nn.Module, keep: torch.Tensor, old_width: int) -> None:
    weight = layer.weight.detach()
    if isinstance(layer, nn.Linear):
        # After a flatten each channel owns in_features / channels consecutive columns (NCHW order).
        per_channel = layer.in_features // old_width
        kept = weight.reshape(weight.shape[0], old_width, per_channel)[:, keep].reshape(weight.shape[0], -1)
        layer.in_features = kept.shape[1]
    else:
        kept = weight[:, keep]
        layer.in_channels = len(keep)
    _replace(layer, "weight", kept)


# --- the order-deciding scheme -----------------------------------------------------------------------


def holdout_split(data: ArrayDataset, size: int, seed: int) -> tuple[ArrayDataset, ArrayDataset]:
    """(training part, held-out part): a deterministic random slice of the training data."""
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    return data.subset(order[size:].sort().values), data.subset(order[:size].sort().values)


def holdout_accuracy(model: nn.Module, holdout: ArrayDataset) -> float:
    return evaluate(model, holdout, split="holdout", progress=False).value


def sensitivities(model: nn.Module, cuts: dict[ChannelGroup, int], holdout: ArrayDataset) -> dict[ChannelGroup, float]:
    """Held-out accuracy lost when each group loses its `cuts[group]` smallest-L1 filters (others intact)."""
    base = holdout_accuracy(model, holdout)
    drops = {}
    for group, count in cuts.items():
        trial = copy.deepcopy(model)
        prune_channels(trial, group, smallest_l1_removed(trial, group, count))
        drops[group] = base - holdout_accuracy(trial, holdout)
    return drops


def least_sensitive_first(drops: dict[ChannelGroup, float]) -> list[ChannelGroup]:
    """Groups ordered by accuracy lost (ties: model order, earlier layers first)."""
    return sorted(drops, key=lambda group: drops[group])


def input_shape(data) -> tuple[int, ...]:
    """One input's shape as the training loop gets it (MACs are counted at this size): images only."""
    inputs, _ = next(iter(data.loader(1)))
    if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point():  # text: (ids, mask) or token ids
        kind = "token id" if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise RecipeError(
            f"step filter_prune removes channels of image models, but the training data gives {kind} batches "
            "(text); use a weight-sharing or pruning step instead"
        )
    return tuple(inputs.shape[1:])


def require_no_codecs(plan: CompressionPlan, step: str) -> None:
    """Steps that change tensor shapes must run before any step assigns codecs to those tensors."""
    if plan.entries:
        first = next(iter(plan.entries))
        raise RecipeError(
            f"step {step} changes the architecture, so it must come before the steps that assign "
            f"codecs (tensor {first!r} already has one); move it earlier in the recipe"
        )


def record_arch(model: nn.Module, ctx: StepContext, step: str) -> None:
    """Put the model's new shape in ctx.arch, so `netshrink.load` rebuilds the changed module."""
    if isinstance(model, DescribesArch):
        ctx.arch.update(model.arch_options())
    else:
        log.warning(
            "%s: %s has no arch_options(); load the file with netshrink.load(path, model=...) given a "
            "module of the new shape",
            step,
            type(model).__name__,
        )


@register_step("filter_prune")
@dataclass(frozen=True)
class FilterPrune(RetrainingStep):
    """Iterative filter pruning, least sensitive layers first, retraining `epochs` after every round
    (`RetrainSettings`, flat in a recipe).

    Give exactly one target: `target_flops_ratio` (original MACs / pruned MACs, no layer below
    `min_keep` of its filters) or `keep` (the fraction of filters a layer keeps; usually per layer,
    in `overrides`, and then the layers no pattern gives a `keep` stay whole). Each round measures
    every layer that can still lose filters, then cuts `prune_fraction` of its original filters
    from the `layers_per_round` least sensitive ones. Per layer: `keep`, `min_keep`.
    """

    layer_types: ClassVar[tuple[type[nn.Module], ...]] = MATRIX_LAYERS
    per_layer_fields: ClassVar[tuple[str, ...]] = ("keep", "min_keep")
    target_flops_ratio: float | None = None
    keep: float | None = None
    prune_fraction: float = 0.125
    layers_per_round: int = 2
    min_keep: float = 0.25
    holdout: int = 1000
    max_rounds: int = 50
    final_epochs: float = 0.0

    def validate(self) -> None:
        if (self.target_flops_ratio is None) == (not self.keeps):
            raise ValueError("give exactly one of target_flops_ratio and keep")
        if self.target_flops_ratio is not None and self.target_flops_ratio <= 1:
            raise ValueError(f"target_flops_ratio must be > 1, got {self.target_flops_ratio}")
        if self.keep is not None and not 0 < self.keep <= 1:
            raise ValueError(f"keep must be in (0, 1], got {self.keep}")
        for name in ("prune_fraction", "min_keep"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        for name in ("layers_per_round", "holdout", "max_rounds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.final_epochs < 0:
            raise ValueError(f"final_epochs must be >= 0, got {self.final_epochs}")

    @property
    def keeps(self) -> bool:
        """Whether the target is `keep` fractions (given for the step or in its overrides)."""
        return self.keep is not None or any("keep" in settings for settings in self.overrides.values())

    def apply(self, model: nn.Module, plan: CompressionPlan, ctx: StepContext) -> None:
        require_no_codecs(plan, self.step_name)
        self.train.freeze_teacher(model, ctx)  # the unpruned network
        train_ctx, holdout = self.split_data(ctx)
        shape = input_shape(ctx.data)
        groups = self.prunable(model)
        cut_size = {g: max(1, round(self.prune_fraction * width(model, g))) for g in groups}
        floors = {g: self.floor(g, width(model, g)) for g in groups}
        base_macs = flops(model, shape)

        def ratio() -> float:
            return base_macs / flops(model, shape)

        for round_index in range(1, self.max_rounds + 1):
            cuts = {g: c for g in groups if (c := min(cut_size[g], width(model, g) - floors[g])) > 0}
            if not cuts or self.reached(ratio()):
                break
            pruned = self.prune_round(model, cuts, holdout, ratio)
            if self.train.epochs > 0:
                self.retrain(model, train_ctx, [], desc=f"filter_prune round {round_index} ({ratio():.2f}x fewer MACs)")
            log.info(
                "filter_prune round %d: %s; %.2fx fewer MACs; held-out top1 %.2f %%",
                round_index,
                ", ".join(pruned),
                ratio(),
                100 * holdout_accuracy(model, holdout),
            )
        self.finish(model, train_ctx, ratio())
        record_arch(model, ctx, self.step_name)

    def split_data(self, ctx: StepContext) -> tuple[StepContext, ArrayDataset]:
        """(context whose data excludes the held-out slice, the held-out slice)."""
        if ctx.data is None:
            raise DataError(f"filter_prune measures layer sensitivity on training data {DATA_HINT}")
        size = min(self.holdout, len(ctx.data) // 5)  # never more than a fifth of what there is to train on
        if size < 1:
            raise DataError(f"filter_prune needs at least 5 training samples to hold some out, got {len(ctx.data)}")
        train, holdout = holdout_split(ctx.data, size, ctx.seed)
        return dataclasses.replace(ctx, data=train), holdout  # the copy shares ctx.arch

    def prunable(self, model: nn.Module) -> list[ChannelGroup]:
        """The selected layers' channel groups; naming a layer that cannot lose filters is an error."""
        selected = {name for name, _ in self.layers(model)}
        groups = [g for g in channel_groups(model) if g.producer in selected]
        producers = {g.producer for g in groups}
        blocked = [p for p in self.include if p in selected and p not in producers]
        if blocked:
            raise RecipeError(
                f"step filter_prune: layer {blocked[0]!r} cannot lose filters: its output reaches a "
                "residual add, a concatenation or the model output"
            )
        for pattern, settings in self.overrides.items():
            if not any(fnmatchcase(p, pattern) for p in producers):
                raise RecipeError(
                    f"step filter_prune: overrides pattern {pattern!r} (field "
                    f"{', '.join(map(repr, settings))}) matches no prunable layer; "
                    f"prunable: {', '.join(sorted(producers))}"
                )
        if not groups:
            raise RecipeError(f"step filter_prune: no selected layer of {type(model).__name__} can lose filters")
        return groups

    def floor(self, group: ChannelGroup, original: int) -> int:
        """The fewest filters the layer may keep (all of them when `keep` targets other layers only)."""
        layer = self.for_layer(group.producer)
        if self.keeps:
            return max(1, round((layer.keep or 1.0) * original))
        return max(1, math.ceil(layer.min_keep * original - 1e-9))

    def reached(self, ratio: float) -> bool:
        return self.target_flops_ratio is not None and ratio >= self.target_flops_ratio

    def prune_round(
        self, model: nn.Module, cuts: dict[ChannelGroup, int], holdout: ArrayDataset, ratio: Callable[[], float]
    ) -> list[str]:
        """Cut the least sensitive layers, stopping early once `target_flops_ratio` is reached; what was cut, as text."""
        drops = sensitivities(model, cuts, holdout)
        done = []
        for group in least_sensitive_first(drops)[: self.layers_per_round]:
            before = width(model, group)
            prune_channels(model, group, smallest_l1_removed(model, group, cuts[group]))
            done.append(f"{group.producer} {before}->{width(model, group)} (drop {100 * drops[group]:.2f} pp)")
            if self.reached(ratio()):
                break
        return done

    def finish(self, model: nn.Module, ctx: StepContext, ratio: float) -> None:
        if self.target_flops_ratio is not None and not self.reached(ratio):
            log.warning(
                "filter_prune reached only %.2fx fewer MACs (target %.2fx): every layer is at min_keep "
                "or max_rounds ran out",
                ratio,
                self.target_flops_ratio,
            )
        if self.final_epochs > 0:
            self.retrain(model, ctx, [], desc="filter_prune final", epochs=self.final_epochs)
