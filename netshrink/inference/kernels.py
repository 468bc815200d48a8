"""Products with weights kept compressed: palette indices or PQ codes, never the dense weight.

Two regimes, picked by how many rows the (flattened) input has:

- **Few rows** (at most `SMALL_BATCH`: a token of LLM generation on a CPU). Every weight is read
  once per row, so time is the time to read the weights: a 4-bit index instead of a 32-bit float.
  Palette: y[o] = sum_i C[book(o), idx[o, i]] * x[i], read straight from the packed indices; a
  codebook of <= 16 values sits in L1, so each weight costs one nibble unpack, one L1 load and one
  multiply-add, which the compiler vectorises (gathers) under fastmath. Bucket sums (s[c] = sum of
  the x_i with idx = c, then y[o] = C[book(o)] . s) save the multiplies but turn each weight into a
  read-modify-write of s[c]: a chain through memory that does not vectorise; it measured slower.
  PQ: look-up tables, as AQLM's CPU kernels do (Egiazarian et al. 2024): per input row,
  T[j, c] = codeword_c . x[j*d:(j+1)*d] for every sub-vector position j (k x in/d dot products,
  once), then y[o] = sum_j T[j, labels[o, j]]: one table read per d weights.
- **Many rows**: the product is compute bound. `TILE_ROWS` output rows at a time are decoded into a
  small scratch buffer and multiplied by torch's matmul (BLAS): memory stays at the scratch.

The few-rows kernels and the row decoders are numba functions (`@njit(cache=True)`, `prange` over
output rows; NUMBA_NUM_THREADS sets the threads). Why numba: it ships wheels for every platform and
compiles at run time through its own LLVM, so installing needs no compiler; `torch.compile` on a
CPU needs a C++ compiler when the model runs. numba is an optional extra (`pip install
'netshrink[fast]'`): without it, or for tensors that are not on the CPU, the same products run in
pure torch (the palette decodes tiles even for one row: correct, slower than dense).
"""

from __future__ import annotations

import sys

import numpy as np
import torch

try:  # optional: the `fast` extra
    import numba
except ImportError:  # pragma: no cover - depends on the environment
    numba = None

#: Whether the numba kernels run (tests set it to False to check the pure-torch path). They read
#: 8-bit indices four to a little-endian word: a big-endian machine runs the torch path.
NUMBA = numba is not None and sys.byteorder == "little"
#: Input rows up to which products read the compressed weights directly (look-up-table kernels).
SMALL_BATCH = 8
#: Output rows decoded at a time for many-row products (scratch: TILE_ROWS x in floats).
TILE_ROWS = 256


def _jit(function):  # noqa: ANN001, ANN202 - a decorator of numba functions
    """numba's parallel, cached, fastmath compilation; the plain function when numba is missing."""
    if numba is None:
        return function
    return numba.njit(cache=True, parallel=True, fastmath=True, nogil=True)(function)


_prange = numba.prange if numba is not None else range


@_jit
def _palette4_product(x, packed, book, rows_per_book, out):  # noqa: ANN001, ANN202
    """out[b, o] = sum_i C[book(o), idx[o, i]] * x[b, i], two 4-bit indices per byte (low nibble
    first); x has 2 * packed.shape[1] columns (zero-padded)."""
    for o in _prange(packed.shape[0]):
        values = book[o // rows_per_book]
        for b in range(x.shape[0]):
            acc = np.float32(0.0)
            for j in range(packed.shape[1]):
                code = packed[o, j]
                acc += values[code & 15] * x[b, 2 * j] + values[code >> 4] * x[b, 2 * j + 1]
            out[b, o] = acc


@_jit
def _palette8_product(x, words, book, rows_per_book, out):  # noqa: ANN001, ANN202
    """out[b, o] = sum_i C[book(o), idx[o, i]] * x[b, i], 8-bit indices read four to a 32-bit word
    (little-endian: the first index in the low byte). Read a byte at a time, the same loop took
    14.4 ms instead of 7.7 ms for a 49152 x 576 layer at batch 1 on one thread (dense: 8.7 ms)."""
    for o in _prange(words.shape[0]):
        values = book[o // rows_per_book]
        for b in range(x.shape[0]):
            acc = np.float32(0.0)
            for j in range(words.shape[1]):
                word, i = words[o, j], 4 * j
                acc += (values[word & 255] * x[b, i] + values[(word >> 8) & 255] * x[b, i + 1]) + (
                    values[(word >> 16) & 255] * x[b, i + 2] + values[word >> 24] * x[b, i + 3]
                )
            out[b, o] = acc


@_jit
def _pq_tables(x, book_t, table):  # noqa: ANN001, ANN202
    """table[j, c] = codeword_c . x[j*d:(j+1)*d] for one input row x; book_t is the codebook [d, k]."""
    d, k = book_t.shape
    for j in _prange(table.shape[0]):
        for c in range(k):
            table[j, c] = 0.0
        for t in range(d):
            value = x[j * d + t]
            for c in range(k):
                table[j, c] += book_t[t, c] * value


@_jit
def _pq_sums(table, labels, out):  # noqa: ANN001, ANN202
    """out[o] = sum_j table[j, labels[o, j]]."""
    for o in _prange(labels.shape[0]):
        acc = np.float32(0.0)
        for j in range(labels.shape[1]):
            acc += table[j, labels[o, j]]
        out[o] = acc


@_jit
def _palette4_rows(packed, book, rows_per_book, ids, rows):  # noqa: ANN001, ANN202
    """rows[r] = the decoded weight row ids[r] (2 * packed.shape[1] columns)."""
    for r in _prange(ids.shape[0]):
        o = ids[r]
        values = book[o // rows_per_book]
        for j in range(packed.shape[1]):
            code = packed[o, j]
            rows[r, 2 * j] = values[code & 15]
            rows[r, 2 * j + 1] = values[code >> 4]


@_jit
def _palette8_rows(indices, book, rows_per_book, ids, rows):  # noqa: ANN001, ANN202
    """rows[r] = the decoded weight row ids[r]."""
    for r in _prange(ids.shape[0]):
        o = ids[r]
        values = book[o // rows_per_book]
        for i in range(indices.shape[1]):
            rows[r, i] = values[indices[o, i]]


@_jit
def _pq_rows(labels, book, ids, rows):  # noqa: ANN001, ANN202
    """rows[r] = the decoded weight row ids[r]: codeword labels[o, j] at columns j*d..(j+1)*d."""
    d = book.shape[1]
    for r in _prange(ids.shape[0]):
        o = ids[r]
        for j in range(labels.shape[1]):
            code = labels[o, j]
            for t in range(d):
                rows[r, j * d + t] = book[code, t]


def numba_runs(*tensors: torch.Tensor) -> bool:
    """Whether the numba kernels apply: numba is there (and not switched off) and every tensor is on the CPU."""
    return NUMBA and all(t.device.type == "cpu" for t in tensors)


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """[n, 2P] int64 indices from [n, P] bytes, low nibble first."""
    low, high = (packed & 15).long(), (packed >> 4).long()
    return torch.stack((low, high), dim=-1).reshape(packed.shape[0], -1)


def pack_nibbles(indices: torch.Tensor) -> torch.Tensor:
    """[n, ceil(m/2)] bytes from [n, m] indices < 16 (a zero pads an odd row), low nibble first."""
    if indices.shape[1] % 2:
        indices = torch.nn.functional.pad(indices, (0, 1))
    return (indices[:, 0::2] | (indices[:, 1::2] << 4)).to(torch.uint8)


def pack_bytes(indices: torch.Tensor) -> torch.Tensor:
    """[n, m'] bytes from [n, m] indices < 256, m' = m rounded up to whole 32-bit words (zeros pad)."""
    return torch.nn.functional.pad(indices, (0, -indices.shape[1] % 4)).to(torch.uint8)


def palette_rows(indices: torch.Tensor, book: torch.Tensor, rows_per_book: int, ids: torch.Tensor) -> torch.Tensor:
    """Decoded fp32 weight rows `ids` of a palette layer (its padded width: 2 per byte when packed)."""
    nibbles = indices.dtype == torch.uint8 and book.shape[1] <= 16
    width = indices.shape[1] * (2 if nibbles else 1)
    if numba_runs(indices, ids):
        rows = torch.empty(ids.shape[0], width)
        kernel = _palette4_rows if nibbles else _palette8_rows
        kernel(indices.numpy(), book.numpy(), rows_per_book, ids.numpy(), rows.numpy())
        return rows
    codes = unpack_nibbles(indices[ids]) if nibbles else indices[ids].long()
    return book[torch.div(ids, rows_per_book, rounding_mode="floor")].gather(1, codes)


def palette_product(x: torch.Tensor, indices: torch.Tensor, book: torch.Tensor, rows_per_book: int) -> torch.Tensor:
    """x [b, width] @ W.T for a few rows b (`x` already padded to the indices' width)."""
    if not numba_runs(x, indices):
        return tiled_product(x, lambda ids: palette_rows(indices, book, rows_per_book, ids), indices.shape[0])
    out = torch.empty(x.shape[0], indices.shape[0])
    if book.shape[1] <= 16:
        _palette4_product(x.numpy(), indices.numpy(), book.numpy(), rows_per_book, out.numpy())
    else:  # rows padded to whole words by `pack_bytes`
        _palette8_product(x.numpy(), indices.numpy().view(np.uint32), book.numpy(), rows_per_book, out.numpy())
    return out


def pq_rows(labels: torch.Tensor, book: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Decoded fp32 weight rows `ids` of a PQ layer (codebook [k, d], labels [rows, in/d])."""
    if numba_runs(labels, ids):
        rows = torch.empty(ids.shape[0], labels.shape[1] * book.shape[1])
        _pq_rows(labels.numpy(), book.numpy(), ids.numpy(), rows.numpy())
        return rows
    return book[labels[ids].long()].reshape(ids.shape[0], -1)


def pq_product(x: torch.Tensor, labels: torch.Tensor, book: torch.Tensor, book_t: torch.Tensor) -> torch.Tensor:
    """x [b, in] @ W.T for a few rows b, by look-up tables (see the module docstring)."""
    rows, positions = labels.shape
    out = torch.empty(x.shape[0], rows, device=x.device)
    if numba_runs(x, labels):
        table = np.empty((positions, book.shape[0]), dtype=np.float32)
        for b in range(x.shape[0]):
            _pq_tables(x[b].numpy(), book_t.numpy(), table)
            _pq_sums(table, labels.numpy(), out[b].numpy())
        return out
    tables = (x.reshape(x.shape[0], positions, -1) @ book_t).reshape(x.shape[0], -1)  # [b, J * k]
    offsets = torch.arange(positions, device=x.device) * book.shape[0]
    for start in range(0, rows, TILE_ROWS):
        flat = labels[start : start + TILE_ROWS].long() + offsets
        out[:, start : start + TILE_ROWS] = tables[:, flat].sum(dim=-1)
    return out


def tiled_product(x: torch.Tensor, rows_of, count: int) -> torch.Tensor:  # noqa: ANN001 - a row decoder
    """x [b, width] @ W.T, W's `count` rows decoded `TILE_ROWS` at a time by `rows_of(ids)` (each
    tile [n, >= width], cut to x's width) and multiplied by torch's matmul."""
    out = torch.empty(x.shape[0], count, device=x.device)
    for start in range(0, count, TILE_ROWS):
        ids = torch.arange(start, min(count, start + TILE_ROWS), device=x.device)
        tile = rows_of(ids)[:, : x.shape[1]]
        out[:, start : start + ids.shape[0]] = x @ tile.t()
    return out
