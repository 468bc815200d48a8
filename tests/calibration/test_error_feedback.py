"""Palette assignment with error feedback (methods/error_feedback.py) and the palette step's `compensate`."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import netshrink
from netshrink.calibration.error_feedback import feedback_assign, output_error, refit_values
from netshrink.errors import RecipeError
from netshrink.format.codecs import Palette
from netshrink.recipe import parse_recipe


def correlated_gram(cols: int, seed: int = 0) -> torch.Tensor:
    """Second moment of inputs that share a strong common component (as neighbouring pixels do)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4096, cols, generator=g, dtype=torch.float64) + 2 * torch.randn(
        4096, 1, generator=g, dtype=torch.float64
    )
    return x.T @ x / x.shape[0]


def nearest(weight: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    return (weight[:, :, None] - values[:, None, :]).abs().argmin(2)


def test_with_uncorrelated_inputs_feedback_is_rounding_to_nearest():
    torch.manual_seed(0)
    weight, values = torch.randn(6, 20, dtype=torch.float64), torch.linspace(-2, 2, 8, dtype=torch.float64)[None]
    labels = feedback_assign(weight, values.expand(6, -1), torch.eye(20, dtype=torch.float64) * 3)
    assert torch.equal(labels, nearest(weight, values.expand(6, -1)))


def test_feedback_lowers_the_output_error_for_correlated_inputs():
    torch.manual_seed(0)
    weight, gram = torch.randn(16, 36, dtype=torch.float64), correlated_gram(36)
    values = torch.linspace(-2, 2, 8, dtype=torch.float64)[None].expand(16, -1)
    plain = values.gather(1, nearest(weight, values))
    fed_back = values.gather(1, feedback_assign(weight, values, gram))
    assert output_error(weight, fed_back, gram) < 0.5 * output_error(weight, plain, gram)


@pytest.mark.parametrize("books", [1, 4, 8])
def test_refit_is_the_exact_minimiser_for_fixed_labels(books):
    torch.manual_seed(1)
    rows, cols, k = 8, 12, 4
    weight, gram = torch.randn(rows, cols, dtype=torch.float64), correlated_gram(cols, seed=1)
    values = torch.randn(books, k, dtype=torch.float64)
    labels = torch.randint(0, k, (rows, cols))
    scale = torch.rand(rows, dtype=torch.float64) + 0.5

    def error(v: torch.Tensor) -> float:
        return output_error(weight, v.repeat_interleave(rows // books, 0).gather(1, labels), gram, scale)

    best = refit_values(weight, labels, values, gram, scale)
    assert error(best) < error(values)
    for _ in range(20):  # no nearby set of values does better: it is the minimiser
        assert error(best) <= error(best + 1e-3 * torch.randn_like(best)) + 1e-12


def test_refit_with_identity_inputs_gives_cluster_means_and_keeps_unused_values():
    weight = torch.tensor([[1.0, 2.0, 10.0, 12.0]], dtype=torch.float64)
    labels = torch.tensor([[0, 0, 1, 1]])
    values = torch.tensor([[0.0, 0.0, 7.0]], dtype=torch.float64)
    refit = refit_values(weight, labels, values, torch.eye(4, dtype=torch.float64))
    assert torch.allclose(refit, torch.tensor([[1.5, 11.0, 7.0]], dtype=torch.float64))


def test_palette_stores_a_given_assignment_exactly():
    codec = Palette(3, per_channel=True)
    values = torch.tensor([[0.5, -1.0], [2.0, 0.25]])
    labels = torch.tensor([[0, 1, 1], [1, 1, 0]])
    decoded = Palette.decode(codec.encode_assigned(values, labels, (2, 3)))
    assert torch.equal(decoded, torch.tensor([[0.5, -1.0, -1.0], [0.25, 0.25, 2.0]]))
    with pytest.raises(netshrink.NetshrinkError, match="labels"):
        codec.encode_assigned(values, labels + 5, (2, 3))


class Correlated(nn.Module):
    """Conv -> BN -> ReLU -> Linear on smooth images, whose neighbouring pixels are correlated."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 8 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        smooth = nn.functional.avg_pool2d(x, 3, 1, 1)
        return self.fc(torch.relu(self.bn(self.conv(smooth))).flatten(1))


@pytest.fixture
def smooth_data():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (128, 3, 8, 8), generator=g, dtype=torch.uint8)
    return netshrink.data.ArrayDataset(images, torch.zeros(128, dtype=torch.int64))


def compress(net: nn.Module, data, **palette):
    recipe = parse_recipe({"name": "t", "steps": [{"palette": {"bits": 2, **palette}}]})
    return netshrink.compress(copy.deepcopy(net), recipe, data, progress=False)


def test_compensate_lowers_the_output_error_and_the_file_holds_the_model(smooth_data, tmp_path):
    torch.manual_seed(0)
    net = Correlated().eval()
    x = smooth_data.images.float() / 255
    reference = net(x).detach()
    errors = {}
    for compensate in (False, True):
        result = compress(net, smooth_data, weighting="activation", compensate=compensate)
        errors[compensate] = float((result.model(x).detach() - reference).pow(2).mean())
    assert errors[True] < 0.7 * errors[False]
    result.save(tmp_path / "c.nsk")
    loaded = netshrink.load(tmp_path / "c.nsk", model=copy.deepcopy(net))
    for name, tensor in result.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert all(loaded.state_dict()[n].unique().numel() <= 4 for n in ("conv.weight", "fc.weight"))
    again = compress(net, smooth_data, weighting="activation", compensate=True)
    assert all(torch.equal(again.model.state_dict()[n], t) for n, t in result.model.state_dict().items())


def test_compensate_with_grouped_palettes_stores_one_palette_per_two_channels(smooth_data, tmp_path):
    torch.manual_seed(0)
    net = Correlated().eval()
    x = smooth_data.images.float() / 255
    reference = net(x).detach()
    errors = {}
    for group in (1, 2):
        result = compress(net, smooth_data, compensate=True, per_channel=True, group=group, include=["conv"])
        errors[group] = float((result.model(x).detach() - reference).pow(2).mean())
    assert result.plan.codec_for("conv.weight").describe() == "palette2cg2"
    for pair in result.model.state_dict()["conv.weight"].reshape(4, -1):
        assert pair.unique().numel() <= 4
    result.save(tmp_path / "g.nsk")
    loaded = netshrink.load(tmp_path / "g.nsk", model=copy.deepcopy(net))
    assert torch.equal(loaded(x), result.model(x))
    assert errors[1] < errors[2] < 20 * errors[1]  # fewer values per channel cost some accuracy, not all


def test_compensate_refuses_pruned_weights(smooth_data):
    recipe = parse_recipe(
        {"name": "t", "steps": [{"prune": {"sparsity": 0.5}}, {"palette": {"bits": 3, "compensate": True}}]}
    )
    with pytest.raises(RecipeError, match="compensate needs dense weights"):
        netshrink.compress(Correlated().eval(), recipe, smooth_data, progress=False)


def test_compensate_needs_data_and_says_so():
    recipe = parse_recipe({"name": "t", "steps": [{"palette": {"bits": 3, "compensate": True}}]})
    assert recipe.needs_data
    with pytest.raises(netshrink.NetshrinkError, match="needs training data"):
        netshrink.compress(Correlated().eval(), recipe, progress=False)
