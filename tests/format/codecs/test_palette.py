import numpy as np
import pytest
import torch

from netshrink.errors import CodecError, FormatError
from netshrink.format.codecs import Palette, decode
from netshrink.format.entropy import empirical_entropy_bits


def test_at_most_2_pow_bits_fp16_values_and_nearest_assignment():
    torch.manual_seed(0)
    w = torch.randn(64, 32, 3, 3) * 0.05
    codec = Palette(bits=4)
    enc, out = codec.round_trip(w)
    values = torch.unique(out)
    assert len(values) <= 16
    assert torch.equal(values.half().float(), values)  # codebook is fp16
    # every weight sits on its nearest codebook value
    dist = (w.reshape(-1, 1) - values.reshape(1, -1)).abs()
    assert torch.equal(dist.min(1).values, (w.reshape(-1) - out.reshape(-1)).abs())


def test_error_is_bounded_and_shrinks_with_bits():
    w = torch.randn(20000)
    errors = [float(((Palette(bits=b).round_trip(w)[1] - w) ** 2).mean()) for b in (2, 4, 6)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-3 * float((w**2).mean()) * 10  # 64 levels of a Gaussian: ~1e-3 relative


def test_idempotent_on_already_shared_weights():
    w = torch.randn(5000)
    _, once = Palette(bits=5).round_trip(w)
    _, twice = Palette(bits=5).round_trip(once)
    assert torch.equal(once, twice)


def test_indices_are_entropy_coded_below_fixed_width():
    w = torch.randn(100_000) * 0.01
    enc = Palette(bits=5).encode(w)
    index_bytes = len(enc.streams["indices"].data)
    assert index_bytes < 100_000 * 5 / 8  # skewed histogram of a Gaussian: fewer than 5 bits
    labels = np.searchsorted(np.unique(decode(enc).numpy()), decode(enc).numpy())
    assert index_bytes * 8 <= empirical_entropy_bits(labels) * 1.01 + 400


def test_per_channel_has_a_codebook_per_row():
    w = torch.randn(8, 50) * torch.arange(1, 9).reshape(8, 1)
    enc, out = Palette(bits=2, per_channel=True).round_trip(w)
    assert len(enc.streams["codebook"].data) == 8 * 4 * 2
    for row in out:
        assert len(torch.unique(row)) <= 4
    per_tensor_err = float(((Palette(bits=2).round_trip(w)[1] - w) ** 2).sum())
    assert float(((out - w) ** 2).sum()) < per_tensor_err


def test_grouped_palettes_share_values_between_consecutive_channels_and_decode_as_stored():
    w = torch.randn(8, 50) * torch.arange(1, 9).reshape(8, 1)
    enc, out = Palette(bits=2, per_channel=True, group=2).round_trip(w)
    assert len(enc.streams["codebook"].data) == 4 * 4 * 2  # 4 palettes of 4 fp16 values
    for pair in out.reshape(4, 100):
        assert len(torch.unique(pair)) <= 4
    assert Palette(bits=2, per_channel=True, group=2).describe() == "palette2cg2"
    per_row = float(((Palette(bits=2, per_channel=True).round_trip(w)[1] - w) ** 2).sum())
    per_tensor = float(((Palette(bits=2).round_trip(w)[1] - w) ** 2).sum())
    assert per_row <= float(((out - w) ** 2).sum()) < per_tensor
    with pytest.raises(CodecError, match="does not divide"):
        Palette(bits=2, per_channel=True, group=3).encode(w)
    with pytest.raises(CodecError, match="group"):
        Palette(bits=2, group=2)


def test_tiny_rows_and_constant_tensor():
    w = torch.tensor([[0.5, -0.25, 0.5], [1.0, 1.0, 1.0]])
    assert torch.equal(Palette(bits=3, per_channel=True).round_trip(w)[1], w)
    assert torch.equal(Palette(bits=1).round_trip(torch.full((10,), 0.125))[1], torch.full((10,), 0.125))


def test_bad_settings_and_corrupt_params():
    with pytest.raises(CodecError):
        Palette(bits=0)
    with pytest.raises(CodecError):
        Palette(bits=4, init="kmeans++")
    with pytest.raises(CodecError, match="NaN"):
        Palette(bits=4).encode(torch.tensor([1.0, float("nan")]))
    enc = Palette(bits=3).encode(torch.randn(100))
    enc.params["bits"] = 40
    with pytest.raises(FormatError, match="bits"):
        decode(enc)


def test_short_rows_store_no_more_entries_than_weights_and_are_exact_to_fp16():
    w = torch.randn(40, 1, 3, 3)  # a depthwise 3x3 layer: 9 weights per channel
    enc = Palette(bits=5, per_channel=True).encode(w)
    assert enc.params["book"] == 9
    assert len(enc.streams["codebook"].data) == 40 * 9 * 2
    assert torch.equal(Palette.decode(enc), w.half().float())
