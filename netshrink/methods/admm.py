"""ADMM pruning and quantization in one framework (Zhang et al. 2018, "A Systematic DNN Weight
Pruning Framework using ADMM"; Ye et al. 2018, "A Unified Framework of DNN Weight Pruning and Weight
Clustering/Quantization Using ADMM").

Both steps solve  min loss(W)  s.t.  W_i in S_i  by splitting W_i = Z_i and training on the augmented
loss  loss(W) + sum_i rho/2 ||W_i - Z_i + U_i||^2  (Zhang et al., eq. 6). Every `admm_interval`
epochs the copies move to the constraint set, Z_i = Proj_S(W_i + U_i) (eq. 8), and the scaled duals
collect the residual, U_i += W_i - Z_i (eq. 9), while rho grows on the schedule rho_init * rho_factor^k
up to rho_max. The weights are thereby pulled gently towards S instead of being cut at once; the
closing hard projection W = Proj_S(W) then costs little, and retraining inside S (pruned weights held
at zero; shared values moved as centroids) recovers the rest.

`admm_prune`: S_i = {at most alpha_i nonzeros}, alpha_i from a per-layer sparsity. `admm_quantize`
(after pruning, as in Ye et al.): S_i = {each surviving weight takes one of 2^b_i levels, zeros stay
zero}, the levels refitted (k-means or a scaled symmetric grid) at every Z update. The results are
stored as Sparse(values) and Sparse(Palette(b_i)): values plus entropy-coded gap positions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import ClassVar, Literal

import torch
from torch import nn

from netshrink.cluster import assign_nearest_1d, fit_centroids_1d
from netshrink.format.codecs import Palette
from netshrink.format.codecs.palette import MAX_BITS
from netshrink.methods.prune import sparse_of
from netshrink.plan import CompressionPlan
from netshrink.step import StepContext, register_step
from netshrink.training.loop import TrainHook
from netshrink.training.retraining import (
    MaskHook,
    RetrainingStep,
    SharedValueHook,
    nonzero_masks,
    parameters_named,
    value_labels,
)

log = logging.getLogger(__name__)
LEVELS = ("kmeans", "uniform")
Projection = Callable[[torch.Tensor], torch.Tensor]


# --- projections onto the constraint sets --------------------------------------------------------


def project_sparse(w: torch.Tensor, keep: int) -> torch.Tensor:
    """The Euclidean projection of `w` onto {v : at most `keep` nonzeros}: its `keep` largest-|w| entries.

    Any v with support K is at distance^2 >= sum_{i not in K} w_i^2 from w, which is least when K
    holds the largest magnitudes (Zhang et al. 2018, sec. 3.2). Ties are broken by position.
    """
    flat = w.detach().reshape(-1)
    keep = max(0, min(int(keep), flat.numel()))
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[torch.argsort(flat.abs(), descending=True, stable=True)[:keep]] = True
    return torch.where(mask, flat, torch.zeros_like(flat)).reshape(w.shape)


def project_levels(w: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """The Euclidean projection of `w` onto {v : v_i in levels where w_i != 0, v_i = 0 where w_i = 0}.

    The set is a product over coordinates, so the projection maps each nonzero weight to its nearest
    level (ties to the lower one) and leaves the pruned zeros in place (Ye et al. 2018, sec. 3.3).
    Projecting twice changes nothing.
    """
    flat = w.detach().reshape(-1)
    nonzero = flat != 0
    out = torch.zeros_like(flat)
    if nonzero.any():
        ordered = torch.sort(levels.detach().reshape(-1).to(flat.dtype)).values
        nearest = assign_nearest_1d(flat[nonzero].cpu(), ordered.cpu())  # the 1-D search runs on CPU
        out[nonzero] = ordered[torch.from_numpy(nearest).to(flat.device)]
    return out.reshape(w.shape)


def kmeans_levels(w: torch.Tensor, bits: int) -> torch.Tensor:
    """2^bits k-means centroids of the nonzero weights (the one 1-D k-means of netshrink.cluster)."""
    values = w.detach()[w != 0].cpu()  # the 1-D k-means runs on CPU
    if values.numel() == 0:
        return torch.zeros(0, dtype=w.dtype, device=w.device)
    centroids = fit_centroids_1d(values, 1 << bits)
    return torch.from_numpy(centroids).to(device=w.device, dtype=w.dtype)


def uniform_levels(w: torch.Tensor, bits: int, iterations: int = 20) -> torch.Tensor:
    """A symmetric grid s * {+-1/2, +-3/2, ..., +-(2^bits - 1)/2} with the scale s fitted to the nonzero weights.

    The scale alternates nearest-level assignment and the least-squares s for that assignment, so
    the squared error never increases (Lloyd's iteration restricted to a scaled grid).
    """
    values = w.detach()[w != 0].double().cpu()  # the 1-D search runs on CPU
    if values.numel() == 0:
        return torch.zeros(0, dtype=w.dtype, device=w.device)
    grid = torch.arange(1 << bits, dtype=torch.float64) - ((1 << bits) - 1) / 2
    scale = float(values.abs().max()) / float(grid.max())
    for _ in range(iterations):
        steps = grid[torch.from_numpy(assign_nearest_1d(values, grid * scale))]
        scale = float((values * steps).sum() / (steps * steps).sum())
    return (grid * scale).to(device=w.device, dtype=w.dtype)


LEVEL_FITTERS: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "kmeans": kmeans_levels,
    "uniform": uniform_levels,
}


def quantize_to_levels(w: torch.Tensor, bits: int, levels: str) -> torch.Tensor:
    """Project `w` onto 2^bits levels refitted to its own nonzero values (Ye et al. 2018: Z update)."""
    return project_levels(w, LEVEL_FITTERS[levels](w, bits))


# --- the ADMM iterations, as a training hook ------------------------------------------------------


class AdmmHook(TrainHook):
    """Adds rho/2 ||W - Z + U||^2 to the loss and updates Z, U and rho every `interval` steps.

    `residuals` holds the primal residual ||W - Z|| (all layers together) at the start and after
    each Z update: it falls towards zero as the weights converge into the constraint set.
    """

    def __init__(
        self, projections: Mapping[str, Projection], interval: int, rho: float, rho_factor: float, rho_max: float
    ) -> None:
        self.projections, self.interval = dict(projections), max(1, int(interval))
        self.rho, self.rho_factor, self.rho_max = rho, rho_factor, rho_max
        self.params: dict[str, nn.Parameter] = {}
        self.z: dict[str, torch.Tensor] = {}
        self.u: dict[str, torch.Tensor] = {}
        self.residuals: list[float] = []

    def prepare(self, model: nn.Module) -> None:
        self.params = parameters_named(model, self.projections)
        with torch.no_grad():
            self.z = {name: self.projections[name](p) for name, p in self.params.items()}
            self.u = {name: torch.zeros_like(p) for name, p in self.params.items()}
        self.residuals = [self.residual()]

    def loss(self, model: nn.Module) -> torch.Tensor:
        # Zhang et al. 2018, eq. 6: the augmented-Lagrangian term of the W sub-problem.
        terms = [(p - self.z[name] + self.u[name]).pow(2).sum() for name, p in self.params.items()]
        return 0.5 * self.rho * torch.stack(terms).sum()

    def after_step(self, model: nn.Module, step: int) -> None:
        if (step + 1) % self.interval == 0:
            self.update()

    def update(self) -> None:
        """One ADMM iteration's Z and U updates (eqs. 8, 9), then the next rho."""
        with torch.no_grad():
            for name, p in self.params.items():
                self.z[name] = self.projections[name](p + self.u[name])
                self.u[name] += p - self.z[name]
            rho = min(self.rho * self.rho_factor, self.rho_max)
            for u in self.u.values():  # U is the dual scaled by 1/rho: rescale it (Boyd et al. 2011, sec. 3.4.1)
                u.mul_(self.rho / rho)
        self.rho = rho
        self.residuals.append(self.residual())
        log.debug("admm: residual %.4g, rho %.3g", self.residuals[-1], self.rho)

    def residual(self) -> float:
        with torch.no_grad():
            return float(torch.stack([(p - self.z[n]).pow(2).sum() for n, p in self.params.items()]).sum().sqrt())


# --- recipe settings shared by both steps --------------------------------------------------------


@dataclass(frozen=True)
class AdmmSchedule:
    """The ADMM phase's penalty schedule and the retraining inside the constraint after it (`retrain_*`;
    `retrain_lr` defaults to the ADMM phase's `lr`)."""

    admm_interval: float = 1.0
    rho_init: float = 1e-3
    rho_factor: float = 1.5
    rho_max: float = 1.0
    retrain_epochs: float = 2.0
    retrain_lr: float | None = None

    def __post_init__(self) -> None:
        if self.admm_interval <= 0:
            raise ValueError(f"admm_interval must be > 0 epochs, got {self.admm_interval}")
        if self.rho_init <= 0 or self.rho_max < self.rho_init:
            raise ValueError(f"rho_init must be > 0 and rho_max >= rho_init, got {self.rho_init} and {self.rho_max}")
        if self.rho_factor < 1:
            raise ValueError(f"rho_factor must be >= 1 (rho grows), got {self.rho_factor}")
        if self.retrain_epochs < 0 or (self.retrain_lr is not None and self.retrain_lr <= 0):
            raise ValueError("retrain_epochs must be >= 0 and retrain_lr > 0")


@dataclass(frozen=True)
class AdmmStep(RetrainingStep):
    """An ADMM step: `train` (`epochs`, `lr`, ...) runs the ADMM phase, `admm` (`AdmmSchedule`) sets
    its penalty and the retraining after it; both written flat in a recipe."""

    admm: AdmmSchedule = AdmmSchedule()

    def run_admm(
        self,
        model: nn.Module,
        ctx: StepContext,
        projections: Mapping[str, Projection],
        desc: str,
        hooks: tuple[TrainHook, ...] = (),
    ) -> AdmmHook:
        """Train with the ADMM penalty (plus `hooks`), then set each weight to its hard projection."""
        # Without data, retrain() below reports it; the interval only needs a placeholder then.
        per_epoch = -(-len(ctx.data) // self.train.batch_size) if ctx.data is not None else 1
        admm = AdmmHook(
            projections,
            round(self.admm.admm_interval * per_epoch),
            self.admm.rho_init,
            self.admm.rho_factor,
            self.admm.rho_max,
        )
        if self.train.epochs > 0 or ctx.data is None:  # zero epochs: a one-shot projection (TrainConfig rejects 0)
            self.retrain(model, ctx, (*hooks, admm), desc)
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, project in projections.items():
                params[name].copy_(project(params[name]))
        log.info("%s: residual ||W - Z|| %s", desc, " -> ".join(f"{r:.3g}" for r in admm.residuals))
        return admm

    def retrain_inside(self, model: nn.Module, ctx: StepContext, hook: TrainHook, desc: str) -> None:
        """Retrain with the constraint held by `hook` (masks or shared values); zero epochs skip it."""
        if self.admm.retrain_epochs == 0:  # TrainConfig rejects epochs=0 before retrain() could skip
            return
        self.retrain(
            model, ctx, (hook,), desc, epochs=self.admm.retrain_epochs, lr=self.admm.retrain_lr or self.train.lr
        )


# --- the two recipe steps ------------------------------------------------------------------------


@register_step("admm_prune")
@dataclass(frozen=True)
class AdmmPrune(AdmmStep):
    """ADMM pruning to a sparsity (per layer: `sparsity` in `overrides`), hard pruning, masked
    retraining; stored sparse."""

    per_layer_fields: ClassVar[tuple[str, ...]] = ("sparsity",)
    sparsity: float = 0.5

    def validate(self) -> None:
        if not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {self.sparsity}")

    def keep_counts(self, model: nn.Module) -> dict[str, int]:
        """alpha_i: how many weights each selected layer keeps."""
        counts = {}
        for name, module in self.layers(model):
            n = module.weight.numel()
            counts[f"{name}.weight"] = n - int(round(self.for_layer(name).sparsity * n))
        return counts

    def apply(self, model: nn.Module, plan: CompressionPlan, ctx: StepContext) -> None:
        keep = self.keep_counts(model)
        self.run_admm(model, ctx, {name: partial(project_sparse, keep=k) for name, k in keep.items()}, "admm prune")
        self.retrain_inside(model, ctx, MaskHook(nonzero_masks(model, list(keep))), "admm prune: masked retrain")
        for name in keep:
            plan.assign(model, name, sparse_of(plan.codec_for(name)))


@register_step("admm_quantize")
@dataclass(frozen=True)
class AdmmQuantize(AdmmStep):
    """ADMM quantization of the surviving weights to 2^bits levels (per layer: `bits`, `levels` in
    `overrides`), then centroid retraining."""

    per_layer_fields: ClassVar[tuple[str, ...]] = ("bits", "levels")
    bits: int = 4
    levels: Literal["kmeans", "uniform"] = "kmeans"
    #: How a centroid's gradient is formed in the retraining (see SharedValueHook); "sum" wants a small retrain_lr.
    reduce: Literal["sum", "mean"] = "sum"

    def validate(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 1 <= self.bits <= MAX_BITS:
            raise ValueError(f"bits must be an integer in 1..{MAX_BITS}, got {self.bits!r}")
        if self.levels not in LEVELS or self.reduce not in ("sum", "mean"):
            raise ValueError(
                f"levels must be one of {', '.join(LEVELS)} and reduce 'sum' or 'mean', "
                f"got {self.levels!r} and {self.reduce!r}"
            )

    def apply(self, model: nn.Module, plan: CompressionPlan, ctx: StepContext) -> None:
        layers = {f"{name}.weight": self.for_layer(name) for name, _ in self.layers(model)}
        projections = {
            name: partial(quantize_to_levels, bits=layer.bits, levels=layer.levels) for name, layer in layers.items()
        }
        # Pruning came first (Ye et al. 2018): its zeros are held while the survivors are quantized.
        self.run_admm(model, ctx, projections, "admm quantize", (MaskHook(nonzero_masks(model, list(layers))),))
        state = model.state_dict()
        labels = {name: value_labels(state[name]) for name in layers}
        self.retrain_inside(model, ctx, SharedValueHook(labels, self.reduce), "admm quantize: centroid retrain")
        for name, layer in layers.items():
            plan.assign(model, name, plan.codec_for(name).with_inner(Palette(layer.bits)))
