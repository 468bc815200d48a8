"""1-D k-means of many rows at once: one palette per output channel of a large matrix.

A per-channel palette clusters each row of a weight matrix on its own. Row by row in Python that
costs milliseconds a row, which is minutes for a language model's 49,152-row embedding or the
thousands of rows of its blocks. Here all rows advance together: Deep Compression's "density"
initialisation (the (i + 1/2)/k quantiles of each row, Han et al. 2016, sec. 3.2) and then Lloyd's
iterations, each row's assignment found by `searchsorted` against its centroids' midpoints and its
means by `scatter_add`, until no row's partition changes. Row for row it computes what
`fit_centroids_1d(row, k, init="density")` computes, rows a chunk at a time so the memory stays a
small multiple of the chunk.
"""

from __future__ import annotations

import torch

#: Values clustered together at most (rows x row length), bounding the scratch memory (~100 MB).
CHUNK_VALUES = 1 << 22


def fit_rows_density(rows: torch.Tensor, k: int, max_iter: int = 300) -> torch.Tensor:
    """Centroids (rows, k) float64, sorted in each row, of 1-D k-means on every row of `rows`.

    A row with fewer than k distinct values gets those values, the largest repeated to fill k.
    """
    if rows.dim() != 2 or k < 1:
        raise ValueError(f"rows must be a matrix and k >= 1, got shape {tuple(rows.shape)} and k={k}")
    per_chunk = max(1, CHUNK_VALUES // max(1, rows.shape[1]))
    return (
        torch.cat(
            [_fit_chunk(rows[start : start + per_chunk], k, max_iter) for start in range(0, rows.shape[0], per_chunk)]
        )
        if rows.shape[0]
        else torch.zeros(0, k, dtype=torch.float64)
    )


def _fit_chunk(rows: torch.Tensor, k: int, max_iter: int) -> torch.Tensor:
    x = rows.detach().to(torch.float64).sort(dim=1).values
    n = x.shape[1]
    picks = ((torch.arange(k, dtype=torch.float64) + 0.5) * n / k).long().clamp(max=n - 1)
    centroids = x[:, picks].clone()
    labels = _assign(x, centroids, k)
    active = torch.arange(len(x))  # rows whose partition still changes
    for _ in range(max_iter):
        xs, ls = x[active], labels[active]
        sums = torch.zeros(len(active), k, dtype=x.dtype).scatter_add_(1, ls, xs)
        counts = torch.zeros(len(active), k, dtype=x.dtype).scatter_add_(1, ls, torch.ones_like(xs))
        centroids[active] = torch.where(counts > 0, sums / counts.clamp(min=1), centroids[active])
        new = _assign(xs, centroids[active], k)
        changed = (new != ls).any(1)
        labels[active] = new
        active = active[changed]
        if not len(active):
            break
    return _few_distinct(x, centroids, k)


def _assign(x: torch.Tensor, centroids: torch.Tensor, k: int) -> torch.Tensor:
    """Each sorted value's nearest centroid (ties to the lower), by the midpoints between centroids."""
    if k == 1:
        return torch.zeros_like(x, dtype=torch.long)
    return torch.searchsorted((centroids[:, 1:] + centroids[:, :-1]) / 2, x)


def _few_distinct(x: torch.Tensor, centroids: torch.Tensor, k: int) -> torch.Tensor:
    """Rows with at most k distinct values: exactly those values (padded with the largest)."""
    distinct = torch.ones_like(x, dtype=torch.bool)
    distinct[:, 1:] = x[:, 1:] != x[:, :-1]
    few = distinct.sum(1) <= k
    for row in torch.nonzero(few).flatten().tolist():
        values = x[row][distinct[row]]
        centroids[row] = torch.cat([values, values[-1:].expand(k - len(values))])
    return centroids


__all__ = ["fit_rows_density"]
