"""k-means in a metric per group of points, for output-aware product quantization (Stock et al. 2020).

Group j of the points is measured by ||(x - c) L_j||^2 = (x - c)^T G_j (x - c) with G_j = L_j L_j^T
a positive-definite d x d matrix (the input second moment of a layer's block, sec. 3.2).
Assignment takes each point's nearest codeword in its own metric; the update solves
(sum_p G_p) c = sum_p G_p x_p over the cluster's members, the exact minimiser of the objective for
fixed labels (with one shared G it is the plain mean, the paper's M-step).

A 1B-class layer has millions of sub-vectors, and a streamed model has hundreds of such layers, so
the work is laid out to hold little beyond the points and to run at the speed of one matrix
product: the assignment scores `_SCORE_ROWS` points of one group at a time (a score block that
stays in cache), and, given each point's previous label, searches only the rows where that label is
no longer the unique minimum (`_labels_of_block`: exactly the labels a full search gives, ties
included). The float64 work of the update and of the objective is done a few groups at a time
(`_GROUP_ELEMENTS`), never on all the points at once.
"""

from __future__ import annotations

import torch

from netshrink.cluster.kmeans import KMeansResult, _check_int, _validated_points, kmeans
from netshrink.errors import CodecError

#: Points of one group scored at once: 1024 x 256 float32 scores (1 MiB) stay in cache.
_SCORE_ROWS = 1024

#: Point coordinates per float64 block of the update and of the objective (8 MiB of float64).
_GROUP_ELEMENTS = 1 << 20


def kmeans_metric(
    x: torch.Tensor,
    k: int,
    grams: torch.Tensor,
    *,
    iters: int = 20,
    seed: int = 0,
    init: torch.Tensor | None = None,
    point_weights: torch.Tensor | None = None,
) -> KMeansResult:
    """Cluster the points x [m, n, d] into k shared codewords, point x[j, i] measured by grams[j].

    Minimises sum_j sum_i a_ji (x_ji - c)^T G_j (x_ji - c) over codewords and labels (see the module
    doc); a = `point_weights` [m, n] (positive; default 1) scales a point's cost without changing
    which codeword is nearest to it. Starts from `init` [k, d] if given, else from `kmeans` in the
    pooled metric mean_j G_j (Euclidean k-means of x L, mapped back). Returns centroids [k', d]
    (k' = min(k, m n)), labels [m, n], the objective (as `sse`) and the updates made. The objective
    never increases from one update to the next.
    """
    points, factors = _validated_metric_problem(x, grams)
    weights = _point_weights(point_weights, points)
    _check_int("k", k, 1)
    _check_int("iters", iters, 0)
    m, n, d = points.shape
    if k >= m * n:
        labels = torch.arange(m * n, dtype=torch.int64).reshape(m, n)
        return KMeansResult(points.reshape(-1, d).clone(), labels, 0.0, 0)
    centroids = _pooled_start(points, grams, k, seed) if init is None else _validated_points(init, "init").clone()
    mapped = torch.bmm(points, factors)  # x L_j, once: the assignment scores codewords against these
    labels = _nearest_metric(mapped, centroids, factors)
    updates = 0
    while updates < iters:
        centroids = _metric_update(points, grams.double(), weights, centroids, labels)
        updates += 1
        moved, labels = labels, _nearest_metric(mapped, centroids, factors, guess=labels)
        if torch.equal(moved, labels):
            break
    return KMeansResult(centroids, labels, metric_cost(points, centroids, labels, grams, weights), updates)


def assign_nearest_metric(
    x: torch.Tensor, centroids: torch.Tensor, grams: torch.Tensor, guess: torch.Tensor | None = None
) -> tuple[torch.Tensor, float]:
    """Labels [m, n] of each point's nearest centroid in its group's metric (ties: the lowest index),
    and the objective. `guess` [m, n] (e.g. the labels of a nearby codebook) only makes it faster."""
    points, factors = _validated_metric_problem(x, grams)
    book = _validated_points(centroids, "centroids")
    if guess is not None and (tuple(guess.shape) != tuple(points.shape[:2]) or guess.is_floating_point()):
        raise CodecError(f"guess must be integer labels of shape {tuple(points.shape[:2])}")
    labels = _nearest_metric(torch.bmm(points, factors), book, factors, guess=guess)
    return labels, metric_cost(points, book, labels, grams)


def metric_centroids(
    x: torch.Tensor, labels: torch.Tensor, grams: torch.Tensor, k: int, point_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """The closed-form update: c_k = (sum_p a_p G_p)^-1 sum_p a_p G_p x_p over the members p of cluster k.

    Setting the gradient 2 sum_p a_p G_p (c - x_p) of the (convex) objective to zero gives it, so it
    is the exact minimiser for fixed labels. A cluster without members keeps c = 0.
    """
    points, _ = _validated_metric_problem(x, grams)
    weights = _point_weights(point_weights, points)
    return _solved_centroids(points, grams.double(), weights, labels, torch.zeros(k, points.shape[2]))[0]


def metric_cost(
    x: torch.Tensor,
    centroids: torch.Tensor,
    labels: torch.Tensor,
    grams: torch.Tensor,
    point_weights: torch.Tensor | None = None,
) -> float:
    """sum_j sum_i a_ji (x_ji - c_l)^T G_j (x_ji - c_l), from the differences, in float64."""
    errors = _metric_errors(x, centroids.double(), labels, grams.double())
    return float((errors if point_weights is None else errors * point_weights.double()).sum())


def _group_blocks(points: torch.Tensor) -> list[slice]:
    """Consecutive groups of about `_GROUP_ELEMENTS` point coordinates each."""
    m, n, d = points.shape
    step = max(1, _GROUP_ELEMENTS // max(1, n * d))
    return [slice(first, first + step) for first in range(0, m, step)]


def _metric_errors(
    points: torch.Tensor, centroids: torch.Tensor, labels: torch.Tensor, grams: torch.Tensor
) -> torch.Tensor:
    """Each point's error [m, n] (float64) in its group's metric, computed a block of groups at a time."""
    errors = torch.empty(points.shape[:2], dtype=torch.float64)
    for block in _group_blocks(points):
        diff = points[block].double() - centroids[labels[block]]
        errors[block] = torch.einsum("jnd,jde,jne->jn", diff, grams[block], diff)
    return errors


def _point_weights(weights: torch.Tensor | None, points: torch.Tensor) -> torch.Tensor:
    if weights is None:
        return torch.ones(points.shape[:2], dtype=torch.float64)
    if (
        tuple(weights.shape) != tuple(points.shape[:2])
        or not torch.isfinite(weights).all()
        or bool((weights <= 0).any())
    ):
        raise CodecError(f"point_weights must be positive and finite, of shape {tuple(points.shape[:2])}")
    return weights.detach().double()


def _validated_metric_problem(x: torch.Tensor, grams: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x as float32 [m, n, d] and the Cholesky factors L_j (G_j = L_j L_j^T); clear errors otherwise."""
    if not isinstance(x, torch.Tensor) or x.dim() != 3 or 0 in x.shape:
        raise CodecError(f"metric k-means needs points [m groups, n, d], got {getattr(x, 'shape', type(x).__name__)}")
    if not isinstance(grams, torch.Tensor) or tuple(grams.shape) != (x.shape[0], x.shape[2], x.shape[2]):
        raise CodecError(
            f"metric k-means needs one d x d matrix per group: expected {(x.shape[0], x.shape[2], x.shape[2])}, "
            f"got {tuple(getattr(grams, 'shape', ()))}"
        )
    if not torch.isfinite(x).all() or not torch.isfinite(grams).all():
        raise CodecError("metric k-means: points and metrics must be finite")
    factors, info = torch.linalg.cholesky_ex(grams.double())
    if bool((info != 0).any()):
        raise CodecError("metric k-means: every group's matrix must be symmetric positive definite (add a ridge)")
    return x.detach().float().contiguous(), factors.float()


def _pooled_start(points: torch.Tensor, grams: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """Euclidean k-means of x L in the pooled metric mean_j G_j = L L^T, mapped back by L^-1."""
    factor = torch.linalg.cholesky(grams.double().mean(0))
    flat = points.reshape(-1, points.shape[2])
    mapped = torch.empty_like(flat)
    step = max(1, _GROUP_ELEMENTS // flat.shape[1])
    for first in range(0, flat.shape[0], step):  # row by row the same products, without a float64 copy of all
        mapped[first : first + step] = flat[first : first + step].double() @ factor
    start = kmeans(mapped, k, iters=10, seed=seed).centroids.double()
    return torch.linalg.solve_triangular(factor, start, upper=False, left=False).float()


def _nearest_metric(
    mapped: torch.Tensor, centroids: torch.Tensor, factors: torch.Tensor, guess: torch.Tensor | None = None
) -> torch.Tensor:
    """argmin_c ||(x - c) L_j||^2 per point (ties: the lowest index), given the mapped points x L_j
    [m, n, d]; `guess` (labels [m, n], e.g. the previous iteration's) spares most of the search."""
    m, n, _ = mapped.shape
    labels = torch.empty(m, n, dtype=torch.int64)
    for block in _group_blocks(mapped):
        mapped_book = torch.matmul(centroids, factors[block])  # [g, k, d]
        half_norms = 0.5 * (mapped_book * mapped_book).sum(2)  # [g, k]
        for offset, group in enumerate(range(m)[block]):
            book_t = mapped_book[offset].t()
            for first in range(0, n, _SCORE_ROWS):
                rows = slice(first, first + _SCORE_ROWS)
                # ||z - c||^2 / 2 minus the constant ||z||^2 / 2
                scores = torch.addmm(half_norms[offset], mapped[group, rows], book_t, alpha=-1)
                labels[group, rows] = _labels_of_block(scores, None if guess is None else guess[group, rows])
    return labels


def _labels_of_block(scores: torch.Tensor, guess: torch.Tensor | None) -> torch.Tensor:
    """`scores.argmin(1)`. With a guess per row: a row whose guess scores strictly below every other
    column keeps it (the minimum of the others costs a vectorised pass, where argmin's index search
    is several times slower); only the other rows are searched."""
    if guess is None:
        return scores.argmin(1)
    at_guess = guess.long().unsqueeze(1)
    guessed = scores.gather(1, at_guess)
    others = scores.scatter_(1, at_guess, float("inf")).amin(1, keepdim=True)  # the scores are ours to change
    scores.scatter_(1, at_guess, guessed)
    labels = guess.long().clone()
    search = (guessed >= others).squeeze(1).nonzero().squeeze(1)
    if search.numel():
        labels[search] = scores[search].argmin(1)
    return labels


def _normal_equations(points: torch.Tensor, grams: torch.Tensor, weights: torch.Tensor, labels: torch.Tensor, k: int):
    """Per cluster: sum_p a_p G_p [k, d, d], sum_p a_p G_p x_p [k, d], member counts [k]; the float64
    sums taken a block of groups at a time (each group's sums alone, in point order, as in one pass)."""
    m, n, d = points.shape
    sums = torch.zeros(m, k, d, dtype=torch.float64)
    mass = torch.zeros(m, k, dtype=torch.float64)
    for block in _group_blocks(points):
        groups = labels[block].shape[0]
        flat = (torch.arange(groups)[:, None] * k + labels[block]).reshape(-1)
        weighted = points[block].reshape(-1, d).double() * weights[block].reshape(-1, 1)
        sums[block] = (
            torch.zeros(groups * k, d, dtype=torch.float64).index_add_(0, flat, weighted).reshape(groups, k, d)
        )
        mass[block] = (
            torch.zeros(groups * k, dtype=torch.float64)
            .index_add_(0, flat, weights[block].reshape(-1))
            .reshape(groups, k)
        )
    system = torch.einsum("jk,jde->kde", mass, grams)
    rhs = torch.einsum("jde,jke->kd", grams, sums)
    return system, rhs, torch.bincount(labels.reshape(-1), minlength=k)


def _metric_update(
    points: torch.Tensor, grams: torch.Tensor, weights: torch.Tensor, centroids: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """The closed-form update; empty clusters re-seeded at the worst-served points (as `kmeans`)."""
    out, used = _solved_centroids(points, grams, weights, labels, centroids)
    empty = (~used).nonzero().squeeze(1)
    if empty.numel():
        errors = (_metric_errors(points, centroids.double(), labels, grams) * weights).reshape(-1)
        worst = torch.topk(errors, min(empty.numel(), errors.numel())).indices
        out[empty[: worst.numel()]] = points.reshape(-1, points.shape[2])[worst]
    return out


def _solved_centroids(
    points: torch.Tensor, grams: torch.Tensor, weights: torch.Tensor, labels: torch.Tensor, base: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """`base` with each used cluster's row replaced by its solution; also the used-cluster mask."""
    system, rhs, counts = _normal_equations(points, grams, weights, labels, base.shape[0])
    out, used = base.double().clone(), counts > 0
    out[used] = torch.linalg.solve(system[used], rhs[used].unsqueeze(-1)).squeeze(-1)
    return out.float(), used
