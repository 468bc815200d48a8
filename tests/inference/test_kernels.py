"""The products and row decoders of `netshrink.inference.kernels`, numba and pure torch, against
the dense matrix the codes decode to: few rows (look-up tables), many rows (tiles), odd widths."""

from __future__ import annotations

import pytest
import torch

from netshrink.inference import CompressedEmbedding, CompressedLinear, kernels
from netshrink.inference.weights import PaletteWeights, PQWeights

ROWS, COLUMNS = 300, 45  # more rows than a tile; an odd width (a padded nibble per row)


def palette(k: int, rows_per_book: int) -> PaletteWeights:
    g = torch.Generator().manual_seed(k)
    labels = torch.randint(0, k, (ROWS, COLUMNS), generator=g)
    packed = kernels.pack_nibbles(labels) if k <= 16 else kernels.pack_bytes(labels)
    return PaletteWeights(packed, torch.randn(ROWS // rows_per_book, k, generator=g), rows_per_book, COLUMNS)


def pq(k: int, d: int) -> PQWeights:
    g = torch.Generator().manual_seed(k + d)
    return PQWeights(torch.randint(0, k, (ROWS, COLUMNS // d), generator=g, dtype=torch.uint8), torch.randn(k, d))


def dense_of(weights) -> torch.Tensor:
    """The dense matrix, decoded the simplest way (no kernel)."""
    if isinstance(weights, PQWeights):
        return weights.codebook[weights.labels.long()].reshape(ROWS, COLUMNS)
    k = weights.codebook.shape[1]
    labels = kernels.unpack_nibbles(weights.indices) if k <= 16 else weights.indices.long()
    books = weights.codebook.repeat_interleave(weights.rows_per_book, dim=0)
    return books.gather(1, labels[:, :COLUMNS])


STORAGES = {
    "palette 4 values per tensor": lambda: palette(4, ROWS),
    "palette 16 values per channel": lambda: palette(16, 1),
    "palette 8 values per 2 channels": lambda: palette(8, 2),
    "palette 200 values per 3 channels": lambda: palette(200, 3),
    "pq d=3 k=256": lambda: pq(256, 3),
    "pq d=5 k=7": lambda: pq(7, 5),
}


@pytest.fixture(params=[True, False], ids=["numba", "torch"])
def with_numba(request, monkeypatch):
    if request.param and not kernels.NUMBA:
        pytest.skip("numba is not installed")
    monkeypatch.setattr(kernels, "NUMBA", request.param)


@pytest.mark.parametrize("name", STORAGES)
@pytest.mark.parametrize("batch", [1, kernels.SMALL_BATCH, 50])
def test_a_compressed_linear_computes_the_dense_product(name, batch, with_numba):
    weights = STORAGES[name]()
    bias = torch.nn.Parameter(torch.randn(ROWS))
    x = torch.randn(batch, COLUMNS, generator=torch.Generator().manual_seed(batch))
    expected = torch.nn.functional.linear(x, dense_of(weights), bias)
    torch.testing.assert_close(CompressedLinear(weights, bias)(x), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", STORAGES)
def test_an_embedding_decodes_only_the_rows_asked_for(name, with_numba):
    weights = STORAGES[name]()
    ids = torch.tensor([[5, 0, 299], [7, 7, 150]])
    torch.testing.assert_close(CompressedEmbedding(weights)(ids), dense_of(weights)[ids])


def test_an_id_outside_the_table_is_an_index_error():
    with pytest.raises(IndexError, match=r"outside 0\.\.299"):
        CompressedEmbedding(palette(4, ROWS))(torch.tensor([300]))


def test_half_precision_inputs_come_back_in_their_dtype():
    weights = palette(16, 1)
    x = torch.randn(2, COLUMNS).to(torch.bfloat16)
    out = CompressedLinear(weights)(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), x.float() @ dense_of(weights).t(), rtol=2e-2, atol=2e-2)
