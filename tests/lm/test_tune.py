"""`tune`: the shared values of coded layers trained against the uncompressed network, with the
assignments fixed. Block by block, each block learns from itself before compression; the file holds
the tuned values and loads to the model that was measured."""

from __future__ import annotations

import copy

import pytest
import torch
from lm.tiny_models import tiny_llama, write_gguf

import netshrink
from netshrink.recipe import parse_recipe
from netshrink.streaming import compress_streaming

pytest.importorskip("gguf")

PALETTE = {
    "palette": {"bits": 2, "per_channel": True, "compensate": True, "calibration": 16, "include": ["model.layers.*"]}
}
TUNE = {"tune": {"include": ["model.layers.*"], "epochs": 8, "lr": 3e-3, "batch_size": 4}}


def compress(source, tmp_path, steps, name):
    recipe = parse_recipe({"name": name, "steps": steps})
    calibration = torch.randint(0, 300, (16, 32), generator=torch.Generator().manual_seed(0))
    out = tmp_path / f"{name}.nsk"
    compress_streaming(source, recipe, output=out, calibration=calibration, progress=False)
    return netshrink.load(out)


def test_tuning_each_block_brings_the_logits_closer_and_keeps_the_palettes(tmp_path):
    model = tiny_llama(max_seq=64)
    source = write_gguf(model, tmp_path / "tiny.gguf")
    held_out = torch.randint(0, 300, (8, 32), generator=torch.Generator().manual_seed(1))
    reference = model(held_out).detach()
    errors = {}
    for name, steps in {"oneshot": [PALETTE], "tuned": [PALETTE, TUNE]}.items():
        loaded = compress(source, tmp_path, steps, name)
        errors[name] = float((loaded(held_out).detach() - reference).pow(2).mean())
        weight = loaded.model.layers[0].mlp.up_proj.weight
        assert all(row.unique().numel() <= 4 for row in weight)  # still 4 values per output channel
    assert errors["tuned"] < 0.95 * errors["oneshot"]


def test_tune_needs_coded_layers_and_a_teacher_loss(tmp_path):
    source = write_gguf(tiny_llama(max_seq=64), tmp_path / "tiny.gguf")
    with pytest.raises(netshrink.NetshrinkError, match="not coded"):
        compress(source, tmp_path, [TUNE], "alone")
    with pytest.raises(netshrink.NetshrinkError, match="distill"):
        parse_recipe({"name": "t", "steps": [{"tune": {"distill": "ce"}}]})
    with pytest.raises(netshrink.NetshrinkError, match="exclude"):
        compress(source, tmp_path, [{"palette": {"bits": 4}}, {"tune": {"epochs": 1}}], "head")


def test_on_a_whole_model_tune_distils_the_logits_and_stores_the_tuned_palettes(tiny_net, tiny_images, tmp_path):
    x = tiny_images.images.float() / 255
    reference = tiny_net(x).detach()
    errors = {}
    for name, steps in {
        "oneshot": [{"palette": {"bits": 2, "per_channel": True}}],
        "tuned": [
            {"palette": {"bits": 2, "per_channel": True}},
            {"tune": {"distill": "kl", "epochs": 3, "lr": 1e-3, "batch_size": 32}},
        ],
    }.items():
        result = netshrink.compress(
            copy.deepcopy(tiny_net), parse_recipe({"name": name, "steps": steps}), tiny_images, progress=False
        )
        errors[name] = float((result.model(x).detach() - reference).pow(2).mean())
    result.save(tmp_path / "t.nsk")
    loaded = netshrink.load(tmp_path / "t.nsk", model=copy.deepcopy(tiny_net))
    assert torch.equal(loaded(x), result.model(x))
    assert all(row.unique().numel() <= 4 for row in loaded.fc.weight)
    assert errors["tuned"] < errors["oneshot"]


def test_tune_keeps_the_codewords_of_pq_coded_layers(tmp_path):
    source = write_gguf(tiny_llama(max_seq=64), tmp_path / "tiny.gguf")
    pq = {"pq": {"include": ["model.layers.*"], "pointwise_d": 4, "k": 16, "objective": "weights", "epochs": 0}}
    loaded = compress(source, tmp_path, [pq, TUNE], "pq")
    rows = loaded.model.layers[0].mlp.up_proj.weight.reshape(-1, 4)
    assert rows.unique(dim=0).shape[0] <= 16  # still at most 16 distinct sub-vectors
