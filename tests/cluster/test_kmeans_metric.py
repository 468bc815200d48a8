"""k-means in a metric per group (output-aware PQ): monotone objective, exact closed-form update."""

from __future__ import annotations

import pytest
import torch

from netshrink.cluster import assign_nearest_metric, kmeans_metric, metric
from netshrink.cluster.metric import metric_centroids, metric_cost
from netshrink.errors import CodecError


def correlated_grams(m: int, d: int, samples: int = 50, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group activations X_j [samples, d] with strongly correlated columns, and G_j = X_j^T X_j."""
    gen = torch.Generator().manual_seed(seed)
    mixing = torch.randn(m, d, d, generator=gen) * torch.logspace(0, -2, d)[:, None]
    acts = torch.randn(m, samples, d, generator=gen) @ mixing
    return acts, acts.transpose(1, 2) @ acts


def test_objective_never_increases_and_ends_lower():
    gen = torch.Generator().manual_seed(1)
    points = torch.randn(12, 40, 6, generator=gen)
    _, grams = correlated_grams(12, 6)
    start = points.reshape(-1, 6)[torch.randperm(480, generator=gen)[:16]]
    costs = [kmeans_metric(points, 16, grams, iters=i, init=start).sse for i in range(8)]
    assert all(later <= earlier * (1 + 1e-6) for earlier, later in zip(costs, costs[1:]))
    assert costs[-1] < 0.9 * costs[0]


@pytest.mark.parametrize("weighted", [False, True])
def test_update_is_the_exact_least_squares_minimiser(weighted):
    """c_k = argmin_c sum_p a_p ||X_j(p) (w_p - c)||^2, checked against a least-squares solve of the
    stacked (sqrt(a_p)-scaled) activations and against perturbations."""
    gen = torch.Generator().manual_seed(2)
    acts, grams = correlated_grams(5, 4, seed=3)
    points = torch.randn(5, 30, 4, generator=gen)
    labels = torch.randint(0, 3, (5, 30), generator=gen)
    weights = 0.1 + 3 * torch.rand(5, 30, generator=gen) if weighted else None
    centroids = metric_centroids(points, labels, grams, 3, weights)
    for k in range(3):
        rows_a, rows_b = [], []
        for j in range(5):
            for i in (labels[j] == k).nonzero().flatten():
                scale = float(weights[j, i]) ** 0.5 if weighted else 1.0
                rows_a.append(scale * acts[j].double())
                rows_b.append(scale * acts[j].double() @ points[j, i].double())
        solution = torch.linalg.lstsq(torch.cat(rows_a), torch.cat(rows_b)).solution
        torch.testing.assert_close(centroids[k].double(), solution, rtol=1e-4, atol=1e-5)
    best = metric_cost(points, centroids, labels, grams, weights)
    for _ in range(20):
        moved = centroids + 1e-3 * torch.randn(centroids.shape, generator=gen)
        assert metric_cost(points, moved, labels, grams, weights) > best


def test_one_identity_metric_is_plain_kmeans_means_and_nearest():
    gen = torch.Generator().manual_seed(4)
    points = torch.randn(1, 200, 3, generator=gen)
    result = kmeans_metric(points, 5, torch.eye(3)[None], iters=50)
    labels = torch.cdist(points[0], result.centroids).argmin(1)
    assert torch.equal(result.labels[0], labels)
    means = torch.stack([points[0][labels == c].mean(0) for c in range(5)])
    torch.testing.assert_close(result.centroids, means, rtol=1e-4, atol=1e-5)


def test_assignment_uses_each_groups_metric():
    points = torch.tensor([[[1.0, 1.0]], [[1.0, 1.0]]])  # the same point in two groups
    book = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    grams = torch.stack([torch.diag(torch.tensor([1.0, 100.0])), torch.diag(torch.tensor([100.0, 1.0]))])
    labels, cost = assign_nearest_metric(points, book, grams)
    assert labels.flatten().tolist() == [1, 0]  # each keeps exact the coordinate its metric weighs most
    assert cost == pytest.approx(2.0)


def test_bad_metric_inputs_are_clear_errors():
    with pytest.raises(CodecError, match="positive definite"):
        kmeans_metric(torch.randn(2, 5, 3), 2, torch.zeros(2, 3, 3))
    with pytest.raises(CodecError, match="one d x d matrix per group"):
        kmeans_metric(torch.randn(2, 5, 3), 2, torch.eye(3)[None])
    with pytest.raises(CodecError, match=r"\[m groups, n, d\]"):
        kmeans_metric(torch.randn(5, 3), 2, torch.eye(3)[None])


def test_a_guess_changes_no_label_ties_included():
    """A guess (good, random, or on the later of two equal codewords) only spares work: the labels
    are those of a full search, the lowest index among equal scores, and the float64 nearest."""
    gen = torch.Generator().manual_seed(5)
    points = torch.randn(7, 300, 4, generator=gen)
    _, grams = correlated_grams(7, 4, seed=6)
    book = torch.randn(12, 4, generator=gen)
    book[5] = book[2]  # equal codewords: every point nearer to them than to the rest is a tie
    full, _ = assign_nearest_metric(points, book, grams)
    assert (full == 2).any() and not (full == 5).any()
    for guess in (full, torch.randint(0, 12, (7, 300), generator=gen), torch.where(full == 2, 5, full)):
        assert torch.equal(assign_nearest_metric(points, book, grams, guess)[0], full)
    diff = points.double()[:, :, None, :] - book.double()  # [m, n, k, d]
    exact = torch.einsum("jnkd,jde,jnke->jnk", diff, grams.double(), diff).argmin(2)
    assert (exact == full).float().mean() > 0.999
    with pytest.raises(CodecError, match="guess"):
        assign_nearest_metric(points, book, grams, torch.zeros(7, 3, dtype=torch.long))


def test_blocked_work_gives_the_result_of_one_block(monkeypatch):
    """Scores, updates and errors taken a few groups / points at a time: bit for bit the same
    centroids, labels and objective as all at once."""
    gen = torch.Generator().manual_seed(7)
    points = torch.randn(9, 70, 4, generator=gen)
    _, grams = correlated_grams(9, 4, seed=8)
    weights = 0.5 + torch.rand(9, 70, generator=gen)
    whole = kmeans_metric(points, 20, grams, iters=6, point_weights=weights)
    monkeypatch.setattr(metric, "_GROUP_ELEMENTS", 4 * 70 * 2)  # two groups a block
    monkeypatch.setattr(metric, "_SCORE_ROWS", 16)
    blocked = kmeans_metric(points, 20, grams, iters=6, point_weights=weights)
    assert torch.equal(whole.centroids, blocked.centroids) and torch.equal(whole.labels, blocked.labels)
    assert whole.sse == pytest.approx(blocked.sse, rel=1e-12)
    assert 1 <= whole.iterations <= 6
