"""Retraining mechanics: masks hold, shared values stay shared, centroids move by summed gradients."""

import pytest
import torch

import netshrink
from netshrink.errors import NetshrinkError, RecipeError
from netshrink.recipe import parse_recipe
from netshrink.training.retraining import SharedValueHook, shared_gradient, value_labels


def recipe(*steps):
    return parse_recipe({"name": "test", "steps": list(steps)})


def test_shared_gradient_sums_each_cluster_and_zeroes_pruned():
    labels = torch.tensor([0, 1, 0, -1, 1, 2])
    grad = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    assert torch.equal(shared_gradient(grad, labels), torch.tensor([4.0, 7.0, 4.0, 0.0, 7.0, 6.0]))
    assert torch.equal(shared_gradient(grad, labels, "mean"), torch.tensor([2.0, 3.5, 2.0, 0.0, 3.5, 6.0]))


def test_value_labels_group_equal_values_and_mark_zeros():
    labels = value_labels(torch.tensor([0.5, 0.0, -1.0, 0.5, -1.0]))
    assert labels[1] == -1 and labels[0] == labels[3] and labels[2] == labels[4] and labels[0] != labels[2]


def test_centroid_moves_by_the_sum_of_its_weights_gradients():
    layer = torch.nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, 0.5, -0.25, 0.0]]))
    hook = SharedValueHook({"weight": value_labels(layer.weight)})
    hook.prepare(layer)
    layer(torch.tensor([[1.0, 2.0, 3.0, 4.0]])).sum().backward()
    hook.after_backward(layer)
    with torch.no_grad():
        layer.weight -= 0.1 * layer.weight.grad
    assert torch.allclose(layer.weight, torch.tensor([[0.5 - 0.3, 0.5 - 0.3, -0.25 - 0.3, 0.0]]))


def test_trained_quantization_keeps_distinct_values_and_trains_them(tiny_net, tiny_images, tmp_path):
    steps = recipe(
        {"prune": {"sparsity": 0.5}}, {"trained_quantization": {"bits": 3, "epochs": 2, "lr": 0.001, "batch_size": 32}}
    )
    one_shot = netshrink.compress(
        tiny_net, recipe({"prune": {"sparsity": 0.5}}, {"palette": {"bits": 3, "init": "linear"}}), progress=False
    )
    trained = netshrink.compress(tiny_net, steps, data=tiny_images, progress=False)
    for name in ("conv.weight", "fc.weight"):
        w, w0 = trained.model.state_dict()[name], one_shot.model.state_dict()[name]
        assert torch.equal(w == 0, w0 == 0), "pruned weights must stay zero, survivors nonzero"
        assert len(torch.unique(w[w != 0])) <= 8
        assert not torch.equal(torch.unique(w), torch.unique(w0)), "the centroids should have moved"
    trained.save(tmp_path / "tq.nsk")
    loaded = netshrink.load(tmp_path / "tq.nsk", model=type(tiny_net)())
    for name, tensor in trained.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_iterative_prune_reaches_per_layer_targets_and_holds_zeros(tiny_net, tiny_images):
    steps = recipe(
        {
            "iterative_prune": {
                "sparsity": 0.8,
                "overrides": {"conv": {"sparsity": 0.5}},
                "rounds": 2,
                "epochs": 0.5,
                "batch_size": 32,
            }
        }
    )
    pruned = netshrink.compress(tiny_net, steps, data=tiny_images, progress=False).model.state_dict()
    assert float((pruned["conv.weight"] == 0).float().mean()) == pytest.approx(0.5, abs=0.01)
    assert float((pruned["fc.weight"] == 0).float().mean()) == pytest.approx(0.8, abs=0.01)
    assert not torch.equal(pruned["conv.bias"], tiny_net.state_dict()["conv.bias"]), "retraining should have run"


def test_retraining_recipe_without_data_is_a_clear_error(tiny_net):
    with pytest.raises(NetshrinkError, match="needs training data"):
        netshrink.compress(tiny_net, recipe({"iterative_prune": {}}), progress=False)


@pytest.mark.parametrize(
    "settings, field",
    [
        ({"sparsity": 1.2}, "sparsity"),
        ({"rounds": 0}, "rounds"),
        ({"overrides": {"fc": {"sparsity": 2.0}}}, "overrides 'fc': sparsity"),
        ({"epochs": -1}, "epochs"),
        ({"scope": "global", "overrides": {"fc": {"sparsity": 0.5}}}, "scope 'layer'"),
    ],
)
def test_bad_iterative_prune_settings_name_the_field(settings, field):
    with pytest.raises(RecipeError, match=field):
        recipe({"iterative_prune": settings})


def test_distilling_steps_learn_from_the_network_the_recipe_started_with(tiny_net, tiny_images, monkeypatch):
    from netshrink.training import retraining

    losses = []
    real_fit = retraining.fit

    def spy(model, data, config, hooks, **kwargs):
        losses.append(kwargs["loss_fn"])
        return real_fit(model, data, config, hooks, **kwargs)

    monkeypatch.setattr(retraining, "fit", spy)
    settings = {"sparsity": 0.8, "rounds": 2, "epochs": 0.25, "batch_size": 32}
    netshrink.compress(
        tiny_net, recipe({"prune": {"sparsity": 0.5}}, {"iterative_prune": settings}), data=tiny_images, progress=False
    )
    assert losses == [None, None], "labels (cross-entropy) unless the recipe asks for distillation"
    losses.clear()
    netshrink.compress(
        tiny_net,
        recipe({"prune": {"sparsity": 0.5}}, {"iterative_prune": {**settings, "distill": "kl"}}),
        data=tiny_images,
        progress=False,
    )
    assert len(losses) == 2 and losses[0].teacher is losses[1].teacher
    teacher = losses[0].teacher.state_dict()
    for name, tensor in tiny_net.state_dict().items():  # the unpruned input, not what the prune step left
        assert torch.equal(teacher[name], tensor), name


def test_unknown_distill_kind_is_a_recipe_error():
    with pytest.raises(RecipeError, match="distill"):
        recipe({"iterative_prune": {"sparsity": 0.5, "distill": "l2"}})


def test_grouped_tensors_move_a_shared_value_by_the_gradients_of_all_its_users():
    a, b = torch.nn.Linear(2, 1, bias=False), torch.nn.Linear(2, 1, bias=False)
    model = torch.nn.ModuleDict({"a": a, "b": b})
    with torch.no_grad():
        a.weight.copy_(torch.tensor([[0.5, -1.0]]))
        b.weight.copy_(torch.tensor([[0.5, 2.0]]))
    labels = {"a.weight": torch.tensor([[0, 1]]), "b.weight": torch.tensor([[0, 2]])}  # 0.5 shared by a and b
    hook = SharedValueHook(labels, groups=[["a.weight", "b.weight"]])
    hook.prepare(model)
    (a(torch.tensor([[1.0, 1.0]])) + b(torch.tensor([[3.0, 1.0]]))).sum().backward()
    hook.after_backward(model)
    assert torch.equal(a.weight.grad, torch.tensor([[4.0, 1.0]])) and torch.equal(
        b.weight.grad, torch.tensor([[4.0, 1.0]])
    )
    with pytest.raises(ValueError, match="disjoint"):
        SharedValueHook(labels, groups=[["a.weight"], ["a.weight", "b.weight"]])


def test_reassign_hook_moves_latent_weights_and_switches_codewords():
    from netshrink.training.retraining import ReassignHook

    layer = torch.nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.0, 0.0, 1.0, 1.0]]))  # sub-vectors (d = 2) on codewords 0 and 1
    hook = ReassignHook({"weight": torch.tensor([[0, 1, 2, 3]])}, {"weight": 2}, every=2)
    hook.prepare(layer)
    with torch.no_grad():
        layer.weight += torch.tensor([[0.45, 0.45, 0.0, -0.2]])  # what an optimiser step would do
    hook.after_step(layer, 0)  # not a re-assignment step: codewords = means of their latent sub-vectors
    assert torch.allclose(layer.weight, torch.tensor([[0.45, 0.45, 1.0, 0.8]]))
    with torch.no_grad():
        layer.weight += torch.tensor([[0.45, 0.45, 0.0, 0.0]])
    hook.after_step(layer, 1)  # latent (0.9, 0.9) is now nearer codeword 1 (1.0, 0.8): re-assigned, one codeword left
    assert torch.allclose(layer.weight, torch.tensor([[0.95, 0.85, 0.95, 0.85]]))
    assert torch.equal(hook.labels()["weight"], torch.tensor([[2, 3, 2, 3]]))
