"""Fine-tune the shared values of already-coded layers, their assignments fixed, against the teacher.

After `palette` (or `pq`) has coded a layer, which weights share a value is decided; the values
themselves can still move. Trained through the network against the uncompressed network's outputs,
they absorb errors that a layer-by-layer fit cannot see: how a block's layers interact through
attention, the MLP's gate and the norms, and the error the earlier layers pass on. This is the
codebook fine-tuning of "And the Bit Goes Down" (Stock et al. 2020, sec. 3.3) and of AQLM
(Egiazarian et al. 2024, sec. 3.4), applied to whatever palettes or codebooks the recipe's earlier
steps chose. Every parameter that is not coded (norms, biases) trains with them.

When a model is compressed block by block (`netshrink compress --stream`), the network this step
sees is one block, its data the block's calibration inputs (what the already-compressed blocks
produce) and its teacher the same block before compression: the block's output error is what is
minimised (`distill: mse`, the default). On a whole model, `distill: kl` matches next-token (or
class) distributions instead.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from netshrink.errors import DATA_HINT, DataError, RecipeError
from netshrink.format.codecs import PQ, Palette
from netshrink.plan import CompressionPlan
from netshrink.step import StepContext, register_step
from netshrink.training.loop import fit
from netshrink.training.retraining import (
    RetrainingStep,
    RetrainSettings,
    SharedValueHook,
    scalar_labels,
    store_shared_codes,
)


@register_step("tune")
@dataclass(frozen=True)
class TuneSharedValues(RetrainingStep):
    """Adam on the shared values of the selected palette- or pq-coded layers (labels fixed) and on
    every uncoded parameter, against the teacher's outputs (`distill`: mse or kl)."""

    train: RetrainSettings = RetrainSettings(
        epochs=4.0, lr=1e-4, batch_size=4, optimizer="adam", weight_decay=0.0, distill="mse"
    )

    def validate(self) -> None:
        if self.train.distill == "ce":
            raise ValueError("tune learns from the uncompressed network: distill must be mse or kl")

    @property
    def needs_data(self) -> bool:
        return True

    def apply(self, model: nn.Module, plan: CompressionPlan, ctx: StepContext) -> None:
        labels = {name: coded_labels(plan, name) for name in self.weight_names(model)}
        self.train.freeze_teacher(model, ctx)
        frozen = [p for p in model.parameters() if p.is_floating_point() and not p.requires_grad]
        for param in frozen:  # a block read from a checkpoint holds its weights without gradients
            param.requires_grad_(True)
        try:
            with torch.enable_grad():  # also when called under no_grad
                self.tune(model, ctx, labels)
        finally:
            for param in frozen:
                param.requires_grad_(False)
        for name in labels:
            store_tuned(model, plan, name)

    def tune(self, model: nn.Module, ctx: StepContext, labels: dict[str, torch.Tensor]) -> None:
        """The training, in eval mode: the teacher runs in eval mode, so BatchNorm statistics stay
        as they are and dropout stays off; only the values move."""
        if ctx.data is None:
            raise DataError(f"tune trains the shared values on data {DATA_HINT}")
        config = replace(self.train.train_config(ctx), eval_mode=True)
        loss = self.train.loss_for(model, ctx)
        fit(model, ctx.data, config, [SharedValueHook(labels)], progress=ctx.progress, desc="tune", loss_fn=loss)

    def weight_names(self, model: nn.Module) -> list[str]:
        return [f"{name}.weight" for name, _ in self.layers(model)]


def coded_labels(plan: CompressionPlan, name: str) -> torch.Tensor:
    """Per-weight labels of a palette- or pq-coded tensor: weights with equal labels share a value
    (palette b, entry j -> b * k + j; pq codeword c, position i -> c * d + i)."""
    entry = plan.entries.get(name)
    if entry is not None and isinstance(entry.codec, Palette):
        codebook, labels = Palette.codebook_and_labels(entry.encoded)
        books, k = codebook.shape
        return (labels + torch.arange(books)[:, None] * k).reshape(entry.encoded.shape)
    if entry is not None and isinstance(entry.codec, PQ):
        return scalar_labels(entry.encoded, int(entry.encoded.params["d"]))
    what = "not coded" if entry is None else f"coded {entry.codec.describe()}"
    raise RecipeError(f"tune trains the shared values of palette- or pq-coded layers, but {name} is {what}")


def store_tuned(model: nn.Module, plan: CompressionPlan, name: str) -> None:
    """Store the tuned values with the assignment unchanged (weights of a cluster are equal: any one
    is its value; a value no weight uses keeps its old one)."""
    entry = plan.entries[name]
    if isinstance(entry.codec, PQ):
        store_shared_codes(model, plan, {name: PQ.labels_of(entry.encoded)}, int(entry.encoded.params["d"]))
        return
    weight = model.state_dict()[name].detach().float().cpu()
    codebook, labels = Palette.codebook_and_labels(entry.encoded)
    values = codebook.float().clone()
    values.scatter_(1, labels, weight.reshape(labels.shape))
    plan.set_encoded(model, name, entry.codec, entry.codec.encode_assigned(values, labels, tuple(weight.shape)))
