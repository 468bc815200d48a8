"""Automatic per-layer budgets: files of the requested size, sensitive layers kept precise, impossible targets refused."""

from __future__ import annotations

import os

import pytest
import torch
from conftest import random_images
from torch import nn

from netshrink import api
from netshrink.budget.allocation import (
    BudgetError,
    LayerOption,
    allocate,
    budget_recipe,
    original_bytes_of,
    predicted_damage,
    uniform_choice,
)
from netshrink.budget.sensitivity import CalibrationScorer, SensitivityConfig, calibration_split, measure
from netshrink.cli import main
from netshrink.data import ArrayDataset
from netshrink.energy import energy_of_model, weight_format
from netshrink.errors import NetshrinkError
from netshrink.format.container import read_nsk

CONFIG = SensitivityConfig(bits=(2, 3, 4, 5, 6), sparsity=(0.5, 0.9), samples=64)


class TwoBranch(nn.Module):
    """Two equal Linear layers over 3x16x16 images; the output listens to `loud` 400x more than to `quiet`."""

    def __init__(self) -> None:
        super().__init__()
        self.loud = nn.Linear(768, 10)
        self.quiet = nn.Linear(768, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return 20 * self.loud(x) + 0.05 * self.quiet(x)


@pytest.fixture
def data() -> ArrayDataset:
    return random_images(128, 16, seed=2)


@pytest.fixture
def two_branch() -> TwoBranch:
    torch.manual_seed(0)
    return TwoBranch().eval()


@pytest.fixture
def sens(two_branch, data):
    return measure(two_branch, data, CONFIG, dataset="tiny", progress=False)


def compress_to_ratio(model, sens, ratio, **kwargs):
    return api.compress_to_target(model, ratio=ratio, sensitivity=sens, **kwargs)


def compress_to_energy(model, sens, energy, **kwargs):
    return api.compress_to_target(model, energy=energy, sensitivity=sens, **kwargs)


def test_allocate_spends_bytes_where_damage_is():
    bytes_at = {2: 100, 3: 150, 4: 200, 5: 250}
    sensitive = [LayerOption(b, 0.0, n, 1.0 / 4**b) for b, n in bytes_at.items()]
    robust = [LayerOption(b, 0.0, n, 0.001 / 4**b) for b, n in bytes_at.items()]
    choice = allocate({"a": sensitive, "b": robust}, budget=300)  # uniform 3-bit costs exactly 300
    assert choice["a"].bits == 4 and choice["b"].bits == 2
    assert choice["a"].bytes + choice["b"].bytes <= 300
    assert predicted_damage(choice) < sensitive[1].damage + robust[1].damage


def test_budget_meets_the_target_and_writes_its_recipe(two_branch, sens, tmp_path):
    original = original_bytes_of(two_branch, None)
    for ratio in (4.0, 6.0, 8.0):
        result = compress_to_ratio(two_branch, sens, ratio, progress=False)
        path = tmp_path / f"auto{ratio:g}.nsk"
        result.save(path)
        assert os.path.getsize(path) == result.budget.file_bytes == result.nbytes() <= int(original / ratio)
        assert original / os.path.getsize(path) >= ratio
        recipe = read_nsk(path).recipe
        assert recipe["name"] == f"auto-ratio-{ratio:g}x"
        chosen = {layer for step in recipe["steps"] if "palette" in step for layer in step["palette"]["include"]}
        assert chosen == {"loud", "quiet"}
        api.load(path, model=TwoBranch())  # the file decodes into the model


def test_budget_beats_uniform_of_the_same_size(two_branch, sens, data):
    uniform = api.compress(two_branch, budget_recipe(uniform_choice(sens, 3), "u3", ""), progress=False)
    ratio = original_bytes_of(two_branch, None) / uniform.nbytes()
    auto = compress_to_ratio(two_branch, sens, ratio, progress=False)
    assert auto.budget.file_bytes <= uniform.nbytes()
    same = uniform_choice(sens, 3)
    assert auto.budget.choice["loud"].bits > 3 and auto.budget.choice["quiet"].bytes < same["quiet"].bytes
    scorer = CalibrationScorer(two_branch, calibration_split(data, 64, seed=0))
    assert scorer.score(auto.model).kl < 0.5 * scorer.score(uniform.model).kl


def test_impossible_target_is_a_one_line_error(two_branch, sens):
    with pytest.raises(BudgetError, match=r"cannot be met: the smallest measured settings reach \d+\.\d\dx") as err:
        compress_to_ratio(two_branch, sens, 1000.0, progress=False)
    assert "\n" not in str(err.value)
    for bad in (0.5, 0.0, float("nan"), float("inf")):  # refused before any division by the target
        with pytest.raises(BudgetError, match="must be > 1"):
            compress_to_ratio(two_branch, sens, bad, progress=False)
        with pytest.raises(BudgetError, match="must be > 1"):
            compress_to_energy(two_branch, sens, bad, input_shape=(3, 16, 16), progress=False)


def test_energy_target_is_met_by_the_stored_formats(two_branch, sens):
    result = compress_to_energy(two_branch, sens, 5.0, input_shape=(3, 16, 16), progress=False)
    formats = {name: weight_format(entry.encoded) for name, entry in result.plan.entries.items()}
    budget = result.budget
    assert energy_of_model(result.model, (3, 16, 16), formats).ratio == pytest.approx(budget.energy_ratio)
    assert 5.0 <= budget.energy_ratio < 5.5  # spends what the target allows on the loud layer
    assert budget.choice["quiet"].energy_pj < budget.choice["loud"].energy_pj  # the energy goes where damage is
    with pytest.raises(BudgetError, match=r"target energy ratio 500x cannot be met: .* reach \d+\.\d\dx"):
        compress_to_energy(two_branch, sens, 500.0, input_shape=(3, 16, 16), progress=False)


def test_cli_refuses_a_recipe_with_a_target(capsys):
    assert main(["compress", "resnet20", "--recipe", "fp16", "--target-ratio", "8"]) == 2
    assert "either --recipe or a target" in capsys.readouterr().err


def test_one_target_at_a_time(two_branch, sens):
    with pytest.raises(NetshrinkError, match="give one target"):
        api.compress_to_target(two_branch, ratio=4, energy=4, sensitivity=sens, progress=False)
    with pytest.raises(NetshrinkError, match="give one target"):
        api.compress_to_target(two_branch, sensitivity=sens, progress=False)
