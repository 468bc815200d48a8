"""Distillation loss and the batch-call helper shared by training, calibration and evaluation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from netshrink.errors import NetshrinkError
from netshrink.training.distill import DistillationLoss, frozen_teacher
from netshrink.training.loop import call_model


class TwoInputs(nn.Module):
    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (ids * mask).float().sum(1, keepdim=True)


class Pair(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x


def test_call_model_takes_tensors_tuples_and_dicts():
    ids, mask = torch.tensor([[1, 2, 3]]), torch.tensor([[1, 1, 0]])
    model = TwoInputs()
    assert call_model(model, (ids, mask)).item() == 3
    assert call_model(model, {"ids": ids, "mask": mask}).item() == 3
    assert call_model(nn.Identity(), ids) is ids


def test_kl_and_mse_are_zero_for_the_teacher_itself_and_positive_otherwise():
    torch.manual_seed(0)
    student = nn.Linear(5, 4)
    teacher = frozen_teacher(student)
    x, y = torch.randn(8, 5), torch.randint(0, 4, (8,))
    for kind in ("kl", "mse"):
        loss = DistillationLoss(teacher, kind, temperature=2.0)
        assert float(loss(student, x, y)) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        student.weight.add_(0.5 * torch.randn(student.weight.shape))  # not a per-row constant: softmax changes
    for kind in ("kl", "mse"):
        assert float(DistillationLoss(teacher, kind)(student, x, y)) > 1e-3
    assert not any(p.requires_grad for p in teacher.parameters())


def test_kl_gradient_reaches_only_the_student():
    torch.manual_seed(1)
    student, teacher = nn.Linear(3, 2), nn.Linear(3, 2)
    DistillationLoss(teacher, "kl")(student, torch.randn(4, 3), None).backward()
    assert student.weight.grad is not None and teacher.weight.grad is None


def test_bad_distillation_settings():
    with pytest.raises(NetshrinkError, match="needs a teacher"):
        DistillationLoss(None, "kl")
    with pytest.raises(NetshrinkError, match="distill must be one of"):
        DistillationLoss(nn.Linear(1, 1), "l1")
    with pytest.raises(NetshrinkError, match="returns one tensor"):
        DistillationLoss(Pair(), "mse")(Pair(), torch.ones(2), None)
