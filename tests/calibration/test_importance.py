"""Importance-weighted weight sharing: the importances are what the output error says they are, and
weighting lowers the error of the layer's output (after its BatchNorm) at the same palette size."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import netshrink
from netshrink.calibration.importance import weight_importance
from netshrink.errors import NetshrinkError, RecipeError
from netshrink.recipe import parse_recipe


def recipe(*steps):
    return parse_recipe({"name": "test", "steps": list(steps)})


def test_grouped_conv_weights_get_the_moment_of_the_input_they_multiply():
    conv = nn.Conv2d(4, 8, 3, groups=2)  # outputs 0-3 read inputs 0-1, outputs 4-7 read inputs 2-3
    importance = weight_importance(conv, None, torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert importance.shape == conv.weight.shape
    assert torch.equal(importance[0, :, 0, 0], torch.tensor([1.0, 2.0], dtype=torch.float64))
    assert torch.equal(importance[7, :, 2, 2], torch.tensor([3.0, 4.0], dtype=torch.float64))


class ScaledChannels(nn.Module):
    """Half of the filters are 10x smaller and their BatchNorm scales them back up (as training
    often leaves them); one input channel is 10x louder than another. Plain k-means spends its
    centroids on the large filters; the output error says the small ones matter as much."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        with torch.no_grad():
            self.conv.weight[:8] *= 0.1
            self.bn.weight.copy_(torch.tensor([10.0] * 8 + [1.0] * 8))
        self.register_buffer("loudness", torch.tensor([3.0, 0.3, 1.0, 1.0]).reshape(1, 4, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv((x - 0.5) * self.loudness))


@pytest.mark.parametrize("weighting", ["norm", "activation"])
def test_weighting_lowers_the_output_error_at_the_same_size(weighting, tiny_images):
    torch.manual_seed(0)
    net = ScaledChannels().eval()
    images = torch.randint(0, 256, (64, 4, 8, 8), dtype=torch.uint8)
    data = netshrink.data.ArrayDataset(images, torch.zeros(64, dtype=torch.int64))
    x = images.float() / 255
    reference = net(x).detach()
    errors, sizes = {}, {}
    for mode in ("none", weighting):
        compressed = netshrink.compress(
            copy.deepcopy(net), recipe({"palette": {"bits": 3, "weighting": mode}}), data, progress=False
        )
        errors[mode] = float((compressed.model(x).detach() - reference).pow(2).mean())
        sizes[mode] = compressed.plan.encode_all(compressed.model)[0].encoded.nbits()
    assert errors[weighting] < 0.8 * errors["none"]
    assert abs(sizes[weighting] - sizes["none"]) <= 0.1 * sizes["none"]  # same codebook size; index entropy varies


def test_activation_weighting_needs_data_and_says_so(tiny_net):
    steps = recipe({"palette": {"bits": 4, "weighting": "activation"}})
    assert steps.needs_data and not recipe({"palette": {"bits": 4, "weighting": "norm"}}).needs_data
    with pytest.raises(NetshrinkError, match="needs training data"):
        netshrink.compress(tiny_net, steps, progress=False)


def test_weighting_of_pruned_weights_is_refused(tiny_net):
    with pytest.raises(RecipeError, match="needs dense weights"):
        netshrink.compress(
            tiny_net,
            recipe({"prune": {"sparsity": 0.5}}, {"palette": {"bits": 4, "weighting": "norm"}}),
            progress=False,
        )


def test_weighted_file_round_trips_exactly(tiny_net, tmp_path):
    compressed = netshrink.compress(tiny_net, recipe({"palette": {"bits": 4, "weighting": "norm"}}), progress=False)
    compressed.save(tmp_path / "w.nsk")
    loaded = netshrink.load(tmp_path / "w.nsk", model=copy.deepcopy(tiny_net))
    for name, tensor in compressed.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_bad_weighting_names_the_field():
    with pytest.raises(RecipeError, match="weighting"):
        recipe({"palette": {"bits": 4, "weighting": "hessian"}})
