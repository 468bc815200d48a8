"""ADMM pruning and quantization: the projections, the ADMM iterations, the steps and their errors."""

import itertools

import pytest
import torch

import netshrink
from netshrink.data import ArrayDataset
from netshrink.errors import DataError, NetshrinkError, RecipeError
from netshrink.methods.admm import (
    AdmmPrune,
    AdmmQuantize,
    kmeans_levels,
    project_levels,
    project_sparse,
    uniform_levels,
)
from netshrink.plan import CompressionPlan
from netshrink.recipe import parse_recipe
from netshrink.step import StepContext

FAST = {
    "epochs": 1,
    "admm_interval": 0.25,
    "retrain_epochs": 0.5,
    "batch_size": 32,
    "lr": 0.02,
    "rho_init": 0.01,
    "rho_factor": 2.0,
    "rho_max": 1.0,
}


def recipe(*steps):
    return parse_recipe({"name": "test", "steps": list(steps)})


@pytest.fixture
def synthetic() -> ArrayDataset:
    """256 random 3x8x8 images labelled by a fixed random linear teacher: learnable in a few steps."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (256, 3, 8, 8), generator=g, dtype=torch.uint8)
    teacher = torch.randn(3 * 8 * 8, 10, generator=g)
    return ArrayDataset(images, (images.flatten(1).float() / 255 - 0.5).matmul(teacher).argmax(1))


def distance(a, b):
    return float((a - b).norm())


def test_project_sparse_agrees_with_brute_force_over_all_supports():
    w = torch.tensor([0.3, -1.2, 0.05, 2.0, -0.7, 0.9])
    for keep in range(len(w) + 1):
        best = min(
            distance(w, w * torch.isin(torch.arange(6), torch.tensor(support, dtype=torch.long)))
            for support in itertools.combinations(range(6), keep)
        )
        projected = project_sparse(w, keep)
        assert int((projected != 0).sum()) == keep
        assert distance(w, projected) == pytest.approx(best, abs=1e-7)


def test_no_feasible_point_is_closer_than_project_sparse():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(4, 5, generator=g)
    projected = project_sparse(w, 7)
    assert projected.shape == w.shape and int((projected != 0).sum()) == 7
    for _ in range(2000):
        v = torch.randn(20, generator=g)
        v[torch.randperm(20, generator=g)[: 20 - int(torch.randint(0, 8, (1,), generator=g))]] = 0
        assert distance(w.reshape(-1), v) >= distance(w, projected) - 1e-6


def test_project_levels_maps_to_the_nearest_level_keeps_zeros_and_is_idempotent():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(500, generator=g)
    w[::3] = 0
    levels = torch.tensor([0.8, -1.0, -0.1, 0.25])
    projected = project_levels(w, levels)
    assert torch.equal(projected == 0, w == 0)
    nonzero = w != 0
    nearest = (w[nonzero, None] - levels[None]).abs().min(dim=1).values
    assert torch.allclose((w[nonzero] - projected[nonzero]).abs(), nearest)
    assert torch.isin(projected[nonzero], levels).all()
    assert torch.equal(project_levels(projected, levels), projected)


@pytest.mark.parametrize("fit", [kmeans_levels, uniform_levels])
def test_level_fitters_give_at_most_2_to_the_bits_levels(fit):
    w = torch.randn(1000, generator=torch.Generator().manual_seed(3))
    levels = fit(w, 3)
    assert 1 <= levels.numel() <= 8
    if fit is uniform_levels:  # a symmetric, evenly spaced grid
        assert torch.allclose(levels, -levels.flip(0)) and torch.allclose(levels.diff(), levels.diff()[0].expand(7))


def test_admm_iterations_shrink_the_residual(tiny_net, synthetic):
    step = recipe({"admm_prune": {**FAST, "sparsity": 0.9, "epochs": 3, "rho_init": 1.0, "rho_max": 100.0}}).steps[0]
    keep = step.keep_counts(tiny_net)
    hook = step.run_admm(
        tiny_net,
        StepContext(data=synthetic, progress=False),
        {name: lambda w, k=k: project_sparse(w, k) for name, k in keep.items()},
        "test",
    )
    assert len(hook.residuals) == 1 + 12  # the start, then one Z update per quarter epoch
    assert hook.residuals[-1] < 0.1 * hook.residuals[0]
    assert max(hook.residuals[-4:]) < min(hook.residuals[:4])
    assert hook.rho == pytest.approx(100.0)  # 2^12 capped at rho_max


def test_steps_put_zeros_where_the_projection_did_and_share_2_to_the_bits_values(tmp_path, tiny_net, synthetic):
    prune = {"admm_prune": {**FAST, "sparsity": 0.8, "overrides": {"conv": {"sparsity": 0.5}}}}
    no_retrain = {"admm_prune": {**prune["admm_prune"], "retrain_epochs": 0}}
    quantize = {"admm_quantize": {**FAST, "bits": 2, "overrides": {"fc": {"bits": 3}}}}
    projected = netshrink.compress(tiny_net, recipe(no_retrain), synthetic, progress=False).model.state_dict()
    compressed = netshrink.compress(tiny_net, recipe(prune, quantize), synthetic, progress=False)
    state = compressed.model.state_dict()
    for name, sparsity, bits in (("conv.weight", 0.5, 2), ("fc.weight", 0.8, 3)):
        assert int((projected[name] != 0).sum()) == state[name].numel() - round(sparsity * state[name].numel())
        assert torch.equal(state[name] == 0, projected[name] == 0)
        assert len(torch.unique(state[name][state[name] != 0])) <= 2**bits
        assert compressed.plan.codec_for(name).describe() == f"sparse(palette{bits})"
    compressed.save(tmp_path / "admm.nsk")
    loaded = netshrink.load(tmp_path / "admm.nsk", model=type(tiny_net)())
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())


@pytest.mark.parametrize(
    "step, settings, field",
    [
        ("admm_prune", {"sparsity": 1.5}, "sparsity"),
        ("admm_prune", {"overrides": {"fc": {"sparsity": -0.1}}}, "overrides 'fc': sparsity"),
        (
            "admm_prune",
            {"overrides": {"fc": {"rho_max": 2.0}}},
            "overrides 'fc': field 'rho_max' cannot differ per layer",
        ),
        ("admm_quantize", {"bits": 0}, "bits"),
        ("admm_quantize", {"overrides": {"conv": {"bits": 17}}}, "overrides 'conv': bits"),
        ("admm_quantize", {"overrides": {"conv": {"bitz": 3}}}, "overrides 'conv': field 'bitz' is not a field"),
        ("admm_quantize", {"levels": "lloyd"}, "levels"),
        ("admm_quantize", {"reduce": "max"}, "reduce"),
        ("admm_quantize", {"rho_factor": 0.5}, "rho_factor"),
    ],
)
def test_bad_settings_name_the_field(step, settings, field):
    with pytest.raises(RecipeError, match=field):
        recipe({step: settings})


def test_per_layer_pattern_matching_no_layer_is_an_error(tiny_net, synthetic):
    with pytest.raises(RecipeError, match="'decoder'"):
        AdmmPrune(overrides={"decoder": {"sparsity": 0.5}}).apply(
            tiny_net, CompressionPlan(), StepContext(data=synthetic)
        )


@pytest.mark.parametrize("step", [AdmmPrune(), AdmmQuantize()])
def test_step_without_data_is_a_one_line_error(tiny_net, step):
    with pytest.raises(DataError, match="needs training data") as info:
        step.apply(tiny_net, CompressionPlan(), StepContext(progress=False))
    assert "\n" not in str(info.value)
    with pytest.raises(NetshrinkError, match="needs training data"):
        netshrink.compress(tiny_net, recipe({step.step_name: {}}), progress=False)
