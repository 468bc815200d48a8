"""The BatchNorm after a layer: found from the graph without data (TF "SAME" convolutions too), only
when it alone consumes the layer's output channels; its scale; re-estimated statistics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from netshrink.calibration.batchnorm import (
    batchnorm_scale,
    batchnorm_scales,
    following_batchnorms,
    recalibrate_batchnorms,
)
from netshrink.errors import ModelError
from netshrink.zoo.efficientnet_lite import SameConv2d


def test_scale_is_gamma_over_sigma_of_the_norm_after_the_layer(tiny_net):
    scales = batchnorm_scales(tiny_net)
    bn = tiny_net.bn
    assert set(scales) == {"conv"}  # fc feeds the output, not a norm
    torch.testing.assert_close(scales["conv"], bn.weight.abs() / torch.sqrt(bn.running_var + bn.eps))
    assert following_batchnorms(tiny_net) == {"conv": bn}


def test_a_norm_without_affine_scales_by_one_over_sigma():
    norm = nn.BatchNorm1d(3, affine=False)
    norm.running_var.fill_(4.0)
    torch.testing.assert_close(batchnorm_scale(norm), torch.full((3,), 1 / (4.0 + norm.eps) ** 0.5))


class Branches(nn.Module):
    """`a` feeds its norm and a skip connection; `b` feeds a norm over other features; `c` a
    SAME-padded conv (its size-dependent padding inside forward) feeds its norm alone."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.bn_a = nn.Linear(4, 4), nn.BatchNorm1d(4)
        self.b, self.bn_b = nn.Linear(4, 6), nn.BatchNorm1d(4)
        self.c, self.bn_c = SameConv2d(1, 2, 3, stride=2), nn.BatchNorm2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        y = self.bn_a(y) + y
        z = self.bn_b(self.b(y)[:, :4])
        return self.bn_c(self.c(z.reshape(-1, 1, 2, 2))).sum() + z.sum()


def test_only_a_norm_that_alone_consumes_the_layers_channels_counts():
    model = Branches()
    assert following_batchnorms(model) == {"c": model.bn_c}


class Untraceable(nn.Module):
    def __init__(self, norm: bool) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.bn = nn.BatchNorm1d(3) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.fc(x)) if x.sum() > 0 else x  # data-dependent Python


def test_a_model_without_norms_is_not_traced_and_an_untraceable_one_is_named():
    assert following_batchnorms(Untraceable(norm=False)) == {}
    with pytest.raises(ModelError, match="cannot trace Untraceable"):
        following_batchnorms(Untraceable(norm=True))


def test_recalibration_gives_the_exact_statistics_and_restores_the_modes(tiny_net):
    batches = [torch.rand(16, 3, 8, 8) for _ in range(3)]
    features = torch.cat([tiny_net.conv(x) for x in batches]).detach()  # what bn sees
    momentum = tiny_net.bn.momentum
    assert recalibrate_batchnorms(tiny_net, batches) == 1
    torch.testing.assert_close(tiny_net.bn.running_mean, features.mean((0, 2, 3)))
    per_batch_var = torch.stack([f.var((0, 2, 3)) for f in features.split(16)])  # unbiased, averaged
    torch.testing.assert_close(tiny_net.bn.running_var, per_batch_var.mean(0))
    assert tiny_net.bn.momentum == momentum and not tiny_net.training and not tiny_net.bn.training
