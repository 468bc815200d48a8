"""Bias correction (Nagel et al. 2019): after any weight change the layer's mean output is back where
it was, through its bias or the running mean of the BatchNorm after it, with the input mean given per
channel or per im2col entry."""

from __future__ import annotations

import copy

import torch
from torch import nn

from netshrink.calibration.batchnorm import following_batchnorms
from netshrink.calibration.bias_correction import correct_bias
from netshrink.calibration.layer_inputs import channel_moments, patch_moments


def shifted(conv: nn.Conv2d) -> torch.Tensor:
    """Give `conv` a systematic weight error, as a coarse palette makes; returns the original weight."""
    original = conv.weight.detach().clone()
    with torch.no_grad():
        conv.weight.add_(0.05)
    return original


def test_the_running_mean_absorbs_the_shift_of_a_layer_without_bias(tiny_net):
    """The interior pixels (which see every input) get the original mean output back."""
    x = torch.rand(32, 3, 8, 8) + 1.0  # inputs far from zero mean
    tiny_net.conv.bias = None  # so the correction goes into the BatchNorm's running mean
    reference = tiny_net.bn(tiny_net.conv(x))[..., 1:-1, 1:-1].mean((0, 2, 3))
    original = shifted(tiny_net.conv)
    moments = channel_moments(tiny_net, ["conv"], [x])
    before = tiny_net.bn(tiny_net.conv(x))[..., 1:-1, 1:-1].mean((0, 2, 3))
    assert correct_bias(tiny_net.conv, original, moments["conv"].mean, following_batchnorms(tiny_net)["conv"])
    after = tiny_net.bn(tiny_net.conv(x))[..., 1:-1, 1:-1].mean((0, 2, 3))
    assert (before - reference).abs().max() > 0.5
    torch.testing.assert_close(after, reference, atol=0.02, rtol=0)


def test_the_bias_absorbs_the_exact_shift_with_the_patch_mean():
    """With the im2col mean (border zeros counted) the mean over all output pixels is restored."""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1, groups=2)
    x = torch.rand(8, 4, 6, 6) + 0.5
    reference = conv(x).mean((0, 2, 3))
    original = shifted(conv)
    assert correct_bias(conv, original, patch_moments(conv, conv, 9, [x], positions=10**6).mean)
    torch.testing.assert_close(conv(x).mean((0, 2, 3)), reference, atol=1e-5, rtol=0)


def test_a_channel_mean_counts_as_the_same_mean_at_every_kernel_position():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, groups=2)
    x = torch.rand(4, 4, 1, 1).expand(4, 4, 7, 7)  # flat images: every patch entry has its channel's mean
    reference = conv(x).mean((0, 2, 3))
    by_channel, by_patch = copy.deepcopy(conv), copy.deepcopy(conv)
    original = shifted(by_channel)
    shifted(by_patch)
    channel_mean = x.double().mean((0, 2, 3))
    correct_bias(by_channel, original, channel_mean)
    correct_bias(by_patch, original, channel_mean.repeat_interleave(9))
    assert torch.equal(by_channel.bias, by_patch.bias)
    torch.testing.assert_close(by_channel(x).mean((0, 2, 3)), reference, atol=1e-5, rtol=0)


def test_nowhere_to_put_the_shift_is_reported():
    linear = nn.Linear(3, 2, bias=False)
    original = linear.weight.detach().clone()
    with torch.no_grad():
        linear.weight.add_(0.1)
    assert not correct_bias(linear, original, torch.ones(3))
