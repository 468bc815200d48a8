"""The plan decodes every encoding itself, re-codes changed tensors with their codec's state, and
stores a codebook several tensors share once."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import netshrink
from netshrink.api import CompressedModel
from netshrink.errors import CodecError
from netshrink.format.codecs import PQ, Palette, Sparse, decode
from netshrink.format.container import read_nsk
from netshrink.plan import CompressionPlan


def two_layers() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 6), nn.Linear(6, 8))


def test_set_encoded_loads_what_the_encoding_decodes_to() -> None:
    model, plan = two_layers(), CompressionPlan()
    encoded = Palette(2).encode(torch.randn(6, 8))
    plan.set_encoded(model, "0.weight", Palette(2), encoded)
    assert torch.equal(model[0].weight.detach(), decode(encoded))
    with pytest.raises(CodecError, match="shape"):
        plan.set_encoded(model, "1.weight", Palette(2), encoded)


def test_a_shared_codebook_is_stored_once_and_kept_when_the_tensors_change(tmp_path) -> None:
    model, plan = two_layers(), CompressionPlan()
    codec = PQ(d=2, k=4)
    plan.assign(model, "0.weight", codec)
    book = plan.entries["0.weight"].state
    plan.assign(model, "1.weight", codec, book)
    with torch.no_grad():  # a later step retrains both layers
        model[0].weight.add_(0.1)
        model[1].weight.mul_(-1)
    assert plan.refresh(model) == ["0.weight", "1.weight"] and plan.refresh(model) == []
    assert all(plan.entries[name].state is book for name in ("0.weight", "1.weight"))
    CompressedModel(model, plan, None).save(tmp_path / "shared.nsk")
    records = {rec.name: rec.encoded for rec in read_nsk(tmp_path / "shared.nsk").tensors}
    assert records["1.weight"].streams["codebook"].borrowed_from == "0.weight"
    assert records["1.weight"].bytes_by_kind()["codebook"] == 0
    loaded = netshrink.load(tmp_path / "shared.nsk", model=nn.Sequential(nn.Linear(8, 6), nn.Linear(6, 8)))
    for ours, theirs in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(ours, theirs)
    words = {tuple(row.tolist()) for row in book.values.float()}
    assert {tuple(row.tolist()) for row in model[1].weight.detach().reshape(-1, 2)} <= words


def test_a_pruned_palette_tensor_moved_by_training_stays_pruned_on_its_palette() -> None:
    model, plan = two_layers(), CompressionPlan()
    with torch.no_grad():
        model[0].weight[:, ::2] = 0
    plan.assign(model, "0.weight", Sparse(Palette(2)))
    values = set(plan.entries["0.weight"].state.values.values.float().reshape(-1).tolist())
    with torch.no_grad():
        model[0].weight.add_(0.05)  # training without a mask: pruned weights move too
    plan.refresh(model)
    weight = model[0].weight.detach()
    assert bool((weight[:, ::2] == 0).all()) and set(weight[:, 1::2].reshape(-1).tolist()) <= values
