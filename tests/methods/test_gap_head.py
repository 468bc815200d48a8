"""gap_head: the zoo's GAP option for LeNet-5, the step's retraining, reload, and its refusals."""

import logging

import pytest
import torch
from torch import nn

import netshrink
from netshrink import zoo
from netshrink.data import ArrayDataset
from netshrink.errors import ModelError, RecipeError
from netshrink.recipe import parse_recipe


def recipe(*steps):
    return parse_recipe({"name": "test", "steps": list(steps)})


def tiny_mnist(n: int = 64) -> ArrayDataset:
    g = torch.Generator().manual_seed(0)
    return ArrayDataset(
        torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8),
        torch.randint(0, 10, (n,), generator=g),
        tuple("0123456789"),
    )


def test_zoo_builds_the_gap_head():
    model = zoo.build_model("lenet5", head="gap", widths=[8, 16, 32])
    assert isinstance(model.fc1, nn.Conv2d) and model.fc1.weight.shape == (32, 16, 1, 1)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert sum(p.numel() for p in zoo.build_model("lenet5", head="gap").parameters()) == 56_080  # was 431_080
    with pytest.raises(ModelError, match="head must be 'fc' or 'gap'"):
        zoo.build_model("lenet5", head="attention")


def test_warm_start_keeps_the_pre_activation_of_constant_maps():
    torch.manual_seed(0)
    model = zoo.build_model("lenet5")
    features = torch.rand(1, 50, 1, 1).expand(1, 50, 4, 4)
    dense = model.fc1(features.flatten(1))
    model.to_gap_head()
    torch.testing.assert_close(model.fc1(features)[:, :, 0, 0], dense, rtol=1e-5, atol=1e-5)


def test_gap_head_trains_records_arch_and_reloads(tmp_path):
    torch.manual_seed(0)
    model = zoo.build_model("lenet5").eval()
    step = {"gap_head": {"epochs": 1, "batch_size": 16, "lr": 0.05}}
    compressed = netshrink.compress(model, recipe(step), tiny_mnist(), name="lenet5", progress=False)
    assert compressed.identity.arch == {"num_classes": 10, "widths": [20, 50, 500], "head": "gap"}
    trained = compressed.model
    assert trained.head == "gap" and model.head == "fc"  # the input model is untouched
    assert not torch.equal(trained.fc2.weight, model.fc2.weight)  # it trained
    compressed.save(tmp_path / "gap.nsk")
    loaded = netshrink.load(tmp_path / "gap.nsk")
    x = torch.rand(2, 1, 28, 28)
    assert isinstance(loaded.fc1, nn.Conv2d)
    torch.testing.assert_close(loaded(x), trained.eval()(x))


def test_resnet20_already_pools_so_the_step_does_nothing(caplog):
    torch.manual_seed(0)
    model = zoo.build_model("resnet20").eval()
    with caplog.at_level(logging.WARNING):
        compressed = netshrink.compress(model, recipe({"gap_head": {}}), tiny_mnist(4), progress=False)
    assert "already ends in global average pooling" in caplog.text
    assert compressed.identity.arch == model.arch_options()  # unchanged: nothing was replaced
    assert all(torch.equal(a, b) for a, b in zip(compressed.model.state_dict().values(), model.state_dict().values()))


def test_models_without_the_option_and_late_placement_are_recipe_errors(tiny_net):
    with pytest.raises(RecipeError, match="gap_head: TinyNet has no global-average-pooling head option"):
        netshrink.compress(tiny_net, recipe({"gap_head": {}}), tiny_mnist(4), progress=False)
    with pytest.raises(RecipeError, match="gap_head changes the architecture.*before"):
        netshrink.compress(
            zoo.build_model("lenet5"), recipe({"cast": {}}, {"gap_head": {}}), tiny_mnist(4), progress=False
        )
    with pytest.raises(RecipeError, match="gap_head.*'epochs'|gap_head.*epochs"):
        recipe({"gap_head": {"epochs": -1}})
