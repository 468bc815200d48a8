import pytest
import torch

from netshrink.errors import CodecError
from netshrink.format.codecs import Dense, LowRank, Palette, decode
from netshrink.format.codecs.lowrank import rank_for_energy


def test_exact_for_low_rank_matrix_and_sizes():
    torch.manual_seed(0)
    w = torch.randn(60, 5) @ torch.randn(5, 40)
    enc, out = LowRank(rank=5).round_trip(w)
    assert torch.allclose(out, w, atol=1e-4)
    assert enc.nbits() == 32 * 5 * (60 + 40)


def test_truncation_error_is_the_tail_singular_values():
    torch.manual_seed(1)
    w = torch.randn(50, 30)
    s = torch.linalg.svdvals(w.double())
    _, out = LowRank(rank=10).round_trip(w)
    assert abs(float(torch.linalg.norm(out - w)) - float(s[10:].norm())) < 1e-3


def test_energy_picks_smallest_rank():
    s = torch.tensor([3.0, 2.0, 1.0])  # energies 9, 4, 1 of 14
    assert rank_for_energy(s, 9 / 14) == 1
    assert rank_for_energy(s, 0.9) == 2
    assert rank_for_energy(s, 1.0) == 3


def test_conv_weight_and_nested_inner_codec():
    w = torch.randn(16, 8, 3, 3)
    enc = LowRank(rank=4, inner=Palette(bits=4)).encode(w)
    out = decode(enc)
    assert out.shape == w.shape
    assert enc.children["u"].codec == "palette"


def test_bad_settings():
    with pytest.raises(CodecError):
        LowRank()
    with pytest.raises(CodecError):
        LowRank(rank=2, energy=0.5)
    with pytest.raises(CodecError):
        LowRank(rank=2).encode(torch.randn(10))
    with pytest.raises(CodecError):
        LowRank(energy=1.5, inner=Dense())
