"""PQ codec: exact storage of given codewords, agreement with k-means, layouts, file sizes, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from netshrink.cluster import kmeans
from netshrink.errors import CodecError, FormatError
from netshrink.format.codecs import PQ, decode
from netshrink.format.codecs.pq import from_subvectors, subvectors
from netshrink.format.container import NskFile, TensorRecord, parse, serialize
from netshrink.format.entropy import decode_symbols


def conv_weight(seed: int = 0) -> torch.Tensor:
    """A small conv weight whose kernels come from a few shapes, as trained kernels tend to."""
    gen = torch.Generator().manual_seed(seed)
    shapes = torch.randn(6, 3, 3, generator=gen) * 0.1
    which = torch.randint(6, (16, 8), generator=gen)
    return shapes[which] + 0.01 * torch.randn(16, 8, 3, 3, generator=gen)


def stored_codebook_and_labels(enc) -> tuple[torch.Tensor, torch.Tensor]:
    k, d = enc.params["k"], enc.params["d"]
    book = torch.from_numpy(np.frombuffer(enc.streams["codebook"].data, dtype="<f2").copy()).float()
    labels = decode_symbols(enc.streams["indices"].data, enc.numel // d, k)
    return book.reshape(k, d), torch.from_numpy(labels)


def test_encode_assigned_round_trips_exactly():
    gen = torch.Generator().manual_seed(1)
    codebook = torch.randn(32, 6, generator=gen).half().float()  # fp16-representable: stored exactly
    labels = torch.randint(32, (40 * 12 // 6,), generator=gen)
    enc = PQ.encode_assigned(codebook, labels, (40, 12))
    assert torch.equal(decode(enc), codebook[labels].reshape(40, 12))
    assert enc.describe() == "pq d=6 k=32"


def test_decode_is_codebook_at_labels_and_no_worse_than_kmeans():
    w = conv_weight()
    codec = PQ(d=9, k=8)
    enc, out = codec.round_trip(w)
    book, labels = stored_codebook_and_labels(enc)
    assert torch.equal(out, from_subvectors(book[labels], w.shape))
    vectors = subvectors(w, 9)
    result = kmeans(vectors, 8)
    error = float(((out - w).double() ** 2).sum())
    # Re-assigning to the fp16-rounded codewords can only beat keeping k-means' labels with them ...
    assert error <= float(((vectors - result.centroids.half().float()[result.labels]).double() ** 2).sum())
    # ... and fp16 rounding of the codewords costs at most a hair over the fp32 k-means optimum.
    assert error <= result.sse * 1.001


@pytest.mark.parametrize("d, count", [(3, 16 * 8 * 3), (9, 16 * 8), (18, 16 * 4)])
def test_conv_layouts_rows_kernels_and_kernel_pairs(d, count):
    w = conv_weight()
    vectors = subvectors(w, d)
    assert vectors.shape == (count, d)
    if d == 3:
        assert torch.equal(vectors[1], w[0, 0, 1])  # one kernel row (Deep k-Means)
    if d == 9:
        assert torch.equal(vectors[8 + 2], w[1, 2].flatten())  # one whole kernel
    if d == 18:
        assert torch.equal(vectors[1], torch.cat([w[0, 2].flatten(), w[0, 3].flatten()]))  # neighbours
    assert torch.equal(from_subvectors(vectors, w.shape), w)


def test_linear_weight_cuts_along_the_input():
    w = torch.arange(24.0).reshape(3, 8)
    assert torch.equal(subvectors(w, 4)[1], w[0, 4:])
    enc, out = PQ(d=4, k=256).round_trip(w)
    assert enc.params["k"] == 6  # k is capped at the number of sub-vectors ...
    assert torch.equal(out, w)  # ... so each keeps its own (fp16-exact) codeword


def test_deterministic_bytes_and_nbits_match_the_file():
    w = conv_weight(seed=3)
    first, second = PQ(d=9, k=16).encode(w), PQ(d=9, k=16).encode(w)
    assert first.streams == second.streams and first.params == second.params
    nsk = NskFile([TensorRecord("conv.weight", first, "Conv2d")])
    data = serialize(nsk)
    assert first.nbits() == 8 * (len(data) - nsk.header_bytes)
    assert first.nbits() == 8 * (16 * 9 * 2 + len(first.streams["indices"].data))
    assert torch.equal(decode(parse(data).tensors[0].encoded), decode(first))


def test_empty_tensor_round_trips():
    enc, out = PQ(d=9).round_trip(torch.zeros(0, 4, 3, 3))
    assert out.shape == (0, 4, 3, 3) and enc.params["k"] == 0 and enc.nbits() == 8


def test_bad_d_lists_the_values_that_work():
    with pytest.raises(CodecError, match=r"d in \{1, 3, 9, 27\}"):
        PQ(d=5).encode(torch.randn(4, 3, 3, 3))
    with pytest.raises(CodecError, match="scalar"):
        PQ(d=1).encode(torch.tensor(1.0))
    with pytest.raises(CodecError, match="does not divide"):
        subvectors(torch.randn(4, 6), 4)


@pytest.mark.parametrize("kwargs", [{"d": 0}, {"d": 3, "k": 0}, {"d": 3, "k": True}, {"d": 3, "iters": -1}])
def test_bad_settings_are_codec_errors(kwargs):
    with pytest.raises(CodecError):
        PQ(**kwargs)


def test_bad_assigned_inputs_are_codec_errors():
    book = torch.randn(4, 3)
    with pytest.raises(CodecError, match="labels must index"):
        PQ.encode_assigned(book, torch.tensor([0, 4]), (2, 3))
    with pytest.raises(CodecError, match="2 labels for 4"):
        PQ.encode_assigned(book, torch.tensor([0, 1]), (4, 3))
    with pytest.raises(CodecError, match="fp16 range"):
        PQ.encode_assigned(book * 1e6, torch.tensor([0, 1]), (2, 3))
    with pytest.raises(CodecError, match="NaN"):
        PQ(d=1).encode(torch.tensor([1.0, float("inf")]))


@pytest.mark.parametrize(
    "params, match",
    [
        ({"k": 10**9}, "'k'"),
        ({"k": 0}, "'k'"),
        ({"d": 0}, "'d'"),
        ({"d": 5}, "does not divide"),
        ({"d": "9"}, "'d'"),
        ({"k": 2}, "dense stream"),  # codebook bytes no longer match k x d
    ],
)
def test_corrupt_params_are_format_errors(params, match):
    enc = PQ(d=9, k=4).encode(conv_weight())
    enc.params.update(params)
    with pytest.raises(FormatError, match=match):
        decode(enc)


def test_truncated_streams_are_format_errors():
    enc = PQ(d=9, k=4).encode(conv_weight())
    enc.streams["indices"] = type(enc.streams["indices"])("indices", enc.streams["indices"].data[:-3])
    with pytest.raises(FormatError):
        decode(enc)
    del enc.streams["codebook"]
    with pytest.raises(FormatError, match="codebook"):
        decode(enc)
