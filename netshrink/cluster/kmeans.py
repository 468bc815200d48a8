"""Vector k-means in plain torch, for product quantization (Deep k-Means; Stock et al. 2020).

Lloyd's algorithm (Lloyd 1982) from a greedy k-means++ start (Arthur & Vassilvitskii 2007; the
2 + ln k candidate trials of scikit-learn). This module holds the public functions, the checks on
their arguments, and the k-means++ start; the Lloyd iteration itself
(blocked scoring, threads, the centroid update, the exact SSE) is in `netshrink.cluster.lloyd`, kept
apart because its speed tricks are a subject of their own and it needs nothing from here.

k >= n is answered with each point its own centroid: the result then has n centroids, not k (a
padded codebook would only cost bytes). Everything is deterministic for a fixed `seed` and
thread count.

`netshrink.cluster.metric` runs the same iteration in a metric per group of points (output-aware PQ).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from netshrink.cluster.lloyd import exact_sse, lifted_points, lloyd, nearest, one_thread_per_part
from netshrink.errors import CodecError

__all__ = [
    "KMeansResult",
    "kmeans",
    "assign_nearest",
    "INITS",
]

INITS = ("kmeans++", "random")

#: Default points per scoring block: 1024 x 256 float32 scores (1 MiB) stay in cache, which
#: measured ~3x faster than 65536-point blocks on the benchmark's 10^6 x 9, K=256 problem.
DEFAULT_CHUNK = 1024

#: k-means++ runs on a random sample of this many points per centroid (at most n): its k sequential
#: steps over all 10^6 points would cost more than Lloyd itself, and the sample covers every mode.
INIT_POINTS_PER_CENTROID = 32


@dataclass(frozen=True)
class KMeansResult:
    """Centroids [k, d] float32, each point's centroid [n] int64, exact SSE, Lloyd updates run."""

    centroids: torch.Tensor
    labels: torch.Tensor
    sse: float
    iterations: int


def kmeans(
    x: torch.Tensor,
    k: int,
    *,
    iters: int = 20,
    seed: int = 0,
    init: Literal["kmeans++", "random"] = "kmeans++",
    chunk: int = DEFAULT_CHUNK,
    sample_init: int | None = None,
) -> KMeansResult:
    """Cluster the rows of x [n, d] into k centroids with up to `iters` Lloyd updates.

    Stops early when an update changes no label (a fixed point). `sample_init` is the number of
    random points k-means++ (or random init) draws from; default min(n, 32 k). With k >= n every
    point is its own centroid (n of them, SSE 0).
    """
    points = _validated_points(x)
    _check_settings(k, iters, init, chunk, sample_init)
    if k >= points.shape[0]:
        return _each_point_its_own(points)
    with one_thread_per_part() as workers:
        centroids = _initial_centroids(points, k, init, sample_init, torch.Generator().manual_seed(seed))
        centroids, labels, iterations = lloyd(points, centroids, iters, chunk, workers)
        return KMeansResult(centroids, labels, exact_sse(points, centroids, labels), iterations)


def assign_nearest(x: torch.Tensor, centroids: torch.Tensor, chunk: int = DEFAULT_CHUNK) -> tuple[torch.Tensor, float]:
    """Index of each row's nearest centroid (ties: the lowest index) and the exact SSE."""
    points = _validated_points(x)
    book = _validated_points(centroids, "centroids")
    if book.shape[1] != points.shape[1]:
        raise CodecError(f"centroids have dimension {book.shape[1]} but the points have {points.shape[1]}")
    _check_int("chunk", chunk, 1)
    with one_thread_per_part() as workers:
        labels = nearest(lifted_points(points), book, chunk, workers)
        return labels, exact_sse(points, book, labels)


# ----------------------------------------------------------------------------- validation


def _validated_points(x: torch.Tensor, name: str = "x") -> torch.Tensor:
    """x as a contiguous float32 [n, d] tensor with n, d >= 1 and finite values."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise CodecError(f"{name} must be a 2-D tensor [n, d], got {getattr(x, 'shape', type(x).__name__)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise CodecError(f"cannot cluster an empty {name} of shape {tuple(x.shape)}")
    if not x.is_floating_point() or not torch.isfinite(x).all():
        raise CodecError(f"{name} must hold finite floating-point values (got {x.dtype}, or NaN/inf)")
    return x.detach().float().contiguous()


def _check_settings(k: int, iters: int, init: str, chunk: int, sample_init: int | None) -> None:
    _check_int("k", k, 1)
    _check_int("iters", iters, 0)
    _check_int("chunk", chunk, 1)
    if init not in INITS:
        raise CodecError(f"k-means init must be one of {', '.join(INITS)}, got {init!r}")
    if sample_init is not None:
        _check_int("sample_init", sample_init, k)


def _check_int(key: str, value: int, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise CodecError(f"k-means {key} must be an integer >= {low}, got {value!r}")


def _each_point_its_own(points: torch.Tensor) -> KMeansResult:
    labels = torch.arange(points.shape[0], dtype=torch.int64)
    return KMeansResult(points.clone(), labels, 0.0, 0)


# ----------------------------------------------------------------------------- initialisation


def _initial_centroids(
    points: torch.Tensor, k: int, init: str, sample_init: int | None, generator: torch.Generator
) -> torch.Tensor:
    n = points.shape[0]
    size = min(n, sample_init if sample_init is not None else INIT_POINTS_PER_CENTROID * k)
    sample = points[torch.randperm(n, generator=generator)[:size]]
    if init == "random":
        return sample[:k].clone()
    return _kmeans_plus_plus(sample, k, generator)


def _kmeans_plus_plus(sample: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Greedy k-means++: of 2 + ln k candidates drawn ~ D^2, keep the one that lowers the potential most."""
    trials = 2 + int(math.log(k))
    sample_t, norms = sample.t().contiguous(), (sample * sample).sum(1)
    chosen = [int(torch.randint(sample.shape[0], (1,), generator=generator))]
    closest = _squared_distances(sample[chosen], sample_t, norms)[0]
    for _ in range(1, k):
        candidates = _draw_proportional(closest, trials, generator)
        dist = torch.minimum(closest, _squared_distances(sample[candidates], sample_t, norms))
        best = int(dist.sum(1, dtype=torch.float64).argmin())
        closest = dist[best]
        chosen.append(int(candidates[best]))
    return sample[chosen].clone()


def _draw_proportional(weights: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` indices drawn with probability ~ weights (uniformly once every weight is zero)."""
    cumulative = weights.double().cumsum(0)
    total = float(cumulative[-1])
    if total <= 0.0:
        return torch.randint(weights.numel(), (count,), generator=generator)
    draws = torch.rand(count, generator=generator, dtype=torch.float64) * total
    return torch.searchsorted(cumulative, draws, right=True).clamp_(max=weights.numel() - 1)


def _squared_distances(centres: torch.Tensor, points_t: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """[c, n] squared distances from c centres to the points (given as [d, n] and their squared
    norms), clamped at 0 against the rounding of the expanded form; rows run along the points, so
    the broadcasts are contiguous."""
    dist = torch.addmm(norms, centres, points_t, alpha=-2)
    return dist.add_((centres * centres).sum(1, keepdim=True)).clamp_(min=0.0)
