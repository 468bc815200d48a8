"""Scalar k-means: exactness of the DP, the binned optimum's gap, the contract of every init."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from netshrink.cluster import assign_nearest_1d, kmeans_1d, kmeans_1d_exact, kmeans_sse
from netshrink.errors import CodecError


def heavy_tailed(n: int, seed: int = 0) -> np.ndarray:
    """Student-t(3) float32 weights: the heavy tails of trained networks' weights."""
    return np.random.default_rng(seed).standard_t(3, n).astype(np.float32)


def brute_force_sse(x: np.ndarray, k: int) -> float:
    """Minimum SSE over all k^n labelings (no contiguity assumed)."""
    x = x.astype(np.float64)
    labelings = np.array(list(itertools.product(range(k), repeat=x.size)))
    total = np.zeros(len(labelings))
    for c in range(k):
        member = labelings == c
        count = member.sum(1)
        s1, s2 = member @ x, member @ x**2
        total += s2 - np.divide(s1**2, count, out=np.zeros_like(s1), where=count > 0)
    return float(total.min())


def assert_fixed_point(x: np.ndarray, centroids: np.ndarray, labels: np.ndarray) -> None:
    """Every non-empty cluster's centroid is the mean of its members (Lloyd converged)."""
    counts = np.bincount(labels, minlength=centroids.size)
    sums = np.bincount(labels, weights=x.astype(np.float64), minlength=centroids.size)
    used = counts > 0
    np.testing.assert_allclose(centroids[used], sums[used] / counts[used], rtol=1e-9, atol=1e-12)


def assert_nearest(x: np.ndarray, centroids: np.ndarray, labels: np.ndarray) -> None:
    dist = np.abs(x.astype(np.float64)[:, None] - centroids[None, :])
    slack = 1e-12 * (1 + np.abs(x))  # a point on a midpoint may be an ulp nearer the upper centroid
    assert np.all(dist[np.arange(x.size), labels] <= dist.min(1) + slack)


# ------------------------------------------------------------------------------- exact DP


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [1, 2, 3])
def test_exact_dp_equals_brute_force(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(k, 11))
    x = rng.integers(-3, 4, n).astype(float) if seed % 2 else rng.standard_t(2, n)
    centroids, labels = kmeans_1d_exact(x, k)
    assert kmeans_sse(x, centroids, labels) == pytest.approx(brute_force_sse(x, k), rel=1e-9, abs=1e-9)


def test_exact_dp_on_distinct_values_matches_optimal_with_all_bins() -> None:
    x = heavy_tailed(3000, seed=5)
    exact = kmeans_sse(x, *kmeans_1d_exact(x, 40))
    # bins >= distinct values: the "optimal" DP runs on the values themselves, so it is exact too.
    assert kmeans_sse(x, *kmeans_1d(x, 40, bins=10**6)) == pytest.approx(exact, rel=1e-12)


# ----------------------------------------------------------------------- binned optimum's gap


@pytest.mark.parametrize("k", [16, 256])
def test_binned_optimal_within_0p01_percent_of_exact(k: int) -> None:
    x = heavy_tailed(20_000, seed=1)
    exact = kmeans_sse(x, *kmeans_1d_exact(x, k))
    centroids, labels = kmeans_1d(x, k)
    assert centroids.shape == (k,) and np.all(np.diff(centroids) > 0)
    assert kmeans_sse(x, centroids, labels) <= exact * (1 + 1e-4)


@pytest.mark.parametrize("dist", ["t3", "laplace"])
def test_coarse_bins_still_within_0p01_percent(dist: str) -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_t(3, 50_000) if dist == "t3" else rng.laplace(size=50_000)
    exact = kmeans_sse(x, *kmeans_1d_exact(x, 16))
    assert kmeans_sse(x, *kmeans_1d(x, 16, bins=1024)) <= exact * (1 + 1e-4)


# ------------------------------------------------------------------------------ contract


@pytest.mark.parametrize("init", ["optimal", "linear", "density", "random"])
def test_few_distinct_values_are_returned_exactly(init: str) -> None:
    values = np.array([-1.5, 0.1, 0.25, 3.0], dtype=np.float32)
    x = np.random.default_rng(0).choice(values, 1000)
    centroids, labels = kmeans_1d(x, 8, init=init)
    assert centroids.dtype == np.float64 and labels.dtype == np.int64
    np.testing.assert_array_equal(centroids, values.astype(np.float64))
    assert kmeans_sse(x, centroids, labels) == 0.0


@pytest.mark.parametrize("init", ["optimal", "linear", "density", "random"])
def test_every_init_gives_sorted_nearest_fixed_point(init: str) -> None:
    x = heavy_tailed(5000, seed=3)
    centroids, labels = kmeans_1d(x, 16, init=init, max_iter=1000)
    assert centroids.shape == (16,) and np.all(np.diff(centroids) >= 0)
    assert labels.shape == (x.size,) and labels.dtype == np.int64
    assert_nearest(x, centroids, labels)
    assert_fixed_point(x, centroids, labels)
    assert kmeans_sse(x, centroids, labels) >= kmeans_sse(x, *kmeans_1d_exact(x, 16)) * (1 - 1e-12)


def test_optimal_beats_deep_compression_inits() -> None:
    x = heavy_tailed(20_000, seed=4)
    best = kmeans_sse(x, *kmeans_1d(x, 32))
    for init in ("linear", "density", "random"):
        assert best <= kmeans_sse(x, *kmeans_1d(x, 32, init=init)) * (1 + 1e-12)


def test_assign_nearest_matches_brute_force_including_ties() -> None:
    rng = np.random.default_rng(6)
    centroids = np.sort(rng.standard_t(3, 100))
    mids = (centroids[1:] + centroids[:-1]) / 2
    x = np.concatenate((rng.standard_t(3, 200_000), mids, centroids, [-1e6, 1e6]))  # table path
    labels = assign_nearest_1d(x, centroids)
    assert_nearest(x, centroids, labels)
    np.testing.assert_array_equal(labels[200_000 : 200_000 + mids.size], np.arange(mids.size))  # ties: lower
    np.testing.assert_array_equal(labels, np.searchsorted(mids, x, side="left"))


def test_torch_input_any_shape_matches_numpy() -> None:
    w = torch.from_numpy(heavy_tailed(4 * 5 * 60, seed=7)).reshape(4, 5, 60)
    c_t, l_t = kmeans_1d(w, 8)
    c_n, l_n = kmeans_1d(w.numpy().ravel(), 8)
    np.testing.assert_array_equal(c_t, c_n)
    np.testing.assert_array_equal(l_t, l_n)
    c_h, _ = kmeans_1d(w.to(torch.bfloat16), 8)
    assert c_h.shape == (8,)


def test_edge_cases() -> None:
    c, labels = kmeans_1d(np.array([2.5]), 4)
    assert c.tolist() == [2.5] and labels.tolist() == [0]
    c, labels = kmeans_1d(np.full(100, -0.75), 16)
    assert c.tolist() == [-0.75] and np.all(labels == 0)
    x = heavy_tailed(1000)
    c, labels = kmeans_1d(x, 1)
    assert c == pytest.approx([x.astype(np.float64).mean()]) and np.all(labels == 0)
    c, labels = kmeans_1d(x, 1000)  # k = number of distinct values
    assert c.size == np.unique(x).size and kmeans_sse(x, c, labels) == 0.0
    c, labels = kmeans_1d_exact(np.array([1.0, 1.0, 2.0]), 5)
    assert c.tolist() == [1.0, 2.0] and labels.tolist() == [0, 0, 1]


def test_deterministic() -> None:
    x = heavy_tailed(5000, seed=8)
    for init in ("optimal", "random"):
        a, b = kmeans_1d(x, 16, init=init, seed=3), kmeans_1d(x, 16, init=init, seed=3)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(
        kmeans_1d(x, 16, init="random", seed=1, max_iter=2)[0], kmeans_1d(x, 16, init="random", seed=2, max_iter=2)[0]
    )


@pytest.mark.parametrize(
    "x, k, kwargs, message",
    [
        (np.ones(4), 0, {}, "k >= 1"),
        (np.ones(4), 2.5, {}, "k >= 1"),
        (np.ones(4), True, {}, "k >= 1"),
        (np.array([]), 2, {}, "empty"),
        (np.array([1.0, np.nan]), 2, {}, "NaN/inf"),
        (torch.tensor([1.0, float("inf")]), 2, {}, "NaN/inf"),
        (np.ones(4), 2, {"init": "kmeans++"}, "unknown k-means init"),
        (np.ones(4), 2, {"bins": 0}, "bins"),
        (np.ones(4), 2, {"max_iter": -1}, "max_iter"),
        (np.array(["a", "b"]), 2, {}, "real numbers"),
    ],
)
def test_bad_input_raises_codec_error(x: object, k: object, kwargs: dict, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        kmeans_1d(x, k, **kwargs)


def test_helper_errors() -> None:
    with pytest.raises(CodecError, match="k >= 1"):
        kmeans_1d_exact(np.ones(3), 0)
    with pytest.raises(CodecError, match="sorted"):
        assign_nearest_1d(np.ones(3), np.array([2.0, 1.0]))
    with pytest.raises(CodecError, match="labels"):
        kmeans_sse(np.ones(3), np.ones(2), np.zeros(2, dtype=np.int64))


# --------------------------------------------------------------------------- weighted k-means


@pytest.mark.parametrize("seed", range(4))
def test_integer_weights_equal_repeated_points(seed: int) -> None:
    """Weight w on a point is the same problem as w copies of it: same centroids, same SSE."""
    rng = np.random.default_rng(seed)
    x = rng.standard_t(3, 300)
    w = rng.integers(1, 5, x.size)
    c_w, labels_w = kmeans_1d_exact(x, 6, sample_weight=w)
    c_r, labels_r = kmeans_1d_exact(np.repeat(x, w), 6)
    np.testing.assert_allclose(c_w, c_r, rtol=1e-9, atol=1e-12)
    assert kmeans_sse(x, c_w, labels_w, w) == pytest.approx(kmeans_sse(np.repeat(x, w), c_r, labels_r), rel=1e-9)


def test_weighted_binned_within_0p01_percent_of_weighted_exact() -> None:
    x = heavy_tailed(20_000, seed=3)
    w = np.random.default_rng(3).gamma(0.5, 2.0, x.size)  # a skewed importance, like channel scales
    exact = kmeans_sse(x, *kmeans_1d_exact(x, 16, sample_weight=w), w)
    binned = kmeans_sse(x, *kmeans_1d(x, 16, sample_weight=w), w)
    assert exact <= binned <= exact * 1.0001


def test_weights_pull_centroids_toward_important_points() -> None:
    """Two equal groups, one 100x more important: its spread is resolved by more centroids."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-1, 0.1, 500), rng.normal(1, 0.1, 500)])
    w = np.r_[np.full(500, 100.0), np.ones(500)]
    centroids, labels = kmeans_1d(x, 8, sample_weight=w)
    assert (centroids < 0).sum() > (centroids > 0).sum()
    assert kmeans_sse(x, centroids, labels, w) < kmeans_sse(x, *kmeans_1d(x, 8), w)


@pytest.mark.parametrize(
    "weights, message",
    [
        (np.ones(3), "one weight per scalar"),
        (-np.ones(10), "non-negative"),
        (np.zeros(10), "not all zero"),
        (np.full(10, np.nan), "finite"),
    ],
)
def test_bad_weights_raise_codec_error(weights: np.ndarray, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        kmeans_1d(np.arange(10.0), 3, sample_weight=weights)
