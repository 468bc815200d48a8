"""One-shot steps through the API: pruning, palette, cast, low-rank, and module selection."""

import pytest
import torch

import netshrink
from netshrink.errors import RecipeError
from netshrink.format.codecs import Sparse
from netshrink.methods.prune import magnitude_masks
from netshrink.recipe import parse_recipe


def recipe(*steps):
    return parse_recipe({"name": "test", "steps": list(steps)})


def test_layer_masks_remove_exact_fraction_of_smallest():
    w = {"a": torch.arange(1.0, 11.0), "b": -torch.arange(1.0, 101.0)}
    masks = magnitude_masks(w, 0.3, "layer")
    assert masks["a"].sum() == 7 and masks["b"].sum() == 70
    assert torch.equal(masks["a"], torch.arange(1.0, 11.0) > 3)


def test_global_masks_share_one_threshold():
    w = {"small": torch.full((100,), 0.01), "large": torch.linspace(1, 2, 100)}
    masks = magnitude_masks(w, 0.5, "global")
    assert masks["small"].sum() == 0 and masks["large"].sum() == 100


def test_prune_step_zeroes_weights_and_stores_them_sparse(tiny_net):
    compressed = netshrink.compress(tiny_net, recipe({"prune": {"sparsity": 0.75}}), progress=False)
    for name in ("conv.weight", "fc.weight"):
        w = compressed.model.state_dict()[name]
        assert abs(float((w == 0).float().mean()) - 0.75) < 1e-3
        assert isinstance(compressed.plan.codec_for(name), Sparse)
    assert torch.equal(compressed.model.state_dict()["conv.bias"], tiny_net.state_dict()["conv.bias"])


def test_input_model_is_untouched(tiny_net):
    before = {k: v.clone() for k, v in tiny_net.state_dict().items()}
    netshrink.compress(tiny_net, "oneshot-prune50-palette5", progress=False)
    assert all(torch.equal(before[k], v) for k, v in tiny_net.state_dict().items())


def test_include_exclude_patterns(tiny_net):
    compressed = netshrink.compress(tiny_net, recipe({"palette": {"bits": 2, "exclude": ["fc"]}}), progress=False)
    assert len(torch.unique(compressed.model.conv.weight)) <= 4
    assert torch.equal(compressed.model.fc.weight, tiny_net.fc.weight)


def test_unsupported_layer_named_explicitly_is_an_error(tiny_net):
    with pytest.raises(RecipeError, match="'bn' is a BatchNorm2d"):
        netshrink.compress(tiny_net, recipe({"palette": {"include": ["bn"]}}), progress=False)
    with pytest.raises(RecipeError, match="does not have"):
        netshrink.compress(tiny_net, recipe({"palette": {"include": ["decoder"]}}), progress=False)
    with pytest.raises(RecipeError, match="match no layer"):
        netshrink.compress(tiny_net, recipe({"palette": {"include": ["x*"]}}), progress=False)


def test_cast_after_palette_only_touches_the_rest(tmp_path, tiny_net):
    compressed = netshrink.compress(
        tiny_net, recipe({"palette": {"bits": 4}}, {"cast": {"dtype": "fp16"}}), progress=False
    )
    report = compressed.save(tmp_path / "c.nsk")
    codecs = {t.name: t.codec for t in report.tensors}
    assert codecs["conv.weight"] == "palette4" and codecs["conv.bias"] == "fp16"
    assert codecs["bn.num_batches_tracked"] == "int64"


def test_lowrank_then_palette_nests_and_loads(tmp_path, tiny_net):
    compressed = netshrink.compress(
        tiny_net, recipe({"lowrank": {"rank": 4}}, {"palette": {"bits": 4}}), progress=False
    )
    path = tmp_path / "lr.nsk"
    report = compressed.save(path)
    codecs = {t.name: t.codec for t in report.tensors}
    assert codecs["fc.weight"] == "lowrank4(palette4,palette4)"
    loaded = netshrink.load(path, model=type(tiny_net)())
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(loaded(x), compressed.model(x))


def test_per_channel_auto_picks_channels_only_for_short_rows(tiny_net):
    # conv rows have 27 weights (<= 32 entries of a 5-bit palette): per channel; fc rows 1024: per layer
    compressed = netshrink.compress(tiny_net, recipe({"palette": {"bits": 5, "per_channel": "auto"}}), progress=False)
    assert compressed.plan.codec_for("conv.weight").per_channel is True
    assert compressed.plan.codec_for("fc.weight").per_channel is False
    pruned = netshrink.compress(tiny_net, "oneshot-prune50-palette5", progress=False)  # sparse: one palette
    assert isinstance(pruned.plan.codec_for("conv.weight"), Sparse)


def test_ratio_is_against_the_model_before_any_step(tiny_net, tmp_path):
    compressed = netshrink.compress(tiny_net, "fp16", progress=False)
    with torch.no_grad():  # as if a step had removed half of the model: the original stays the reference
        compressed.model.fc.weight.zero_()
    report = compressed.save(tmp_path / "m.nsk")
    assert report.original_bytes == 4 * sum(t.numel() for t in tiny_net.state_dict().values())
    assert compressed.identity.original.weight_numel == tiny_net.conv.weight.numel() + tiny_net.fc.weight.numel()
