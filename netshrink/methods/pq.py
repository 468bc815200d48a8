"""Output-aware product quantization with distillation ("And the Bit Goes Down", Stock et al. 2020).

Each selected layer's weight rows are cut into sub-vectors of d (codecs/pq.py) sharing one
codebook of k fp16 codewords. With `objective: output` the codebook minimises the error of the
layer's OUTPUT on calibration inputs, sum_b (w_b - c)^T G_b (w_b - c) with G_b the uncentred second
moment of the inputs of block b (calibration/layer_inputs.py): k-means in that metric, closed-form
codeword update (cluster/kmeans.py: `kmeans_metric`). With `objective: weights` it is plain PQ
(Euclidean k-means of the weights, the ablation). Layers are quantized one at a time in forward
order; each layer's inputs come from the network whose earlier layers are already quantized, so a
layer compensates the errors before it (Stock et al., sec. 3.2).

Fine-tuning (sec. 3.3): after each stage (`stage_epochs`, a stage = layers sharing the first
`stage_depth` parts of their names, e.g. `layer2`) and at the end (`epochs`), the codewords
(assignments fixed, `SharedValueHook`) and every other parameter (biases, norms, layers not yet
quantized) are trained to reproduce the uncompressed network's outputs (`distill: kl` on logits,
`mse` on embeddings, `ce` = labels only) through the one training loop. BatchNorm running
statistics are buffers of the model, so the file stores (and `netshrink.load` restores) them.
With `recalibrate_bn` (default) they are re-estimated on the calibration inputs after each stage
is quantized, before the stage's fine-tuning and before later layers see those inputs.

`share_codebook`: the layers of a stage with the same d share ONE codebook (of the stage's first
layer's k), stored once in the file. On a small network the per-layer codebooks are a third of the
file (ResNet-20 at 20x); one codebook per stage lets every layer use 256 codewords for fewer bytes.
The shared codebook is learnt from all the stage's sub-vectors, each in its own layer's metric;
then the layers are assigned to it one at a time in forward order, each on inputs measured after
the earlier ones were quantized, and fine-tuning moves a shared codeword by the gradients of all
its users.

Sub-vector length: `conv_d` for k x k convolutions (9 = one 3x3 kernel, 18 = two neighbouring
in-channel kernels), `pointwise_d` for 1x1 convolutions and Linear layers, `depthwise_d` (0: the
whole kernel) for depthwise convolutions, or `d` for every layer; `d` and `k` can differ per layer
(`overrides: {"layer1.*": {d: 3}}`). Embedding tables have no input activations to weigh by: they
are clustered by weight.

On several processes (netshrink/parallel/): without calibration the codebooks of a stage are learnt
one per rank; with it, layers are quantized in forward order (each on the inputs the earlier ones
produce, `feedback` included) identically on every rank, sharing only the metric problems of a
shared codebook. The file is the same for any number of processes; fine-tuning is data-parallel.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn
from tqdm import tqdm

from netshrink.calibration.batchnorm import batchnorm_scales, recalibrate_batchnorms
from netshrink.calibration.layer_inputs import (
    calibration_batches,
    forward_order,
    groups_of,
    patch_moments,
)
from netshrink.calibration.output_metric import (
    diagonal_blocks,
    joined_problems,
    metric_encoding,
    metric_points,
    with_feedback,
)
from netshrink.cluster import kmeans, kmeans_metric
from netshrink.errors import DATA_HINT, DataError, RecipeError
from netshrink.format.codecs import Codebook
from netshrink.format.codecs.pq import PQ, row_length, subvectors
from netshrink.memory import return_freed_memory
from netshrink.parallel.plans import encode_apart
from netshrink.parallel.runtime import share_work
from netshrink.plan import CompressionPlan
from netshrink.select import MATRIX_LAYERS
from netshrink.step import StepContext, register_step
from netshrink.training.retraining import (
    ReassignHook,
    RetrainingStep,
    RetrainSettings,
    SharedValueHook,
    per_vector_labels,
    per_weight_labels,
    store_shared_codes,
)

log = logging.getLogger(__name__)

MAX_K = 256


@register_step("pq")
@dataclass(frozen=True)
class OutputAwarePQ(RetrainingStep):
    """PQ codebooks per layer (output-aware or by weight), then distillation fine-tuning of the codewords.

    Fine-tuning (`epochs` at the end, default 1; `lr` 1e-3; `distill` kl; ...: `RetrainSettings`,
    flat in a recipe). Per layer: `d`, `k`, in `overrides`.
    """

    layer_types: ClassVar[tuple[type[nn.Module], ...]] = (*MATRIX_LAYERS, nn.Embedding)
    per_layer_fields: ClassVar[tuple[str, ...]] = ("d", "k")

    train: RetrainSettings = RetrainSettings(epochs=1.0, lr=1e-3, distill="kl")
    conv_d: int = 9
    pointwise_d: int = 4
    depthwise_d: int = 0
    #: One sub-vector length for every layer, in place of conv_d / pointwise_d / depthwise_d.
    d: int | None = None
    k: int = 256
    objective: Literal["output", "weights"] = "output"
    covariance: Literal["block", "pooled"] = "block"
    calibration: int = 1024
    calibration_batch: int = 64
    positions: int = 256
    ridge: float = 1e-4
    weigh_by_norm: bool = False
    kmeans_iters: int = 20
    feedback: bool = False
    recalibrate_bn: bool = True
    share_codebook: bool = False
    reassign_every: int = 0
    stage_epochs: float = 0.0
    stage_depth: int = 1
    reduce: Literal["sum", "mean"] = "sum"

    def validate(self) -> None:
        if isinstance(self.k, bool) or not 1 <= self.k <= MAX_K:
            raise ValueError(f"k must be in [1, {MAX_K}] (indices are at most 8 bits), got {self.k}")
        if min(self.conv_d, self.pointwise_d, self.d or 1) < 1 or self.depthwise_d < 0:
            raise ValueError("conv_d, pointwise_d and d must be >= 1, depthwise_d >= 0 (0: whole kernel)")
        if min(self.calibration, self.calibration_batch, self.positions, self.stage_depth) < 1:
            raise ValueError("calibration, calibration_batch, positions and stage_depth must be >= 1")
        if self.stage_epochs < 0 or self.ridge < 0 or self.kmeans_iters < 0:
            raise ValueError("stage_epochs, ridge and kmeans_iters must be >= 0")
        if self.reassign_every < 0:
            raise ValueError("reassign_every must be >= 0 steps (0: codewords only, as Stock et al.)")
        if self.share_codebook and self.feedback:
            raise ValueError("share_codebook and feedback cannot be combined (feedback re-assigns each layer alone)")

    @property
    def needs_data(self) -> bool:
        """Calibration (objective: output) and fine-tuning need the training split; plain PQ does not."""
        return self.objective == "output" or self.train.epochs > 0 or self.stage_epochs > 0

    # ------------------------------------------------------------------ settings per layer

    def d_for(self, name: str, module: nn.Module) -> int:
        """The sub-vector length of layer `name`; it must divide the layer's rows."""
        d = self.for_layer(name).d or self.default_d(module)
        length = row_length(module.weight.shape)
        if length % d:
            divisors = [v for v in range(1, min(length, 64) + 1) if length % v == 0]
            raise RecipeError(
                f"step pq: d={d} does not divide the row length {length} of layer {name!r} "
                f"(weight {tuple(module.weight.shape)}); set its d (overrides) to one of {divisors}"
            )
        return d

    def default_d(self, module: nn.Module) -> int:
        """The length by layer kind: depthwise_d (0: the whole kernel), conv_d or pointwise_d."""
        if isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels:
            return self.depthwise_d or row_length(module.weight.shape)
        if isinstance(module, nn.Conv2d) and module.kernel_size != (1, 1):
            return self.conv_d
        return self.pointwise_d

    # ------------------------------------------------------------------ the step

    def apply(self, model: nn.Module, plan: CompressionPlan, ctx: StepContext) -> None:
        layers = dict(self.layers(model))
        settings = {name: (self.d_for(name, module), self.for_layer(name).k) for name, module in layers.items()}
        if self.needs_data and ctx.data is None:
            raise DataError(
                f"step pq needs training data for calibration and fine-tuning {DATA_HINT}; "
                "or use objective: weights with epochs: 0"
            )
        if self.train.epochs or self.stage_epochs:
            self.train.freeze_teacher(model, ctx)  # before any layer is quantized
        samples = (
            calibration_batches(ctx.data, self.calibration, self.calibration_batch, ctx.seed, "pq")
            if ctx.data is not None and (self.objective == "output" or self.recalibrate_bn)
            else None
        )
        calibration = samples if self.objective == "output" else None
        order = forward_order(model, layers, calibration[0]) if calibration else list(layers)
        row_scales: dict[str, torch.Tensor] = {}
        if calibration and self.weigh_by_norm:  # an error in row o reaches the next layer scaled by g_o / sigma_o
            row_scales = {  # on CPU, with the sub-vectors the clustering takes
                name: scale.double().pow(2).clamp_min(1e-12).cpu() for name, scale in batchnorm_scales(model).items()
            }
        labels: dict[str, torch.Tensor] = {}  # per sub-vector: 1/d of per-weight labels, whole blocks of them
        stages = self._stages(order)
        books_of = [self._codebook_groups(stage, settings) for stage in stages]
        books = [book for stage_books in books_of for book in stage_books]
        shared = [[f"{name}.weight" for name in book] for book in books if len(book) > 1]
        d_of = {f"{name}.weight": d for name, (d, _) in settings.items()}
        with tqdm(total=len(order), desc=f"pq ({self.objective})", unit="layer", disable=not ctx.progress) as bar:

            def quantize(target: CompressionPlan, book: list[str]) -> dict[str, torch.Tensor]:
                learn = self._quantize if len(book) == 1 else self._quantize_shared
                return learn(model, target, book, layers, *settings[book[0]], calibration, row_scales, ctx.seed)

            for index, (stage, stage_books) in enumerate(zip(stages, books_of)):
                labels.update(self._quantize_stage(model, plan, stage_books, quantize, calibration is None))
                bar.update(len(stage))
                if self.recalibrate_bn and samples:
                    recalibrate_batchnorms(model, samples)
                if self.stage_epochs > 0 and index < len(stages) - 1:
                    self._finetune(model, ctx, labels, shared, d_of, self.stage_epochs, f"distill after {stage[-1]}")
        self._finetune(model, ctx, labels, shared, d_of, self.train.epochs, "distill (global)")
        for book in books:
            store_shared_codes(model, plan, {f"{n}.weight": labels[f"{n}.weight"] for n in book}, settings[book[0]][0])

    def _quantize_stage(
        self, model: nn.Module, plan: CompressionPlan, books: list[list[str]], quantize: Callable, apart: bool
    ) -> dict[str, torch.Tensor]:
        """The codebooks of one stage; their labels per sub-vector. Without calibration a codebook depends
        on its own layers' weights alone: each is learnt on one rank (parallel/plans.py). With
        `objective: output` a layer is measured on the inputs the already-quantized layers before it
        produce: layer by layer, computed identically on every rank (only the metric problems of a
        shared codebook, measured before any of its layers changes, are shared by rank). Either way
        the codes, and the file, are the same for any number of ranks."""
        labels: dict[str, torch.Tensor] = {}
        for book_labels in encode_apart(model, plan, books, quantize) if apart else [quantize(plan, b) for b in books]:
            labels.update(book_labels)
        return labels

    def _stages(self, order: list[str]) -> list[list[str]]:
        """Consecutive layers (in forward order) whose names share the first `stage_depth` parts."""
        stages: list[list[str]] = []
        for name in order:
            key = name.split(".")[: self.stage_depth]
            if stages and stages[-1][0].split(".")[: self.stage_depth] == key:
                stages[-1].append(name)
            else:
                stages.append([name])
        return stages

    def _codebook_groups(self, stage: list[str], settings: dict[str, tuple[int, int]]) -> list[list[str]]:
        """The layers of a stage that share one codebook: with `share_codebook`, those with the same d
        (in forward order); otherwise each layer alone."""
        if not self.share_codebook:
            return [[name] for name in stage]
        books: dict[int, list[str]] = {}
        for name in stage:
            books.setdefault(settings[name][0], []).append(name)
        for book in books.values():
            if len({settings[name][1] for name in book}) > 1:
                raise RecipeError(
                    f"step pq: layers {book} share a codebook (share_codebook) but overrides give "
                    "them different k; give the layers of a stage one k"
                )
        return list(books.values())

    def _quantize(
        self,
        model: nn.Module,
        plan: CompressionPlan,
        names: list[str],
        layers: dict[str, nn.Module],
        d: int,
        k: int,
        calibration: list[Any] | None,
        row_scales: dict[str, torch.Tensor],
        seed: int,
    ) -> dict[str, torch.Tensor]:
        """Give the layer `names[0]` its own PQ codebook and labels (model updated); returns them per sub-vector."""
        name, module = names[0], layers[names[0]]
        weight_name = f"{name}.weight"
        codec = PQ(d=d, k=k, iters=self.kmeans_iters, seed=seed)
        if calibration is None or isinstance(module, nn.Embedding):
            plan.assign(model, weight_name, codec)
        else:
            full = patch_moments(
                model,
                module,
                row_length(module.weight.shape) if self.feedback else d,
                calibration,
                positions=self.positions,
                seed=seed,
            ).gram
            grams = self._metric((diagonal_blocks(full, d) if self.feedback else full).cpu())
            points, weights = metric_points(module.weight.detach().cpu(), d, groups_of(module), row_scales.get(name))
            result = kmeans_metric(
                points,
                min(k, points.shape[0] * points.shape[1]),
                grams.float(),
                iters=self.kmeans_iters,
                seed=seed,
                point_weights=weights,
            )
            encoded = metric_encoding(module, d, Codebook.fp16(result.centroids), grams, guess=result.labels)
            del points, weights, result
            if self.feedback:
                encoded = with_feedback(module, encoded, full)
            plan.set_encoded(model, weight_name, codec, encoded)
        return_freed_memory()  # the layer's temporaries, before the next (larger) layer's
        return {weight_name: PQ.labels_of(plan.entries[weight_name].encoded)}

    def _quantize_shared(
        self,
        model: nn.Module,
        plan: CompressionPlan,
        names: list[str],
        layers: dict[str, nn.Module],
        d: int,
        k: int,
        calibration: list[Any] | None,
        row_scales: dict[str, torch.Tensor],
        seed: int,
    ) -> dict[str, torch.Tensor]:
        """One codebook for the layers `names`: learnt from all their sub-vectors (each in its own
        layer's metric), then each layer assigned to it in forward order (model updated)."""
        codec = PQ(d=d, k=k, iters=self.kmeans_iters, seed=seed)
        by_output = calibration is not None and not any(isinstance(layers[n], nn.Embedding) for n in names)
        if by_output:  # every layer's inputs before any of them is quantized: one layer per rank
            measured = share_work(
                names,
                lambda name: self._metric_problem(model, layers[name], d, calibration, row_scales.get(name), seed),
            )
            problems = [measured[name] for name in names]
            points, grams, weights = joined_problems(problems)
            codebook = kmeans_metric(
                points,
                min(k, points.shape[0] * points.shape[1]),
                grams,
                iters=self.kmeans_iters,
                seed=seed,
                point_weights=weights,
            ).centroids
        else:
            vectors = torch.cat([subvectors(layers[name].weight.detach().float().cpu(), d) for name in names])
            codebook = kmeans(vectors, min(k, vectors.shape[0]), iters=self.kmeans_iters, seed=seed).centroids
        book = Codebook.fp16(codebook)  # one object for all the layers: the file stores it once
        labels = {}
        for index, name in enumerate(names):
            module = layers[name]
            if (
                by_output
            ):  # the inputs of this layer as the quantized earlier layers make them (the first's are unchanged)
                grams = (
                    problems[0][1]
                    if index == 0
                    else self._metric(
                        patch_moments(model, module, d, calibration, positions=self.positions, seed=seed).gram.cpu()
                    )
                )
                encoded = metric_encoding(module, d, book, grams)
            else:
                encoded = codec.encode(module.weight.detach().cpu(), book)
            plan.set_encoded(model, f"{name}.weight", codec, encoded)
            labels[f"{name}.weight"] = PQ.labels_of(encoded)
        return labels

    def _metric_problem(
        self,
        model: nn.Module,
        module: nn.Module,
        d: int,
        calibration: list[Any],
        row_scales: torch.Tensor | None,
        seed: int,
    ):
        """A layer's sub-vectors [m, n, d], their blocks' metrics [m, d, d] and point weights [m, n], on CPU."""
        moments = patch_moments(model, module, d, calibration, positions=self.positions, seed=seed)
        grams = self._metric(moments.gram.cpu())
        points, weights = metric_points(module.weight.detach().cpu(), d, groups_of(module), row_scales)
        return points, grams.float(), weights

    def _metric(self, grams: torch.Tensor) -> torch.Tensor:
        """Pooled or per-block matrices, plus a ridge of `ridge` x their mean eigenvalue: blocks whose
        inputs are always zero (dead channels, padding) still get a positive-definite metric."""
        if self.covariance == "pooled":
            grams = grams.mean(0, keepdim=True).expand_as(grams)
        d = grams.shape[-1]
        scale = float(torch.diagonal(grams, dim1=1, dim2=2).mean()) or 1.0
        return grams + (self.ridge * scale + 1e-12) * torch.eye(d, dtype=grams.dtype)

    def _finetune(
        self,
        model: nn.Module,
        ctx: StepContext,
        labels: dict[str, torch.Tensor],
        shared: list[list[str]],
        d_of: dict[str, int],
        epochs: float,
        desc: str,
    ) -> None:
        """Distillation of the codewords (and of every parameter not coded); with `reassign_every`,
        of latent weights re-assigned to codewords as they move (`ReassignHook`; `labels` updated)."""
        if epochs <= 0:
            return
        in_labels = [book for book in shared if all(name in labels for name in book)]
        weights = {n: per_weight_labels(codes, d_of[n], model.get_parameter(n).shape) for n, codes in labels.items()}
        if not self.reassign_every:
            self.retrain(model, ctx, [SharedValueHook(weights, self.reduce, in_labels)], desc, epochs=epochs)
            return
        hook = ReassignHook(weights, d_of, self.reassign_every, in_labels)
        self.retrain(model, ctx, [hook], desc, epochs=epochs)
        labels.update({name: per_vector_labels(values, d_of[name]) for name, values in hook.labels().items()})
