"""Filter pruning: channel groups from the traced graph, exact surgery, sensitivity order, FLOPs, reload."""

import pytest
import torch
from torch import nn

import netshrink
from netshrink import zoo
from netshrink.data import ArrayDataset
from netshrink.errors import RecipeError
from netshrink.flops import flops
from netshrink.methods.filter_prune import (
    ChannelGroup,
    channel_groups,
    least_sensitive_first,
    prune_channels,
    sensitivities,
    smallest_l1_removed,
)
from netshrink.recipe import load_recipe, parse_recipe


def recipe(*steps):
    return parse_recipe({"name": "test", "steps": list(steps)})


def images(n: int, shape: tuple[int, ...], seed: int = 0) -> ArrayDataset:
    g = torch.Generator().manual_seed(seed)
    return ArrayDataset(
        torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8),
        torch.randint(0, 10, (n,), generator=g),
        tuple("0123456789"),
    )


def lively_resnet20() -> nn.Module:
    """ResNet-20 with non-trivial BatchNorm statistics, so exactness checks mean something."""
    torch.manual_seed(0)
    model = zoo.build_model("resnet20")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2), m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def zero_channels(model: nn.Module, group: ChannelGroup, dead: list[int]) -> None:
    """Make channels `dead` of the group's output exactly zero."""
    producer = model.get_submodule(group.producer)
    with torch.no_grad():
        producer.weight[dead] = 0
        if producer.bias is not None:
            producer.bias[dead] = 0
        for name in group.norms:  # after a BatchNorm a zero filter gives beta - gamma mean / std: zero both
            model.get_submodule(name).weight[dead] = 0
            model.get_submodule(name).bias[dead] = 0


def zero_then_prune(model: nn.Module, dead: dict[ChannelGroup, list[int]], x: torch.Tensor) -> None:
    """Zero the `dead` channels, then remove them (smallest L1): the output must not change."""
    for group, channels in dead.items():
        zero_channels(model, group, channels)
    before = model(x)
    for group, channels in dead.items():
        prune_channels(model, group, smallest_l1_removed(model, group, len(channels)))
    torch.testing.assert_close(model(x), before, atol=1e-5, rtol=0)


def test_groups_follow_the_graph():
    lenet = [(g.producer, g.consumers) for g in channel_groups(zoo.build_model("lenet5"))]
    assert lenet == [("conv1", ("conv2",)), ("conv2", ("fc1",)), ("fc1", ("fc2",))]
    resnet = channel_groups(zoo.build_model("resnet20"))
    # Option-A shortcuts: only each block's inner channels; stem, conv2 outputs and the classifier stay.
    assert [g.producer for g in resnet] == [f"layer{s}.{b}.conv1" for s in (1, 2, 3) for b in range(3)]
    assert resnet[0].norms == ("layer1.0.bn1",) and resnet[0].consumers == ("layer1.0.conv2",)


@pytest.mark.parametrize("head", ["fc", "gap"])
def test_pruning_zero_filters_keeps_lenet5_function(head):
    torch.manual_seed(0)
    model = zoo.build_model("lenet5", head=head).eval()
    dead = dict(zip(channel_groups(model), ([0, 7, 19], [3, 4, 10, 49], list(range(0, 500, 3)))))
    zero_then_prune(model, dead, torch.rand(4, 1, 28, 28))
    assert model.arch_options()["widths"] == [17, 46, 333]


def test_pruning_zero_filters_keeps_resnet20_function():
    model = lively_resnet20()
    groups = channel_groups(model)
    dead = {g: list(range(i % 3, model.get_submodule(g.producer).out_channels, 4)) for i, g in enumerate(groups)}
    zero_then_prune(model, dead, torch.rand(2, 3, 32, 32))
    assert model.arch_options()["inner_widths"] == [12, 12, 12, 24, 24, 24, 48, 48, 48]
    assert sum(p.numel() for p in model.parameters()) < 269_722


def test_flops_of_lenet5_by_hand():
    conv1, conv2, fc1, fc2 = 24 * 24 * 20 * 25, 8 * 8 * 50 * 20 * 25, 800 * 500, 500 * 10
    assert flops(zoo.build_model("lenet5"), (1, 28, 28)) == conv1 + conv2 + fc1 + fc2 == 2_293_000
    # GAP head: fc1 as a 1x1 conv at 4x4 positions costs what the dense fc1 did.
    assert flops(zoo.build_model("lenet5", head="gap"), (1, 28, 28)) == 2_293_000
    thin = zoo.build_model("lenet5", widths=[10, 25, 100])
    assert flops(thin, (1, 28, 28)) == 24 * 24 * 10 * 25 + 8 * 8 * 25 * 10 * 25 + 400 * 100 + 100 * 10


def test_resnet20_flops_match_the_paper():
    assert flops(zoo.build_model("resnet20"), (3, 32, 32)) == 40_551_040  # He et al. 2016: ~41 M


class ThreeLayers(nn.Module):
    """fc1's weakest unit is unused downstream; fc2's weakest unit carries the whole decision."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)
        with torch.no_grad():
            for fc in (self.fc1, self.fc2, self.fc3):
                fc.bias.zero_()
            self.fc1.weight.copy_(torch.diag(torch.tensor([0.1, 1.0, 1.0, 1.0])))
            self.fc2.weight.copy_(torch.tensor([[0, 0, -0.1, 0.1], [0, 5, 0, 0], [0, 5, 0, 0], [0, 5, 0, 0.0]]))
            self.fc3.weight.copy_(torch.tensor([[0, 0, 0, 0], [100, 0, 0, 0.0]]))

    def forward(self, x):
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc3(torch.relu(self.fc2(x)))


def decision_data(n: int = 400) -> ArrayDataset:
    pixels = torch.randint(0, 256, (n, 1, 2, 2), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    flat = pixels.reshape(n, 4)
    return ArrayDataset(pixels, (flat[:, 3] > flat[:, 2]).long())


def test_least_sensitive_layer_goes_first():
    model, data = ThreeLayers().eval(), decision_data()
    groups = channel_groups(model)
    assert [g.producer for g in groups] == ["fc1", "fc2"]
    drops = sensitivities(model, {g: 1 for g in groups}, data)
    assert drops[groups[0]] == 0 and drops[groups[1]] > 0.3
    assert least_sensitive_first(drops) == [groups[0], groups[1]]
    step = {
        "filter_prune": {
            "overrides": {"fc*": {"keep": 0.75}},
            "layers_per_round": 1,
            "max_rounds": 1,
            "epochs": 0,
            "holdout": 80,
        }
    }
    pruned = netshrink.compress(model, recipe(step), data, progress=False).model
    assert (pruned.fc1.out_features, pruned.fc2.out_features) == (3, 4)


def test_flops_target_is_met_and_file_reloads_into_the_smaller_lenet5(tmp_path):
    torch.manual_seed(0)
    model = zoo.build_model("lenet5").eval()
    step = {
        "filter_prune": {
            "target_flops_ratio": 1.5,
            "epochs": 0.05,
            "batch_size": 32,
            "holdout": 40,
            "prune_fraction": 0.25,
            "min_keep": 0.5,
        }
    }
    compressed = netshrink.compress(model, recipe(step), images(200, (1, 28, 28)), name="lenet5", progress=False)
    small = compressed.model
    assert flops(model, (1, 28, 28)) / flops(small, (1, 28, 28)) >= 1.5
    widths = compressed.identity.arch["widths"]
    assert all(w >= o / 2 for w, o in zip(widths, (20, 50, 500))) and widths != [20, 50, 500]
    compressed.save(tmp_path / "l5.nsk")
    loaded = netshrink.load(tmp_path / "l5.nsk")
    x = torch.rand(3, 1, 28, 28)
    # Same weights; only the memory layout (channels-last after held-out scoring) may differ.
    torch.testing.assert_close(loaded(x), small.eval()(x), atol=1e-6, rtol=1e-6)


def test_resnet20_file_reloads_with_inner_widths(tmp_path):
    model = lively_resnet20()
    step = {
        "filter_prune": {
            "overrides": {"layer3.*": {"keep": 0.5}, "layer1.0.conv1": {"keep": 0.75}},
            "epochs": 0,
            "holdout": 16,
            "layers_per_round": 4,
            "prune_fraction": 0.25,
        }
    }
    compressed = netshrink.compress(
        model, recipe(step, {"cast": {}}), images(80, (3, 32, 32)), name="resnet20", progress=False
    )
    assert compressed.identity.arch["inner_widths"] == [12, 16, 16, 32, 32, 32, 32, 32, 32]
    compressed.save(tmp_path / "r20.nsk")
    loaded = netshrink.load(tmp_path / "r20.nsk")
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), compressed.model.eval()(x))


@pytest.mark.parametrize(
    "settings, field",
    [
        ({"target_flops_ratio": 0.5}, "target_flops_ratio"),
        ({"target_flops_ratio": 2.0, "overrides": {"conv1": {"keep": 0.5}}}, "target_flops_ratio"),
        ({}, "target_flops_ratio"),
        ({"keep": 1.5}, "keep"),
        ({"overrides": {"conv1": {"keep": 1.5}}}, "overrides 'conv1': keep"),
        ({"keep": 0.5, "overrides": {"conv1": {"epochs": 1}}}, "overrides 'conv1': field 'epochs' cannot differ"),
        ({"target_flops_ratio": 2.0, "prune_fraction": 0}, "prune_fraction"),
        ({"target_flops_ratio": 2.0, "min_keep": 2}, "min_keep"),
        ({"target_flops_ratio": 2.0, "holdout": 0}, "holdout"),
        ({"target_flops_ratio": 2.0, "final_epochs": -1}, "final_epochs"),
        ({"target_flops_ratio": 2.0, "epochs": -1}, "epochs"),
        ({"target_flops_ratio": 2.0, "target": 3}, "target"),
    ],
)
def test_bad_settings_name_the_field(settings, field):
    with pytest.raises(RecipeError, match=f"filter_prune.*{field}"):
        recipe({"filter_prune": settings})


def test_impossible_requests_are_recipe_errors():
    resnet, data = lively_resnet20(), images(40, (3, 32, 32))
    with pytest.raises(RecipeError, match="'conv1' cannot lose filters"):
        netshrink.compress(resnet, recipe({"filter_prune": {"include": ["conv1"], "keep": 0.5}}), data, progress=False)
    with pytest.raises(RecipeError, match="overrides pattern 'fc\\*' \\(field 'keep'\\) matches no selected layer"):
        netshrink.compress(
            resnet, recipe({"filter_prune": {"overrides": {"fc*": {"keep": 0.5}}}}), data, progress=False
        )
    with pytest.raises(RecipeError, match="overrides pattern 'conv1' \\(field 'keep'\\) matches no prunable layer"):
        netshrink.compress(
            resnet, recipe({"filter_prune": {"overrides": {"conv1": {"keep": 0.5}}}}), data, progress=False
        )
    with pytest.raises(RecipeError, match="must come before"):
        netshrink.compress(resnet, recipe({"cast": {}}, {"filter_prune": {"keep": 0.5}}), data, progress=False)


def test_text_training_data_is_refused_by_name():
    from netshrink.data.text import SentencePairs

    pairs = SentencePairs(torch.randint(1, 64, (20, 2, 6)), torch.rand(20) * 5)
    with pytest.raises(RecipeError, match="filter_prune .* image models.*text"):
        netshrink.compress(ThreeLayers(), recipe({"filter_prune": {"keep": 0.5, "epochs": 0}}), pairs, progress=False)


@pytest.mark.parametrize("name", ["lenet5-compound", "resnet20-compound"])
def test_compound_recipes_parse(name):
    steps = [step.step_name for step in load_recipe(name).steps]
    assert steps[:2] == ["gap_head", "filter_prune"] and steps[-2:] == ["palette", "cast"]


def test_token_windows_are_refused_by_name():
    from netshrink.data import TokenWindows

    windows = TokenWindows(torch.randint(0, 64, (20, 6)))
    with pytest.raises(RecipeError, match="filter_prune .* image models.*token id batches"):
        netshrink.compress(ThreeLayers(), recipe({"filter_prune": {"keep": 0.5, "epochs": 0}}), windows, progress=False)
