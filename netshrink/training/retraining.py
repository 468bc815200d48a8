"""What every retraining method shares: its settings in a recipe, the call into the one training
loop, the own-loop entry point, and the hooks that keep pruned weights at zero and shared weights
shared.

A retraining step derives from `TrainingStep` (a layer step from `RetrainingStep`): its `train`
field (`RetrainSettings`: `epochs`, `lr`, `batch_size`, `momentum`, `weight_decay`, `optimizer`,
`distill`, `temperature`, `autocast`) is one value, validated once, and written flat in a recipe beside the
step's own fields (`epochs: 3, lr: 0.01`; the mapping is netshrink/config.py's). Each step
trains through `fit` with its own hooks; none owns an epoch loop. A step that retrains in one
phase also runs from the caller's loop: `step.prepare(model)` (see training/session.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from netshrink.cluster import assign_nearest
from netshrink.config import OMIT_WHEN_EMPTY
from netshrink.data import DEFAULT_AUGMENTATION
from netshrink.devices import Autocast
from netshrink.errors import DATA_HINT, DataError, RecipeError
from netshrink.format.codecs.base import Codebook, Encoded
from netshrink.format.codecs.pq import PQ, from_subvectors, subvectors
from netshrink.plan import CompressionPlan
from netshrink.step import LayerStep, Recipe, StepContext
from netshrink.training.distill import DISTILL_KINDS, DistillationLoss
from netshrink.training.loop import TrainConfig, TrainHook, TrainResult, fit
from netshrink.training.session import TrainingSession


@dataclass(frozen=True)
class RetrainSettings:
    """How a step retrains (SGD + Nesterov momentum or Adam, cosine schedule).

    `distill` picks the loss of every retraining the step runs: `ce` (labels, the default), or `kl` /
    `mse` against the recipe's uncompressed network (`StepContext.teacher`). A heavily pruned or
    quantized student recovers more from the teacher's full output distribution than from labels
    (Hinton et al. 2015; Stock et al. 2020 fine-tune this way). `autocast: bf16` runs the forward
    passes under bfloat16 autocast (for GPUs; see `TrainConfig`).
    """

    epochs: float = 2.0
    lr: float = 0.01
    batch_size: int = 64
    momentum: float = 0.9
    weight_decay: float = 1e-4
    optimizer: Literal["sgd", "adam"] = "sgd"
    distill: Literal["kl", "mse", "ce"] = "ce"
    temperature: float = 1.0
    autocast: Autocast = field(default=None, metadata=OMIT_WHEN_EMPTY)

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.lr <= 0 or self.batch_size < 1 or self.weight_decay < 0:
            raise ValueError("epochs must be >= 0, lr > 0, batch_size >= 1, weight_decay >= 0")
        if self.distill not in DISTILL_KINDS or self.temperature <= 0:
            raise ValueError(
                f"distill must be one of {', '.join(DISTILL_KINDS)} and temperature > 0, "
                f"got {self.distill!r} and {self.temperature}"
            )
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")

    def freeze_teacher(self, model: nn.Module, ctx: StepContext) -> None:
        """Fix the teacher now, before this step changes the model (a no-op when `compress` already has)."""
        if self.distill != "ce":
            ctx.teacher_for(model)

    def loss_for(self, model: nn.Module, ctx: StepContext) -> Callable | None:
        """The training loss `distill` asks for: None (fit's cross-entropy) or a distillation loss."""
        if self.distill == "ce":
            return None
        return DistillationLoss(ctx.teacher_for(model), self.distill, self.temperature)

    def train_config(self, ctx: StepContext, epochs: float | None = None, lr: float | None = None) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs if epochs is None else epochs,
            batch_size=self.batch_size,
            lr=self.lr if lr is None else lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            optimizer=self.optimizer,
            augment=DEFAULT_AUGMENTATION.get(ctx.dataset or ""),
            seed=ctx.seed,
            autocast=self.autocast,
        )

    def retrain(
        self,
        model: nn.Module,
        ctx: StepContext,
        hooks: Sequence[TrainHook],
        desc: str,
        *,
        epochs: float | None = None,
        lr: float | None = None,
        params: Sequence[nn.Parameter] | None = None,
        loss_fn: Callable | None = None,
    ) -> TrainResult | None:
        """Train `model` on the step's data with `hooks`; zero epochs means no training. `loss_fn`
        replaces the loss `distill` picks (see `loss_for`)."""
        if ctx.data is None:
            raise DataError(f"{desc} retrains the model and needs training data {DATA_HINT}")
        if (self.epochs if epochs is None else epochs) == 0:
            return None
        config = self.train_config(ctx, epochs, lr)
        loss_fn = loss_fn or self.loss_for(model, ctx)
        return fit(model, ctx.data, config, hooks, progress=ctx.progress, desc=desc, params=params, loss_fn=loss_fn)


@dataclass(frozen=True)
class TrainingStep:
    """Base of steps that retrain the network: `train` says how (see `RetrainSettings`)."""

    train: RetrainSettings = RetrainSettings()

    @property
    def needs_data(self) -> bool:
        return True

    @property
    def distills(self) -> bool:
        return self.train.distill != "ce"

    def retrain(
        self, model: nn.Module, ctx: StepContext, hooks: Sequence[TrainHook], desc: str, **settings
    ) -> TrainResult | None:
        return self.train.retrain(model, ctx, hooks, desc, **settings)


@dataclass(frozen=True)
class RetrainingStep(TrainingStep, LayerStep):
    """Base of layer steps that retrain the network (`train`, from `TrainingStep`).

    A step that retrains in one phase splits `apply` into `prepare_training` (compress the layers,
    return the hooks that hold the compression while training) and `finalize_training` (store the
    trained result), so that `prepare` can hand the training to the caller's own loop.
    """

    def prepare(self, model: nn.Module, plan: CompressionPlan | None = None, *, seed: int = 0) -> TrainingSession:
        """Start this step on `model` (changed in place) for the caller's own training loop; the
        session's `finalize()` returns the `CompressedModel` (save it as a .nsk). `plan`: the plan of
        earlier steps, e.g. `compress(...).plan` when the model was pruned first."""
        from dataclasses import replace

        from netshrink.api.compressed import CompressedModel  # the API's result type; imported on use
        from netshrink.identity import ModelIdentity
        from netshrink.report.sizes import original_size

        plan, ctx = plan if plan is not None else CompressionPlan(), StepContext(seed=seed, progress=False)
        identity = replace(ModelIdentity.of(model), original=original_size(model))
        hooks = self.prepare_training(model, plan, ctx)

        def finish() -> CompressedModel:
            self.finalize_training(model, plan, ctx)
            return CompressedModel(model.eval(), plan, Recipe(self.step_name, (self,)), identity)

        return TrainingSession(model, hooks, finish)

    def prepare_training(self, model: nn.Module, plan: CompressionPlan, ctx: StepContext) -> list[TrainHook]:
        raise RecipeError(
            f"step {self.step_name} retrains in several phases, so it runs through netshrink.compress "
            "only; steps that run from your own loop: trained_quantization"
        )

    def finalize_training(self, model: nn.Module, plan: CompressionPlan, ctx: StepContext) -> None:
        pass


def parameters_named(model: nn.Module, names) -> dict[str, nn.Parameter]:
    """The model's parameters under `names` (state-dict names), for hooks that edit them each step."""
    named = dict(model.named_parameters())
    return {name: named[name] for name in names}


class MaskHook(TrainHook):
    """Holds pruned weights at exactly zero: their gradients are zeroed and the weights re-zeroed."""

    def __init__(self, masks: dict[str, torch.Tensor]) -> None:
        self.masks = masks
        self.params: dict[str, nn.Parameter] = {}

    def prepare(self, model: nn.Module) -> None:
        self.params = parameters_named(model, self.masks)

    def after_backward(self, model: nn.Module) -> None:
        for name, param in self.params.items():
            if param.grad is not None:
                param.grad.mul_(self.masks[name])

    def after_step(self, model: nn.Module, step: int) -> None:
        with torch.no_grad():
            for name, param in self.params.items():
                param.mul_(self.masks[name])


def nonzero_masks(model: nn.Module, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """Keep-masks of the weights that are currently nonzero (what earlier pruning left)."""
    state = model.state_dict()
    return {name: state[name] != 0 for name in names}


class SharedValueHook(TrainHook):
    """Trained quantization (Deep Compression, Han et al. 2016, sec. 3.3) as a gradient edit.

    `labels[name]` gives each weight its cluster (-1: pruned, held at zero). All weights of a
    cluster hold the same value; replacing each weight's gradient by the sum (or mean) of its
    cluster's gradients moves the whole cluster as one centroid. Every optimiser we use acts
    elementwise (SGD, momentum, weight decay, Adam), so equal weights with equal gradients stay
    equal: the number of distinct values never grows.

    `groups` lists tensors whose labels index ONE set of values (a PQ codebook shared by several
    layers): their gradients are pooled across the group, so a shared codeword moves as one.
    """

    def __init__(
        self, labels: dict[str, torch.Tensor], reduce: str = "sum", groups: Sequence[Sequence[str]] = ()
    ) -> None:
        if reduce not in ("sum", "mean"):
            raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
        self.labels, self.reduce = labels, reduce
        self.groups = with_singletons(labels, groups)
        self.params: dict[str, nn.Parameter] = {}

    def prepare(self, model: nn.Module) -> None:
        self.params = parameters_named(model, self.labels)
        self.labels = {name: labels.to(self.params[name].device) for name, labels in self.labels.items()}

    def after_backward(self, model: nn.Module) -> None:
        for group in self.groups:
            params = [self.params[name] for name in group]
            if all(param.grad is None for param in params):
                continue
            grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
            flat = torch.cat([grad.reshape(-1) for grad in grads])
            labels = torch.cat([self.labels[name].reshape(-1) for name in group])
            pooled = shared_gradient(flat, labels, self.reduce).split([grad.numel() for grad in grads])
            for param, grad in zip(params, pooled):
                if param.grad is None:
                    param.grad = grad.reshape(param.shape).clone()
                else:
                    param.grad.copy_(grad.reshape(param.shape))


def with_singletons(labels: dict[str, torch.Tensor], groups: Sequence[Sequence[str]]) -> list[list[str]]:
    """`groups` (disjoint lists of labelled tensors sharing one set of values) plus every other
    labelled tensor as a group of its own."""
    grouped = [name for group in groups for name in group]
    if len(set(grouped)) != len(grouped) or not set(grouped) <= set(labels):
        raise ValueError("groups must be disjoint lists of labelled tensors")
    return [list(group) for group in groups] + [[name] for name in labels if name not in grouped]


def shared_gradient(grad: torch.Tensor, labels: torch.Tensor, reduce: str = "sum") -> torch.Tensor:
    """Each weight's gradient replaced by its cluster's summed (or mean) gradient; label -1 -> 0."""
    flat_grad, flat_labels = grad.reshape(-1), labels.reshape(-1)
    kept = flat_labels >= 0
    k = int(flat_labels.max()) + 1 if kept.any() else 0
    sums = torch.zeros(k, dtype=grad.dtype, device=grad.device).index_add_(0, flat_labels[kept], flat_grad[kept])
    if reduce == "mean":
        sums /= torch.bincount(flat_labels[kept], minlength=k).clamp_min(1).to(grad.dtype)
    out = torch.zeros_like(flat_grad)
    out[kept] = sums[flat_labels[kept]]
    return out.reshape(grad.shape)


def value_labels(weight: torch.Tensor) -> torch.Tensor:
    """Cluster labels of a weight-shared tensor: the index of each weight's distinct value; zeros -> -1."""
    values, labels = torch.unique(weight.detach(), return_inverse=True)
    labels = labels.clone()
    zero = weight == 0
    labels[zero] = -1
    return labels


# ----------------------------------------------------------------------------- PQ codeword fine-tuning


def scalar_labels(encoded: Encoded, d: int) -> torch.Tensor:
    """Per-weight labels of a PQ-coded tensor: codeword c, position j -> c * d + j.

    Weights with equal labels hold the same codeword entry, so `SharedValueHook` trains codewords
    with the assignments fixed (Deep k-Means; Stock et al. 2020, sec. 3.3).
    """
    return per_weight_labels(PQ.labels_of(encoded), d, encoded.shape)


def per_weight_labels(vector_labels: torch.Tensor, d: int, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """Sub-vector labels [n] -> per-weight labels of a tensor of `shape` (codeword c, position j -> c * d + j)."""
    return from_subvectors(vector_labels[:, None] * d + torch.arange(d, device=vector_labels.device), shape)


def per_vector_labels(labels: torch.Tensor, d: int) -> torch.Tensor:
    """Inverse of `per_weight_labels`: the codeword index of each sub-vector."""
    return subvectors(labels, d)[:, 0] // d


def store_shared(
    model: nn.Module, plan: CompressionPlan, names: Sequence[str], labels: dict[str, torch.Tensor], d: int
) -> None:
    """Record the fine-tuned codewords of tensors `names` as the ONE codebook they share (fp16 in the
    file, so the model is reloaded with them), with each tensor's codes as trained: the file stores
    the codebook once, and a later change to these tensors is coded with it again."""
    store_shared_codes(model, plan, {name: per_vector_labels(labels[name], d) for name in names}, d)


def store_shared_codes(model: nn.Module, plan: CompressionPlan, codes: dict[str, torch.Tensor], d: int) -> None:
    """`store_shared` given each tensor's codeword index per sub-vector (`codes`, 1/d the size of
    per-weight labels: what a method keeps for whole blocks of layers)."""
    state = model.state_dict()
    names = list(codes)
    vector_labels = {name: codes[name].long().cpu() for name in names}
    k = max(int(v.max()) + 1 for v in vector_labels.values())
    codewords = torch.zeros(k, d)
    for name in names:  # members of a cluster are identical: any one is its centre
        codewords[vector_labels[name]] = subvectors(state[name], d).float().cpu()
    book = Codebook.fp16(codewords)
    for name in names:
        plan.set_encoded(
            model, name, plan.codec_for(name), PQ.encode_assigned(book, vector_labels[name], tuple(state[name].shape))
        )


class ReassignHook(TrainHook):
    """PQ training with straight-through weights (an extension of Stock et al.'s codeword-only fine-tuning).

    Behind each coded tensor sits a float "latent" copy, started at its quantized values. Every
    step the optimiser's update of each weight (computed on the quantized network: the
    straight-through estimate) moves its latent copy; every codeword is then the mean of the latent
    sub-vectors assigned to it, and every `every` steps each latent sub-vector is re-assigned to its
    nearest codeword. The network always holds the codewords, so the number of distinct sub-vectors
    never exceeds k, but, unlike codeword-only fine-tuning, a sub-vector can change codeword when the
    loss pulls its weights towards another one. `groups` lists tensors sharing one codebook.
    """

    def __init__(
        self, labels: dict[str, torch.Tensor], d: dict[str, int], every: int, groups: Sequence[Sequence[str]] = ()
    ) -> None:
        if every < 1:
            raise ValueError(f"re-assignment interval must be >= 1 step, got {every}")
        self.groups = with_singletons(labels, groups)
        self.d, self.every = d, every
        self.vector_labels = {name: per_vector_labels(labels[name], d[name]) for name in labels}
        self.latent: dict[str, torch.Tensor] = {}
        self.books: list[torch.Tensor] = []
        self.params: dict[str, nn.Parameter] = {}

    def prepare(self, model: nn.Module) -> None:
        self.params = parameters_named(model, self.vector_labels)
        self.vector_labels = {name: labels.to(self.params[name].device) for name, labels in self.vector_labels.items()}
        self.latent = {name: param.detach().clone() for name, param in self.params.items()}
        self.books = [
            self._codebook(group, torch.zeros(self._k(group), self.d[group[0]], device=self.latent[group[0]].device))
            for group in self.groups
        ]

    def after_step(self, model: nn.Module, step: int) -> None:
        with torch.no_grad():
            for index, group in enumerate(self.groups):
                for name in group:  # the optimiser's move of each weight goes to its latent copy
                    self.latent[name] += self.params[name] - self._written(name, self.books[index])
                if (step + 1) % self.every == 0:
                    for name in group:  # clustering runs on CPU (netshrink.cluster)
                        points = subvectors(self.latent[name], self.d[name]).cpu()
                        nearest = assign_nearest(points, self.books[index].cpu())[0]
                        self.vector_labels[name] = nearest.to(self.latent[name].device)
                self.books[index] = self._codebook(group, self.books[index])
                for name in group:
                    self.params[name].copy_(self._written(name, self.books[index]))

    def labels(self) -> dict[str, torch.Tensor]:
        """Per-weight labels in `scalar_labels` form, as they stand now."""
        return {
            name: per_weight_labels(labels, self.d[name], self.params[name].shape)
            for name, labels in self.vector_labels.items()
        }

    def _k(self, group: list[str]) -> int:
        return max(int(self.vector_labels[name].max()) + 1 for name in group)

    def _written(self, name: str, book: torch.Tensor) -> torch.Tensor:
        return from_subvectors(book[self.vector_labels[name]], self.params[name].shape)

    def _codebook(self, group: list[str], previous: torch.Tensor) -> torch.Tensor:
        """Each codeword the mean of its latent sub-vectors (a codeword nobody uses keeps its value)."""
        d = self.d[group[0]]
        points = torch.cat([subvectors(self.latent[name], d) for name in group])
        labels = torch.cat([self.vector_labels[name] for name in group])
        sums = torch.zeros_like(previous).index_add_(0, labels, points)
        counts = torch.bincount(labels, minlength=previous.shape[0]).unsqueeze(1)
        return torch.where(counts > 0, sums / counts.clamp_min(1), previous)
