import numpy as np
import pytest
import torch

from netshrink.errors import FormatError
from netshrink.format.codecs import Dense, Palette, Sparse, decode
from netshrink.format.codecs.sparse import gaps_from_positions, positions_from_gaps


@pytest.mark.parametrize("alphabet", [4, 16, 256])
def test_gap_symbols_round_trip_with_fillers(alphabet):
    rng = np.random.default_rng(0)
    positions = np.sort(rng.choice(100_000, 300, replace=False))
    symbols = gaps_from_positions(positions, alphabet)
    assert symbols.max() < alphabet
    assert np.array_equal(positions_from_gaps(symbols, alphabet), positions)


@pytest.mark.parametrize("density", [0.0, 0.001, 0.1, 0.5, 1.0])
def test_exact_round_trip_of_pruned_tensor(density):
    torch.manual_seed(1)
    w = torch.randn(40, 30, 3) * (torch.rand(40, 30, 3) < density)
    enc = Sparse().encode(w)
    assert torch.equal(decode(enc), w)
    assert enc.nbits() == 8 * sum(enc.bytes_by_kind().values())


def test_sparse_of_palette_keeps_zeros_and_shares_values():
    torch.manual_seed(2)
    w = torch.randn(2000) * (torch.rand(2000) < 0.3)
    _, out = Sparse(Palette(bits=3)).round_trip(w)
    assert torch.equal(out == 0, w == 0)
    assert len(torch.unique(out[out != 0])) <= 8


def test_positions_cost_about_the_mask_entropy():
    torch.manual_seed(3)
    p = 0.1
    w = torch.randn(200_000) * (torch.rand(200_000) < p)
    enc = Sparse(Dense("fp16")).encode(w)
    mask_entropy_bytes = 200_000 * -(p * np.log2(p) + (1 - p) * np.log2(1 - p)) / 8
    assert len(enc.streams["positions"].data) < 1.1 * mask_entropy_bytes


def test_corrupt_counts_are_format_errors():
    enc = Sparse().encode(torch.tensor([0.0, 1.0, 0.0, 2.0]))
    enc.children["values"].shape = (3,)
    with pytest.raises(FormatError):
        decode(enc)
    enc = Sparse().encode(torch.tensor([0.0, 1.0, 0.0, 2.0]))
    enc.params["symbols"] = 10**9
    with pytest.raises(FormatError):
        decode(enc)
