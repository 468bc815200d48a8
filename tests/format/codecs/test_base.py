"""The codec life shared by every codec: `fit` learns the state, `encode(tensor, state)` assigns codes
with it, `decode` rebuilds; a state fitted on one tensor codes another with the same values."""

from __future__ import annotations

import pytest
import torch

from netshrink.errors import CodecError
from netshrink.format.codecs import PQ, Codebook, Dense, LowRank, Palette, Sparse, decode

CODECS = [
    Dense("fp16"),
    Palette(3),
    Palette(2, per_channel=True),
    PQ(d=4, k=8),
    Sparse(Palette(3)),
    LowRank(rank=2, inner=Palette(4)),
]


def pruned(tensor: torch.Tensor) -> torch.Tensor:
    return tensor * (torch.arange(tensor.numel()).reshape(tensor.shape) % 3 != 0)


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.describe())
def test_encode_is_fit_then_assign(codec) -> None:
    weight = pruned(torch.randn(6, 8, generator=torch.Generator().manual_seed(0)))
    assert codec.encode(weight) == codec.encode(weight, codec.fit(weight))  # params, streams, children


@pytest.mark.parametrize("codec", [Palette(3), PQ(d=4, k=8)], ids=lambda c: c.describe())
def test_a_state_codes_another_tensor_with_its_own_values(codec) -> None:
    g = torch.Generator().manual_seed(1)
    weight, moved = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    book = codec.fit(weight)
    enc = codec.encode(moved, book)
    assert enc.state is book and enc.streams["codebook"].data == codec.encode(weight).streams["codebook"].data
    rows = decode(enc).reshape(-1, 4) if isinstance(codec, PQ) else decode(enc).reshape(-1, 1)
    values = book.values.float().reshape(-1, rows.shape[1])
    nearest = torch.cdist(moved.reshape(rows.shape), values).argmin(1)
    assert torch.equal(rows, values[nearest])  # each part: its nearest codeword of the given codebook


def test_sparse_state_keeps_the_pruned_positions() -> None:
    weight = pruned(torch.randn(4, 6, generator=torch.Generator().manual_seed(2)))
    codec = Sparse(Palette(2))
    state = codec.fit(weight)
    moved = weight + 0.01  # every weight nonzero now
    out = decode(codec.encode(moved, state))
    assert torch.equal(out == 0, weight == 0)
    assert set(out[weight != 0].tolist()) <= set(state.values.values.float().reshape(-1).tolist())


def test_codebooks_are_fp16_and_compared_by_identity() -> None:
    values = torch.tensor([[0.1, 2.0], [3.0, -1.0]])
    book = Codebook.fp16(values)
    assert book.values.dtype == torch.float16 and book != Codebook.fp16(values) and book == book
    with pytest.raises(CodecError, match="fp16 range"):
        Codebook.fp16(values * 1e6)
