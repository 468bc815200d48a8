"""Palette assignment with error feedback: shared values chosen for the layer's output, not its weights.

Rounding every weight to its nearest shared value minimises the weight error. What matters is the
output error: for inputs x with second moment H = E[x x^T] (the layer's im2col patches or features,
UNCENTRED so that a mean shift counts too), row w of the weight contributes (w - q)^T H (w - q).
Because H couples the inputs, the error of one rounded weight can be cancelled by nudging the weights
of the inputs correlated with it before they are rounded in turn. That is Optimal Brain Compression /
GPTQ (Frantar & Alistarh 2022; Frantar et al. 2023), here with the palette's shared values as the
grid instead of a uniform one:

    for column j (in order of decreasing H_jj, "act-order"):
        q_j = nearest shared value to w_j;   e = (w_j - q_j) / U_jj
        w_{j+1:} -= e U_{j, j+1:}            (U: upper Cholesky factor of H^-1)

The assignment then fixes which weights share a value; `refit_values` moves each shared value to the
exact minimiser of the same output error over those assignments (a K x K linear system), which
never increases it. The result is still an ordinary palette: the file format does not change.
Every function computes on the device of its inputs (a GPU when the model is on one).
"""

from __future__ import annotations

import torch

#: Damping added to H's diagonal, as a fraction of its mean (Frantar et al. 2023 use 1 %): keeps the
#: Cholesky factorisation defined when inputs are constant or linearly dependent (dead channels).
DAMPING = 0.01
#: Columns whose errors reach the later columns in one matrix product (Frantar et al. 2023's "lazy
#: batch" updates): the same arithmetic as column by column, with a fraction of the memory traffic.
LAZY_BLOCK = 128


def output_error(
    weight: torch.Tensor, quantized: torch.Tensor, gram: torch.Tensor, row_scale: torch.Tensor | None = None
) -> float:
    """sum_o s_o (w_o - q_o)^T H (w_o - q_o): the mean squared output error the change causes."""
    delta = (weight - quantized).double()
    per_row = ((delta @ gram.double()) * delta).sum(1)
    return float(per_row.sum() if row_scale is None else (per_row * row_scale.double()).sum())


def _damped(gram: torch.Tensor, damping: float) -> torch.Tensor:
    hessian = gram.double().clone()
    dead = hessian.diagonal() <= 0
    hessian[dead, dead] = 1.0  # an input that is always zero: its weights' errors cost nothing
    hessian.diagonal().add_(damping * hessian.diagonal().mean())
    return hessian


def _inverse_factor(hessian: torch.Tensor) -> torch.Tensor:
    """Upper Cholesky factor U of H^-1 (H^-1 = U^T U): row j of U carries the OBS update of fixing
    column j given that columns before it are fixed already."""
    return torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(hessian)), upper=True)


def feedback_assign(
    weight: torch.Tensor, values: torch.Tensor, gram: torch.Tensor, damping: float = DAMPING
) -> torch.Tensor:
    """Labels [rows, cols] into `values` ([rows, k]: row r may use values[r]) for `weight`
    [rows, cols] under the input second moment `gram` [cols, cols], with error feedback."""
    rows, cols = weight.shape
    hessian = _damped(gram, damping)
    order = torch.argsort(hessian.diagonal(), descending=True)
    upper = _inverse_factor(hessian[order][:, order])
    work = weight.double()[:, order].clone()
    book = values.double()
    labels = torch.empty(rows, cols, dtype=torch.int64, device=weight.device)
    for start in range(0, cols, LAZY_BLOCK):
        end = min(start + LAZY_BLOCK, cols)
        errors = torch.empty(rows, end - start, dtype=torch.float64, device=weight.device)
        for j in range(start, end):
            column = work[:, j]
            chosen = (column[:, None] - book).abs().argmin(1)
            labels[:, j] = chosen
            errors[:, j - start] = (column - book.gather(1, chosen[:, None])[:, 0]) / upper[j, j]
            work[:, j + 1 : end] -= errors[:, j - start, None] * upper[j, j + 1 : end][None, :]
        work[:, end:] -= errors @ upper[start:end, end:]  # the block's errors on later columns, at once
    restored = torch.empty_like(labels)
    restored[:, order] = labels
    return restored


def feedback_assign_vectors(
    weight: torch.Tensor, codebook: torch.Tensor, gram: torch.Tensor, damping: float = DAMPING
) -> torch.Tensor:
    """Labels [rows, cols // d] into `codebook` [k, d] for the consecutive d-column sub-vectors of
    `weight` [rows, cols] (product quantization) with error feedback: the vector form of the update
    (GPTVQ, van Baalen et al. 2024). Fixing block b to Q_b costs (W_b - Q_b) (U_bb^T U_bb)^-1
    (W_b - Q_b)^T, so each sub-vector takes the nearest codeword after both are multiplied by U_bb^-1,
    and the later columns absorb E U_b,rest with E = (W_b - Q_b) U_bb^-1."""
    rows, cols = weight.shape
    d = codebook.shape[1]
    upper = _inverse_factor(_damped(gram, damping))
    work = weight.double().clone()
    book = codebook.double()
    labels = torch.empty(rows, cols // d, dtype=torch.int64, device=weight.device)
    identity = torch.eye(d, dtype=torch.float64, device=weight.device)
    for block in range(cols // d):
        span = slice(block * d, (block + 1) * d)
        inverse = torch.linalg.solve_triangular(upper[span, span], identity, upper=True)
        chosen = torch.cdist(work[:, span] @ inverse, book @ inverse).argmin(1)
        labels[:, block] = chosen
        error = (work[:, span] - book[chosen]) @ inverse
        work[:, (block + 1) * d :] -= error @ upper[span, (block + 1) * d :]
    return labels


def refit_values(
    weight: torch.Tensor,
    labels: torch.Tensor,
    values: torch.Tensor,
    gram: torch.Tensor,
    row_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """The shared values that minimise `output_error` for fixed labels: one K x K least-squares system
    per codebook. `values` [books, k] holds one codebook per `rows // books` consecutive rows (one
    for the whole tensor, one per row, or one per group of rows). A value no weight uses keeps its
    old value."""
    rows, cols = weight.shape
    books, k = values.shape
    if rows % books:
        raise ValueError(f"{books} codebooks do not divide {rows} rows")
    device = weight.device
    scale = torch.ones(rows, dtype=torch.float64, device=device) if row_scale is None else row_scale.double()
    onehot = torch.zeros(rows, cols, k, dtype=torch.float64, device=device).scatter_(2, labels[:, :, None], 1.0)
    h_onehot = torch.einsum("ij,rjk->rik", gram.double(), onehot)  # H E_r
    systems = torch.einsum("rik,ril->rkl", onehot, h_onehot) * scale[:, None, None]  # s_r E_r^T H E_r
    targets = torch.einsum("rik,ri->rk", h_onehot, weight.double()) * scale[:, None]  # s_r E_r^T H w_r
    systems = systems.reshape(books, rows // books, k, k).sum(1)  # the rows sharing a codebook
    targets = targets.reshape(books, rows // books, k).sum(1)
    old = values.double()
    # Ridge towards the old values: unused entries keep them, near-singular systems stay well posed.
    ridge = (
        1e-9
        * systems.diagonal(dim1=1, dim2=2).mean(1).clamp_min(1e-30)[:, None, None]
        * torch.eye(k, dtype=torch.float64, device=device)
    )
    used = onehot.sum(1).reshape(books, rows // books, k).sum(1) > 0
    ridge = ridge + torch.diag_embed((~used).double().reshape(-1, k))
    solved = torch.linalg.solve(systems + ridge, (targets + (ridge @ old[:, :, None])[:, :, 0])[:, :, None])[:, :, 0]
    return solved.to(values.dtype)
