"""The output-aware metric of a layer for product quantization (Stock et al. 2020, "And the Bit
Goes Down", eq. 4): sub-vectors laid out per input block and weighted per output row, codes chosen
in the metric of the layer's input Gram matrix, several layers' problems joined for one shared
codebook, and error feedback over a layer's blocks. The `pq` step calls these; they hold no state.
"""

from __future__ import annotations

import torch
from torch import nn

from netshrink.calibration.error_feedback import feedback_assign_vectors
from netshrink.calibration.layer_inputs import block_points, groups_of, row_groups, unblock_labels
from netshrink.cluster import assign_nearest_metric
from netshrink.format.codecs import Codebook, Encoded
from netshrink.format.codecs.pq import PQ


def metric_points(
    weight: torch.Tensor, d: int, groups: int, row_scales: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The sub-vectors in `block_points` layout and their weights (rows weighted by `row_scales`,
    e.g. the following BatchNorm's scale^2; None: all 1)."""
    points = block_points(weight.float(), d, groups)
    if row_scales is None:
        return points, None
    # row o = group g, row i of that group; points [g * blocks, rows_per_group]
    per_group = row_scales.reshape(groups, 1, -1).expand(groups, points.shape[0] // groups, -1)
    return points, per_group.reshape(points.shape[:2])


def metric_encoding(
    module: nn.Module, d: int, book: Codebook, grams: torch.Tensor, guess: torch.Tensor | None = None
) -> Encoded:
    """The layer's sub-vectors assigned to the fp16 codewords of `book` (what the file holds) in
    their blocks' metrics; `guess` (the labels k-means gave, in `block_points` layout) saves time."""
    groups = groups_of(module)
    points = block_points(module.weight.detach().float().cpu(), d, groups)  # clustering runs on CPU
    labels, _ = assign_nearest_metric(points, book.values.float(), grams.float().cpu(), guess)
    return PQ.encode_assigned(book, unblock_labels(labels, groups), tuple(module.weight.shape))


def joined_problems(problems: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]):
    """Several layers' metric k-means problems as one: concatenated blocks when every layer has the
    same rows per block, else one block per point (each carrying its block's metric)."""
    if len({points.shape[1] for points, _, _ in problems}) > 1:
        problems = [
            (
                points.reshape(-1, 1, points.shape[2]),
                grams.repeat_interleave(points.shape[1], 0),
                None if weights is None else weights.reshape(-1, 1),
            )
            for points, grams, weights in problems
        ]
    points = torch.cat([p for p, _, _ in problems])
    grams = torch.cat([g for _, g, _ in problems])
    if all(w is None for _, _, w in problems):
        return points, grams, None
    weights = torch.cat([torch.ones(p.shape[:2], device=p.device) if w is None else w.float() for p, _, w in problems])
    return points, grams, weights


def diagonal_blocks(grams: torch.Tensor, d: int) -> torch.Tensor:
    """[groups, cols, cols] second moments of whole rows -> [groups * cols // d, d, d] of their
    d-column blocks, in `block_points` order."""
    groups, cols, _ = grams.shape
    blocks = cols // d
    tiles = grams.reshape(groups, blocks, d, blocks, d)
    index = torch.arange(blocks, device=grams.device)
    return tiles[:, index, :, index, :].permute(1, 0, 2, 3).reshape(groups * blocks, d, d)


def with_feedback(module: nn.Module, encoded: Encoded, grams: torch.Tensor) -> Encoded:
    """`feedback`: the same codewords, sub-vectors re-assigned with error feedback under the full
    second moment of each group's inputs (calibration/error_feedback.py), so that later sub-vectors of
    a row absorb the output error of earlier ones. It runs where `grams` are (the model's device)."""
    book = encoded.state
    weight = module.weight.detach().reshape(module.weight.shape[0], -1).to(grams.device)
    codewords = book.values.float().to(grams.device)
    labels = torch.cat(
        [
            feedback_assign_vectors(weight[rows], codewords, grams[g])
            for g, rows in enumerate(row_groups(weight.shape[0], grams.shape[0]))
        ]
    )
    return PQ.encode_assigned(book, labels.reshape(-1).cpu(), tuple(module.weight.shape))
