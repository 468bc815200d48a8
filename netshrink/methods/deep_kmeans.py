"""Deep k-Means (Wu et al., ICML 2018): re-train with a spectrally relaxed k-means regulariser, then
share weights by vector k-means and fine-tune the shared centres.

Each layer's weight is viewed as the matrix W (s x N) whose N columns are its sub-vectors: for a
conv layer the ROWS of its kernels (s = kernel width; the paper's row-wise sharing, which suits a
row-stationary dataflow, and what the authors' test-time code reshapes to), or whole kernels
(s = kh x kw) with `vector: kernel`; for a Linear layer, runs of `linear_d` consecutive input weights
of one output neuron (our choice: the same cut product quantization uses, see codecs/pq.py).

The k-means objective of the columns is Tr(W^T W) - Tr(F^T W^T W F) with F the normalised cluster
indicator (N x k); relaxing F to any orthonormal N x k matrix (Zha et al. 2001) gives the
regulariser lambda/2 [Tr(W^T W) - Tr(F^T W^T W F)], gradient lambda W (I - F F^T), with F
refreshed every `refresh_steps` steps:
  - `f_source: svd`: F = the top-k right singular vectors of W (the paper's relaxation). When
    k >= rank(W) (always so when k >= s, e.g. 3-wide kernel rows and k = 64 clusters), F spans
    W's whole row space, the term is zero at each refresh and only resists drift between refreshes.
  - `f_source: kmeans` (default): F = the normalised indicator of a k-means clustering of the
    columns (the discrete point the relaxation stands for). Then W F F^T replaces each column by its
    cluster centre and the gradient lambda (W - centres) pulls every sub-vector toward its centre:
    the "harder cluster assignments" the paper is after, for any k.
After re-training the columns are clustered (shared vector k-means, codecs/pq.py), and the
centres are fine-tuned by gradient with the assignments fixed (each centre moves by the sum of its
members' gradients, as in trained quantization).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from netshrink.cluster.kmeans import kmeans
from netshrink.format.codecs.pq import PQ, subvectors
from netshrink.plan import CompressionPlan
from netshrink.step import StepContext, register_step
from netshrink.training.loop import TrainHook
from netshrink.training.retraining import RetrainingStep, SharedValueHook, parameters_named, scalar_labels, store_shared

log = logging.getLogger(__name__)


def vector_length(module: nn.Module, vector: str, linear_d: int) -> int:
    """Sub-vector length s of a layer: kernel width (rows), kh*kw (kernels), or linear_d."""
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return kw if vector == "row" else kh * kw
    return linear_d


@dataclass
class SpectralTerm:
    """One layer's regulariser state: its sub-vector length and the current F."""

    d: int
    k: int
    basis: torch.Tensor | None = None  # svd: F as an N x r orthonormal matrix
    labels: torch.Tensor | None = None  # kmeans: cluster of each column (F is their normalised indicator)

    def refresh(self, weight: torch.Tensor, source: str, seed: int) -> None:
        columns = subvectors(weight.detach(), self.d)  # N x s: row i is column i of W
        if source == "svd":
            _, _, vh = torch.linalg.svd(columns.T, full_matrices=False)  # W = U S Vh, Vh: r x N
            self.basis = vh[: min(self.k, vh.shape[0])].T.contiguous()
        else:
            clusters = kmeans(columns.cpu(), min(self.k, columns.shape[0]), iters=10, seed=seed)  # on CPU
            self.labels = clusters.labels.to(columns.device)

    def value(self, weight: torch.Tensor) -> torch.Tensor:
        """Tr(W^T W) - Tr(F^T W^T W F) = ||W||^2 - ||W F||^2, differentiable in W."""
        columns = subvectors(weight, self.d)
        total = columns.pow(2).sum()
        if self.basis is not None:
            return total - (columns.T @ self.basis).pow(2).sum()
        k = int(self.labels.max()) + 1
        sums = torch.zeros(k, self.d, dtype=columns.dtype, device=columns.device).index_add(0, self.labels, columns)
        counts = torch.bincount(self.labels, minlength=k).clamp_min(1).to(columns.dtype)
        return total - (sums.pow(2).sum(1) / counts).sum()


class SpectralKMeansHook(TrainHook):
    """Adds lambda/2 * sum over layers of the relaxed k-means term; refreshes F every T steps."""

    def __init__(self, terms: dict[str, SpectralTerm], lam: float, refresh_steps: int, source: str, seed: int = 0):
        self.terms, self.lam, self.refresh_steps, self.source, self.seed = terms, lam, refresh_steps, source, seed
        self.params: dict[str, nn.Parameter] = {}

    def prepare(self, model: nn.Module) -> None:
        self.params = parameters_named(model, self.terms)
        self._refresh()

    def _refresh(self) -> None:
        for name, term in self.terms.items():
            term.refresh(self.params[name], self.source, self.seed)

    def loss(self, model: nn.Module) -> torch.Tensor:
        return 0.5 * self.lam * sum(term.value(self.params[name]) for name, term in self.terms.items())

    def after_step(self, model: nn.Module, step: int) -> None:
        if (step + 1) % self.refresh_steps == 0:
            self._refresh()


@register_step("deep_kmeans")
@dataclass(frozen=True)
class DeepKMeans(RetrainingStep):
    """Regularised re-training (`epochs`, `lr`, ...: `RetrainSettings`, flat in a recipe), vector
    k-means sharing, centre fine-tuning (`finetune_epochs`). Per layer: `clusters`, `vector`,
    `linear_d`, in `overrides`."""

    per_layer_fields: ClassVar[tuple[str, ...]] = ("clusters", "vector", "linear_d")
    clusters: int = 64
    vector: Literal["row", "kernel"] = "row"
    linear_d: int = 4
    lam: float = 1e-3
    refresh_steps: int = 200
    f_source: Literal["kmeans", "svd"] = "kmeans"
    finetune_epochs: float = 1.0
    finetune_lr: float = 1e-4

    def validate(self) -> None:
        if self.clusters < 1:
            raise ValueError(f"clusters must be >= 1, got {self.clusters}")
        if self.linear_d < 1 or self.refresh_steps < 1 or self.lam < 0 or self.finetune_epochs < 0:
            raise ValueError("linear_d and refresh_steps must be >= 1, lam and finetune_epochs >= 0")

    def terms(self, model: nn.Module) -> dict[str, SpectralTerm]:
        layers = {name: (module, self.for_layer(name)) for name, module in self.layers(model)}
        return {
            f"{name}.weight": SpectralTerm(vector_length(module, layer.vector, layer.linear_d), layer.clusters)
            for name, (module, layer) in layers.items()
        }

    def apply(self, model: nn.Module, plan: CompressionPlan, ctx: StepContext) -> None:
        terms = self.terms(model)
        hooks = (
            [SpectralKMeansHook(terms, self.lam, self.refresh_steps, self.f_source, ctx.seed)] if self.lam > 0 else []
        )
        self.retrain(model, ctx, hooks, desc="deep k-means re-training" if hooks else "re-training (no regulariser)")
        for name, term in terms.items():
            plan.assign(model, name, PQ(d=term.d, k=term.k, seed=ctx.seed))
        labels = {name: scalar_labels(plan.entries[name].encoded, term.d) for name, term in terms.items()}
        self.retrain(
            model,
            ctx,
            [SharedValueHook(labels)],
            desc="fine-tune shared centres",
            epochs=self.finetune_epochs,
            lr=self.finetune_lr,
        )
        for name, term in terms.items():
            store_shared(model, plan, [name], labels, term.d)
