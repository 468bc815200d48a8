"""Many rows' 1-D k-means at once equals each row's own density-initialised k-means."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from netshrink.cluster.kmeans1d import fit_centroids_1d
from netshrink.cluster.rows1d import fit_rows_density
from netshrink.format.codecs import Palette


@pytest.mark.parametrize("k", [1, 2, 8, 16])
def test_rows_together_equal_rows_one_by_one(k):
    torch.manual_seed(k)
    rows = torch.randn(40, 200) * torch.rand(40, 1) + torch.randn(40, 1)
    together = fit_rows_density(rows, k).numpy()
    for row, centroids in zip(rows, together):
        assert np.allclose(centroids, fit_centroids_1d(row.numpy(), k, init="density"), rtol=0, atol=1e-12)


def test_a_row_with_few_values_gets_exactly_them():
    rows = torch.tensor([[0.5, -1.0, 0.5, 2.0] * 10, list(np.linspace(-1, 1, 40))])
    centroids = fit_rows_density(rows, 8)
    assert centroids[0].tolist() == [-1.0, 0.5, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]
    assert len(torch.unique(centroids[1])) == 8


def test_a_per_channel_palette_fits_rows_as_its_row_loop_does():
    torch.manual_seed(0)
    weight = torch.randn(64, 96)
    palette = Palette(3, per_channel=True, init="density")
    books = palette.fit(weight).values
    for row, book in zip(weight, books):
        assert torch.equal(book, torch.from_numpy(palette._cluster_row(row.numpy(), 8)))
