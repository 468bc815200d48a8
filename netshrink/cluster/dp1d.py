"""Exact k-means of sorted, weighted 1-D points by dynamic programming.

The optimal clusters of sorted scalars are contiguous runs, so the optimum is a DP over prefixes
(Bellman 1973; Wang & Song 2011, "Ckmeans.1d.dp"):

    D[c][i] = min_{j < i} D[c-1][j] + cost(j, i)          (cost = SSE of sorted points j..i-1)

Its argmin is monotone in i, so each layer is solved by divide and conquer in O(B log B)
(Grønlund et al. 2017, sec. 2.2), vectorised over all sub-problems of one recursion level so numpy
runs O(K log B) calls instead of Python running O(K B) of them. Used by `kmeans1d`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["optimal_partition"]


class _PrefixSums:
    """Prefix sums of w, w*x, w*x^2 over sorted weighted points: any run's SSE in O(1).

    SSE(j, i) of points j..i-1 is S2[i] - S2[j] - (S1[i] - S1[j])^2 / (W[i] - W[j]); the data are
    centred first, so the float64 differences do not cancel catastrophically.
    """

    def __init__(self, points: np.ndarray, weights: np.ndarray) -> None:
        centred = points - np.average(points, weights=weights)
        self.w, self.s1, self.s2 = (
            np.concatenate(([0.0], np.cumsum(v))) for v in (weights, weights * centred, weights * centred**2)
        )

    def cost(self, j: np.ndarray, i: np.ndarray) -> np.ndarray:
        """SSE of the runs j..i-1 (elementwise, j < i)."""
        s1 = self.s1[i] - self.s1[j]
        return self.s2[i] - self.s2[j] - s1 * s1 / (self.w[i] - self.w[j])


def _segment_argmin(val: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Position of the first minimum of each contiguous segment of val (segments start at starts)."""
    hits = np.flatnonzero(val == np.repeat(np.minimum.reduceat(val, starts), lens))
    return hits[np.searchsorted(hits, starts)]


def _dp_layer(
    prev: np.ndarray, prev_arg: np.ndarray, pre: _PrefixSums, c: int, i_hi: int
) -> tuple[np.ndarray, np.ndarray]:
    """One DP layer D[c][i], i in [c, i_hi], by monotone-argmin divide and conquer.

    All sub-problems (i-range, j-range) of one recursion level are evaluated in one flat batch;
    the leftmost argmin is monotone in i, so children get j-ranges split at it (Grønlund et al.
    2017, sec. 2.2), and it is at least the previous layer's argmin at the same i (their sec. 2.3,
    the Knuth-Yao bound), which shrinks the wide ranges of the first levels to one cluster's width.
    S2[i] is constant in a sub-problem, so the argmin is taken without it and it is added after.
    """
    cur = np.full(prev.size, np.inf)
    arg = np.zeros(prev.size, dtype=np.int64)
    base = prev - pre.s2  # D[c-1][j] - S2[j]
    ilo, ihi = np.array([c]), np.array([i_hi])
    jlo, jhi = np.array([c - 1]), np.array([i_hi - 1])
    while ilo.size:
        mid = (ilo + ihi) // 2
        top = np.minimum(jhi, mid - 1)
        low = np.minimum(np.maximum(jlo, prev_arg[mid]), top)
        lens = top - low + 1
        starts = np.cumsum(lens) - lens
        j = np.arange(int(starts[-1] + lens[-1])) + np.repeat(low - starts, lens)
        s1 = np.repeat(pre.s1[mid], lens) - pre.s1[j]
        val = base[j] - s1 * s1 / (np.repeat(pre.w[mid], lens) - pre.w[j])
        first = _segment_argmin(val, starts, lens)
        opt = j[first]
        cur[mid], arg[mid] = val[first] + pre.s2[mid], opt
        left, right = ilo < mid, mid < ihi
        ilo = np.concatenate((ilo[left], mid[right] + 1))
        ihi = np.concatenate((mid[left] - 1, ihi[right]))
        jlo = np.concatenate((jlo[left], opt[right]))
        jhi = np.concatenate((opt[left], jhi[right]))
    return cur, arg


def optimal_partition(points: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    """Exact k-means of sorted weighted points: run boundaries b, cluster c = points[b[c]:b[c+1]].

    Requires k <= len(points). O(k B log B) time, k*B int64 memory for the backtrack table.
    """
    b = points.size
    pre = _PrefixSums(points, weights)
    d = np.concatenate(([np.inf], pre.cost(np.zeros(b, dtype=np.int64), np.arange(1, b + 1))))
    args = np.zeros((k, b + 1), dtype=np.int64)
    for c in range(2, k + 1):
        # Layer c is only needed at i <= b - (k - c): the remaining k - c clusters need a point each.
        d, args[c - 1] = _dp_layer(d, args[c - 2], pre, c, b - (k - c))
    bounds = np.zeros(k + 1, dtype=np.int64)
    bounds[k] = b
    for c in range(k - 1, 0, -1):
        bounds[c] = args[c][bounds[c + 1]]
    return bounds
