"""Layer inputs on calibration data: the per-channel moments and the im2col patch moments are what a
direct computation gives, and one pass machinery serves both (eval mode, early stop, mode restored)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from netshrink.calibration.layer_inputs import InputTap, channel_moments, patch_moments, run_passes
from netshrink.zoo.efficientnet_lite import SameConv2d


def unfold_rows(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """Every im2col row [images * positions, C * kh * kw] of an (already padded) input, in float64."""
    cols = F.unfold(x, conv.kernel_size, dilation=conv.dilation, stride=conv.stride)  # [n, C*kh*kw, L]
    return cols.permute(0, 2, 1).reshape(-1, cols.shape[1]).double()


def unfold_grams(conv: nn.Conv2d, x: torch.Tensor, d: int) -> torch.Tensor:
    rows = unfold_rows(conv, x)
    rows = rows.reshape(-1, rows.shape[1] // d, d)
    return torch.einsum("rbi,rbj->bij", rows, rows) / rows.shape[0]


def test_channel_moments_match_a_direct_computation(tiny_net):
    x = torch.randn(10, 3, 8, 8)
    moments = channel_moments(tiny_net, ["conv", "fc"], [x[:4], x[4:]])
    torch.testing.assert_close(moments["conv"].square.float(), x.pow(2).mean((0, 2, 3)))
    torch.testing.assert_close(moments["conv"].mean.float(), x.mean((0, 2, 3)))
    hidden = torch.relu(tiny_net.bn(tiny_net.conv(x))).flatten(1)
    torch.testing.assert_close(moments["fc"].variance.float(), hidden.var(0, unbiased=False), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "conv, pad, d",
    [
        (nn.Conv2d(4, 6, 3, stride=2, padding=1), (1, 1, 1, 1), 9),
        (nn.Conv2d(4, 4, 3, padding=1, groups=4), (1, 1, 1, 1), 9),  # depthwise: one block per channel
        (SameConv2d(4, 6, 3, stride=2), (0, 1, 0, 1), 18),  # TF "SAME": padded inside forward
    ],
)
def test_patch_moments_are_the_im2col_moments(conv, pad, d):
    x = torch.randn(3, 4, 10, 10)
    moments = patch_moments(conv, conv, d, [x], positions=10**6)
    torch.testing.assert_close(moments.gram, unfold_grams(conv, F.pad(x, pad), d), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(moments.mean, unfold_rows(conv, F.pad(x, pad)).mean(0), rtol=1e-5, atol=1e-6)


def test_patch_moments_of_a_linear_layer_are_its_feature_moments(tiny_net):
    x = torch.randn(6, 3, 8, 8)
    moments = patch_moments(tiny_net, tiny_net.fc, 4, [x[:2], x[2:]])
    features = torch.relu(tiny_net.bn(tiny_net.conv(x))).flatten(1).double()
    blocks = features.reshape(6, -1, 4)
    torch.testing.assert_close(moments.gram, torch.einsum("rbi,rbj->bij", blocks, blocks) / 6, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(moments.mean, features.mean(0), rtol=1e-5, atol=1e-6)


def test_patch_moments_of_a_layer_never_called_say_so(tiny_net):
    with pytest.raises(RuntimeError, match="never reached"):
        patch_moments(tiny_net, nn.Linear(3, 3), 3, [torch.rand(2, 3, 8, 8)])


class Recorder(InputTap):
    def __init__(self, every_call: bool) -> None:
        self.every_call, self.shapes = every_call, []

    def add(self, x: torch.Tensor) -> None:
        self.shapes.append(tuple(x.shape))


class Twice(nn.Module):
    """One layer called twice per pass, then a second layer: which calls does a tap see?"""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)
        self.b_calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(self.a(x[:, :4]) + x[:, 4:])
        self.b_calls += 1
        return self.b(y)


def test_passes_stop_once_every_first_call_tap_is_served_and_restore_the_mode():
    model = Twice().train()
    first = Recorder(every_call=False)
    run_passes(model, [(model.a, first)], [torch.rand(2, 8), torch.rand(3, 8)])
    assert first.shapes == [(2, 4), (3, 4)]  # the first call of each pass only
    assert model.b_calls == 0 and model.training  # stopped before `b`; train mode back


def test_a_tap_of_every_call_keeps_the_pass_running():
    model = Twice().eval()
    first, every = Recorder(every_call=False), Recorder(every_call=True)
    run_passes(model, [(model.a, first), (model.a, every)], [torch.rand(2, 8)])
    assert first.shapes == [(2, 4)] and every.shapes == [(2, 4), (2, 4)] and model.b_calls == 1


def test_a_convolution_tapped_twice_gets_its_own_forward_back():
    conv = nn.Conv2d(2, 2, 3)
    outer, inner = Recorder(every_call=False), Recorder(every_call=True)
    outer.conv_input = inner.conv_input = True
    run_passes(conv, [(conv, outer), (conv, inner)], [torch.rand(1, 2, 5, 5)])
    assert outer.shapes == inner.shapes == [(1, 2, 5, 5)]
    assert "_conv_forward" not in vars(conv)
