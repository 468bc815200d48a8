"""Lloyd's iteration for the vector k-means of `netshrink.cluster.kmeans`: assignment and update.

Points are scored block by block, `chunk` points per torch.mm, so memory stays O(chunk * k) and no
n x k matrix is ever built. Three choices make a pass about as fast as faiss's fused kernel on CPU
(benchmarks/vector_kmeans.py):

* one mm of [x, 1] with [c, -||c||^2 / 2] gives x.c - ||c||^2 / 2 = (||x||^2 - ||x - c||^2) / 2,
  largest for the nearest centroid: no separate bias pass over the block;
* the row maxima come from the vectorised `amax`; `max(dim=1)`'s slow index search runs only on
  the rows whose previous label no longer attains the maximum (a few percent after a few passes);
* each core runs one contiguous part of the points single-threaded: an OpenMP region per
  1024-point block made the mm ~100x slower on a loaded, shared 2-core machine (every barrier
  waits for a descheduled thread). Torch's thread count is restored afterwards.

Centroid sums are accumulated in fixed blocks in point order, so the result does not depend on
`chunk`. (Hamerly's 2010 bounds were tried: with K=256 centroids drifting unevenly they left
~60 % of the points to rescore and cost more than they saved.)

The functions take checked, contiguous float32 points; `netshrink.cluster.kmeans` checks them and
holds the public API. This module imports nothing from it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import torch

#: Rows per block of the centroid sums (float32 within a block, float64 across blocks: 2x faster
#: than all-float64) and of the exact errors; fixed, so results never depend on `chunk`.
_SUM_BLOCK = 1 << 16

#: Fewer points than this per core are not worth a thread.
_MIN_POINTS_PER_WORKER = 1 << 15


# ----------------------------------------------------------------------------- Lloyd


def lloyd(
    points: torch.Tensor, centroids: torch.Tensor, iters: int, chunk: int, workers: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Up to `iters` update + assignment rounds; returns centroids, labels, updates made."""
    lifted = lifted_points(points)
    labels = nearest(lifted, centroids, chunk, workers)
    for iteration in range(1, iters + 1):
        centroids = _updated_centroids(points, centroids, labels)
        moved, labels = labels, nearest(lifted, centroids, chunk, workers, guess=labels)
        if torch.equal(moved, labels):
            return centroids, labels, iteration  # a fixed point: the centroids are their clusters' means
    return centroids, labels, iters


# ----------------------------------------------------------------------------- assignment


def lifted_points(points: torch.Tensor) -> torch.Tensor:
    """[x, 1] per row, the left factor of the scoring mm (see the module doc)."""
    return torch.cat([points, torch.ones(points.shape[0], 1)], 1)


def nearest(
    lifted: torch.Tensor, centroids: torch.Tensor, chunk: int, workers: int, guess: torch.Tensor | None = None
) -> torch.Tensor:
    """Index of each point's nearest centroid (without a guess, ties go to the lowest index).

    With `guess` (each point's previous label) a pass only takes row maxima and the guess's score;
    just the rows where the guess no longer attains the maximum are searched.
    """
    if guess is None:
        return _nearest_by_search(lifted, centroids, chunk, workers)
    book = _scoring_book(centroids)
    best, at_guess = torch.empty(lifted.shape[0]), torch.empty(lifted.shape[0])

    def score_part(start: int, end: int) -> None:
        for first, scores in _score_blocks(lifted, book, start, end, chunk):
            last = first + scores.shape[0]
            torch.amax(scores, 1, out=best[first:last])
            torch.gather(scores, 1, guess[first:last, None], out=at_guess[first:last, None])

    _run_in_parts(lifted.shape[0], workers, score_part)
    labels = guess.clone()
    moved = (at_guess != best).nonzero().squeeze(1)
    labels[moved] = _nearest_by_search(lifted[moved], centroids, chunk, workers)
    return labels


def _nearest_by_search(lifted: torch.Tensor, centroids: torch.Tensor, chunk: int, workers: int) -> torch.Tensor:
    book = _scoring_book(centroids)
    labels = torch.empty(lifted.shape[0], dtype=torch.int64)

    def search_part(start: int, end: int) -> None:
        for first, scores in _score_blocks(lifted, book, start, end, chunk):
            labels[first : first + scores.shape[0]] = scores.max(1).indices  # ~2x faster than argmax

    _run_in_parts(lifted.shape[0], workers, search_part)
    return labels


def _scoring_book(centroids: torch.Tensor) -> torch.Tensor:
    """[d + 1, k]: the right factor [c, -||c||^2 / 2]^T of the scoring mm."""
    half_norms = -0.5 * (centroids * centroids).sum(1, keepdim=True)
    return torch.cat([centroids, half_norms], 1).t().contiguous()


def _score_blocks(
    lifted: torch.Tensor, book: torch.Tensor, start: int, end: int, chunk: int
) -> Iterator[tuple[int, torch.Tensor]]:
    """(first row, scores [rows, k]) for the blocks of rows [start, end). The block buffer is
    reused, so consume each block before asking for the next."""
    buffer = torch.empty(min(chunk, max(end - start, 0)), book.shape[1])
    for first in range(start, end, chunk):
        rows = lifted[first : min(first + chunk, end)]
        yield first, torch.mm(rows, book, out=buffer[: rows.shape[0]])


@contextmanager
def one_thread_per_part() -> Iterator[int]:
    """Make torch ops single-threaded for the duration; yield the former thread count, which
    `_run_in_parts` uses as its number of parts instead (see the module doc)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield threads
    finally:
        torch.set_num_threads(threads)


def _run_in_parts(n: int, workers: int, work: Callable[[int, int], None]) -> None:
    """work(start, end) over contiguous parts of range(n), one thread each (torch ops release the GIL)."""
    parts = max(1, min(workers, n // _MIN_POINTS_PER_WORKER))
    bounds = [n * i // parts for i in range(parts + 1)]
    if parts == 1:
        work(0, n)
        return
    with ThreadPoolExecutor(parts) as pool:
        list(pool.map(work, bounds[:-1], bounds[1:]))  # list() re-raises a worker's exception


# ----------------------------------------------------------------------------- update


def _updated_centroids(points: torch.Tensor, centroids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Means of the clusters; an empty cluster is re-seeded at one of the worst-served points."""
    k = centroids.shape[0]
    counts = torch.bincount(labels, minlength=k)
    sums, block = torch.zeros(k, points.shape[1], dtype=torch.float64), torch.empty(k, points.shape[1])
    for start in range(0, points.shape[0], _SUM_BLOCK):  # fixed blocks, in point order: chunk-independent
        block.zero_().index_add_(0, labels[start : start + _SUM_BLOCK], points[start : start + _SUM_BLOCK])
        sums += block
    means = (sums / counts.clamp(min=1)[:, None]).float()
    empty = (counts == 0).nonzero().squeeze(1)
    if empty.numel():
        # The points farthest from their centroid gain most from one of their own (faiss splits a
        # big cluster instead); topk is deterministic, so the run stays reproducible.
        worst = torch.topk(_squared_errors(points, centroids, labels), empty.numel()).indices
        means[empty] = points[worst]
    return means


def _squared_errors(points: torch.Tensor, centroids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """||x - c[label]||^2 per point (float64), from the differences, block by block."""
    errors = torch.empty(points.shape[0], dtype=torch.float64)
    for start in range(0, points.shape[0], _SUM_BLOCK):
        diff = points[start : start + _SUM_BLOCK] - centroids[labels[start : start + _SUM_BLOCK]]
        errors[start : start + _SUM_BLOCK] = (diff.double() ** 2).sum(1)
    return errors


def exact_sse(points: torch.Tensor, centroids: torch.Tensor, labels: torch.Tensor) -> float:
    """Sum of ||x - c[label]||^2 from the differences, not the cancellation-prone expanded form."""
    return float(_squared_errors(points, centroids, labels).sum())
