"""Vector k-means: quality against scikit-learn, Lloyd's fixed point, determinism, chunking, edge cases."""

from __future__ import annotations

import pytest
import torch

from netshrink.cluster import assign_nearest, kmeans
from netshrink.errors import CodecError


def gaussian_mixture(n: int, d: int, modes: int, seed: int = 0) -> torch.Tensor:
    """n points around `modes` random means, with unequal spreads (like 3x3 kernels of a layer)."""
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(modes, d, generator=gen)
    spread = 0.1 + 0.4 * torch.rand(modes, 1, generator=gen)
    which = torch.randint(modes, (n,), generator=gen)
    return means[which] + spread[which] * torch.randn(n, d, generator=gen)


def brute_force_sse(x: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, float]:
    dist = torch.cdist(x.double(), centroids.double()) ** 2
    return dist.argmin(1), float(dist.min(1).values.sum())


def test_sse_no_worse_than_sklearn_lloyd():
    sklearn_cluster = pytest.importorskip("sklearn.cluster")
    x = gaussian_mixture(3000, 4, 12)
    ours = kmeans(x, 16, iters=100, seed=0)
    theirs = sklearn_cluster.KMeans(n_clusters=16, n_init=1, random_state=0, algorithm="lloyd").fit(x.numpy())
    _, their_sse = brute_force_sse(x, torch.from_numpy(theirs.cluster_centers_))
    assert ours.sse <= their_sse * 1.01
    assert ours.sse == pytest.approx(brute_force_sse(x, ours.centroids)[1], rel=1e-6)


def test_converges_to_a_lloyd_fixed_point():
    x = gaussian_mixture(2000, 9, 8, seed=1)
    result = kmeans(x, 10, iters=200)
    assert result.iterations < 200  # stopped early: no label changed
    labels, _ = brute_force_sse(x, result.centroids)
    assert torch.equal(result.labels, labels)
    counts = torch.bincount(result.labels, minlength=10)
    assert (counts > 0).all()
    sums = torch.zeros(10, 9, dtype=torch.float64).index_add_(0, result.labels, x.double())
    torch.testing.assert_close(result.centroids, (sums / counts[:, None]).float(), rtol=1e-5, atol=1e-6)


def test_deterministic_and_independent_of_chunk():
    x = gaussian_mixture(1500, 3, 20, seed=2)
    reference = kmeans(x, 32, seed=7)
    again = kmeans(x, 32, seed=7)
    assert torch.equal(reference.centroids, again.centroids) and torch.equal(reference.labels, again.labels)
    for chunk in (1, 97, 1500, 10**6):
        other = kmeans(x, 32, seed=7, chunk=chunk)
        assert torch.equal(other.labels, reference.labels)
        assert torch.equal(other.centroids, reference.centroids)


def test_random_init_and_sampled_kmeans_plus_plus():
    x = gaussian_mixture(1000, 2, 5, seed=3)
    for init, sample in (("random", None), ("kmeans++", 8), ("kmeans++", 10**6)):
        result = kmeans(x, 8, init=init, sample_init=sample, iters=50)
        assert result.centroids.shape == (8, 2) and result.labels.shape == (1000,)
        assert result.sse == pytest.approx(brute_force_sse(x, result.centroids)[1], rel=1e-6)


def test_k_at_least_n_makes_every_point_its_own_centroid():
    x = torch.randn(5, 3)
    for k in (5, 9):
        result = kmeans(x, k)
        assert torch.equal(result.centroids, x) and torch.equal(result.labels, torch.arange(5))
        assert result.sse == 0.0


def test_fewer_distinct_points_than_k_reseeds_empty_clusters():
    x = torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, -2.0]]).repeat(20, 1)
    result = kmeans(x, 6, iters=5)
    assert result.sse == 0.0
    assert torch.equal(result.centroids[result.labels], x)


def test_assign_nearest_matches_brute_force_with_lowest_index_on_ties():
    x = gaussian_mixture(700, 5, 4, seed=4)
    centroids = torch.randn(13, 5)
    labels, sse = assign_nearest(x, centroids, chunk=50)
    expected, expected_sse = brute_force_sse(x, centroids)
    assert torch.equal(labels, expected) and sse == pytest.approx(expected_sse, rel=1e-6)
    twice = torch.cat([centroids, centroids])
    assert torch.equal(assign_nearest(x, twice)[0], expected)


def test_parts_on_two_threads_match_one_thread_and_restore_the_count():
    x = gaussian_mixture(70_000, 2, 3, seed=5)  # enough points for two parts of >= 32768
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = kmeans(x, 5, iters=3)
        torch.set_num_threads(2)
        two = kmeans(x, 5, iters=3)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one.labels, two.labels) and torch.equal(one.centroids, two.centroids)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k": 0}, "k must be"),
        ({"k": True}, "k must be"),
        ({"k": 4, "iters": -1}, "iters"),
        ({"k": 4, "chunk": 0}, "chunk"),
        ({"k": 4, "init": "linear"}, "init"),
        ({"k": 4, "sample_init": 2}, "sample_init"),
    ],
)
def test_bad_settings_are_codec_errors(kwargs, match):
    with pytest.raises(CodecError, match=match):
        kmeans(torch.randn(50, 2), **kwargs)


def test_bad_points_are_codec_errors():
    with pytest.raises(CodecError, match="2-D"):
        kmeans(torch.randn(10), 2)
    with pytest.raises(CodecError, match="empty"):
        kmeans(torch.zeros(0, 3), 2)
    with pytest.raises(CodecError, match="finite"):
        kmeans(torch.tensor([[0.0], [float("nan")]]), 1)
    with pytest.raises(CodecError, match="dimension"):
        assign_nearest(torch.randn(4, 3), torch.randn(2, 2))
