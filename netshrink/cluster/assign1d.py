"""Assigning scalars to their nearest 1-D centroid, for any number of scalars in bounded memory.

With sorted centroids the nearest one is found by searching among the midpoints; for many points a
lookup table over equal-width cells answers most of them in O(1). Points are labelled a chunk at a
time, so the temporaries stay small whatever the tensor's size.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from netshrink.errors import CodecError

#: Below this many points `assign_nearest_1d` uses a plain searchsorted (no lookup table).
_TABLE_MIN_POINTS = 1 << 16
#: Points `assign_nearest_1d` labels at a time, so its temporaries stay small for any tensor.
_CHUNK = 1 << 20


def as_flat_array(x: Any, name: str = "x") -> np.ndarray:
    """Flatten numpy / torch / array-like input to a 1-D real float array, without copying float32/64."""
    if hasattr(x, "detach") and type(x).__module__.startswith("torch"):
        x = x.detach().cpu()
        if not x.dtype.is_floating_point or x.dtype.itemsize < 4:
            x = x.float()  # float16/bfloat16/int tensors: numpy lacks bfloat16
        x = x.numpy()
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiub":
        raise CodecError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.dtype.kind != "f" or arr.dtype.itemsize < 4:
        arr = arr.astype(np.float64)
    return arr.reshape(-1)


def assign_nearest_1d(x: Any, centroids_sorted: Any) -> np.ndarray:
    """Index (int64) of the nearest centroid for every scalar of x; ties go to the lower index.

    With sorted centroids the nearest one is found by searching x among the midpoints. For large x
    an equal-width lookup table answers most points in O(1) and searches only near midpoints.
    """
    arr = as_flat_array(x)
    c = as_flat_array(centroids_sorted, "centroids_sorted").astype(np.float64, copy=False)
    if not (np.isfinite(arr).all() and np.isfinite(c).all()):
        raise CodecError("assign_nearest_1d got NaN/inf in x or the centroids; clean them first")
    if c.size == 0:
        raise CodecError("assign_nearest_1d needs at least one centroid")
    if np.any(np.diff(c) < 0):
        raise CodecError("assign_nearest_1d needs centroids sorted ascending; sort them first")
    mids = (c[1:] + c[:-1]) / 2
    if arr.size < _TABLE_MIN_POINTS or c.size == 1:
        return np.searchsorted(mids, arr, side="left").astype(np.int64)
    table = _VoronoiTable.of(mids)
    labels = np.empty(arr.size, dtype=np.int64)
    for start in range(0, arr.size, _CHUNK):  # temporaries of one chunk, not of the whole tensor
        part = arr[start : start + _CHUNK]
        labels[start : start + part.size] = (
            np.searchsorted(mids, part, side="left") if table is None else table.labels(part)
        )
    return labels


class _VoronoiTable:
    """Nearest-centroid labels via a table over 2^20 equal-width cells of [mids[0], mids[-1]].

    A cell whose range, widened by one cell each side against rounding, holds no midpoint lies in
    one Voronoi cell, so its label is looked up; points in the other cells (a few % for heavy
    tails at K=256) are searched. Points outside the range clip to the end cells (labels 0, k-1).
    """

    N_CELLS = 1 << 20

    def __init__(self, mids: np.ndarray, lo: float, scale: float) -> None:
        self.mids, self.lo, self.scale = mids, lo, scale
        cell_of_mid = np.floor((mids - lo) * scale).astype(np.int64) + 2  # +2: cells -2.. are stored from 0
        self.ambiguous = np.zeros(self.N_CELLS + 5, dtype=bool)
        for shift in (-1, 0, 1):
            self.ambiguous[np.clip(cell_of_mid + shift, 0, self.N_CELLS + 4)] = True
        centres = lo + (np.arange(self.N_CELLS + 5) - 1.5) / scale
        self.table = np.searchsorted(mids, centres, side="left").astype(np.int64)

    @classmethod
    def of(cls, mids: np.ndarray) -> _VoronoiTable | None:
        """The table for these midpoints, or None when its cells would fall below float64 resolution."""
        lo, hi = float(mids[0]), float(mids[-1])
        scale = cls.N_CELLS / (hi - lo) if hi > lo else 0.0
        if not np.isfinite(scale) or scale * max(abs(lo), abs(hi)) > 1e12:
            return None
        return cls(mids, lo, scale)

    def labels(self, arr: np.ndarray) -> np.ndarray:
        cells = np.subtract(arr, np.float64(self.lo))
        cells *= self.scale
        cells += 2
        np.clip(cells, 0, self.N_CELLS + 4, out=cells)
        cells = cells.astype(np.int64)  # non-negative, so truncation is floor
        labels = self.table[cells]
        fix = np.flatnonzero(self.ambiguous[cells])
        labels[fix] = np.searchsorted(self.mids, arr[fix], side="left")
        return labels
