"""Knowledge distillation as a loss of the one training loop (`train.fit(loss_fn=...)`).

The uncompressed network is the teacher; the compressed one learns to reproduce its outputs on the
training inputs, so no labels are needed and the student learns the teacher's whole output
distribution (Hinton et al. 2015), which is what Stock et al. 2020 (sec. 3.3) fine-tune with:

* `kl`: KL(softmax(t / T) || softmax(s / T)) * T^2 on logits, for classifiers;
* `mse`: mean squared error between outputs, for embedding models (sentence vectors);
* `ce`: plain cross-entropy on the labels, no teacher (the ablation without distillation).

Models are called through `train.call_model`, so image tensors and text batches (tuples or dicts
of tensors) work alike.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F

from netshrink.devices import model_device
from netshrink.errors import NetshrinkError
from netshrink.training.loop import call_model

DistillKind = Literal["kl", "mse", "ce"]
DISTILL_KINDS = ("kl", "mse", "ce")


def frozen_teacher(model: nn.Module) -> nn.Module:
    """A copy of `model` in eval mode with gradients off: the teacher for the rest of a step."""
    teacher = copy.deepcopy(model).eval()
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher


class DistillationLoss:
    """loss_fn(student, x, y) for `train.fit`: the student's outputs against the teacher's on x."""

    def __init__(self, teacher: nn.Module | None, kind: DistillKind = "kl", temperature: float = 1.0) -> None:
        if kind not in DISTILL_KINDS:
            raise NetshrinkError(f"distill must be one of {', '.join(DISTILL_KINDS)}, got {kind!r}")
        if kind != "ce" and teacher is None:
            raise NetshrinkError(f"distill: {kind} needs a teacher model")
        if temperature <= 0:
            raise NetshrinkError(f"distillation temperature must be > 0, got {temperature}")
        self.teacher, self.kind, self.temperature = teacher, kind, temperature

    def __call__(self, student: nn.Module, x: Any, y: torch.Tensor) -> torch.Tensor:
        outputs = _tensor_output(call_model(student, x))
        if self.kind == "ce":
            return F.cross_entropy(outputs, y)
        with torch.no_grad():  # the teacher computes where the student does (a no-op once it is there)
            target = _tensor_output(call_model(self.teacher.to(model_device(student)), x))
        if self.kind == "mse":
            return F.mse_loss(outputs, target)
        if outputs.dim() > 2:  # a sequence model's logits [batch, positions, vocabulary]: per position
            outputs, target = outputs.flatten(0, -2), target.flatten(0, -2)
        t = self.temperature
        return F.kl_div(
            F.log_softmax(outputs / t, -1), F.log_softmax(target / t, -1), log_target=True, reduction="batchmean"
        ) * (t * t)


def _tensor_output(outputs: Any) -> torch.Tensor:
    if not isinstance(outputs, torch.Tensor):
        raise NetshrinkError(
            f"distillation needs a model that returns one tensor, got {type(outputs).__name__}; "
            "wrap the model so forward returns its logits or embedding"
        )
    return outputs
