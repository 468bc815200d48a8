"""A weight matrix held as a compressed file stores it: palette indices or PQ codes, plus the codebook.

`PaletteWeights` and `PQWeights` are the storage a `CompressedLinear` or `CompressedEmbedding` reads
through. They are modules of their own so that a tied embedding and LM head hold one storage: both
layers have it as a child, and `module.to(device)` moves it once (a buffer registered on two
modules would be copied once per module, and the tie lost).

Indices stay as small as the kernels can read them: two per byte for a palette of at most 16
values, one byte for up to 256 values or PQ codewords. Above 256 `from_encoded` gives None and the
weight is decoded dense, as without `keep_compressed`. The codebook is kept in fp32 (the file's
fp16 values widened once, exactly): a few KiB, read from L1 on every weight.
"""

from __future__ import annotations

import torch
from torch import nn

from netshrink.format.codecs import PQ, Encoded, Palette
from netshrink.inference import kernels

#: Largest codebook whose indices fit a byte.
MAX_CODES = 256
#: Largest palette whose indices are packed two to a byte.
NIBBLE_CODES = 16
#: Weight rows packed at a time (bounds the int64 temporaries of loading a large embedding).
PACK_ROWS = 4096


class PaletteWeights(nn.Module):
    """Palette indices [rows, ceil(columns / 2)] (two per byte) or [rows, columns rounded up to a
    multiple of 4] (one per byte, rows in whole 32-bit words for the kernel), and the fp32 codebook
    [books, k]: book r // rows_per_book holds row r's values."""

    def __init__(self, indices: torch.Tensor, codebook: torch.Tensor, rows_per_book: int, columns: int) -> None:
        super().__init__()
        self.register_buffer("indices", indices)
        self.register_buffer("codebook", codebook)
        self.rows_per_book, self.columns = rows_per_book, columns

    @classmethod
    def from_encoded(cls, enc: Encoded, rows: int, columns: int) -> PaletteWeights | None:
        """The storage of a palette-coded [rows, columns] weight; None when a book does not cover
        whole rows or the palette has more than 256 values (then it is decoded dense)."""
        codebook, labels = Palette.codebook_and_labels(enc, dtype=torch.int32)
        books, k = codebook.shape
        if k > MAX_CODES or books == 0 or columns == 0 or rows % books:
            return None
        packed = [_packed(labels.reshape(rows, columns)[r : r + PACK_ROWS], k) for r in range(0, rows, PACK_ROWS)]
        return cls(torch.cat(packed), codebook.float(), rows // books, columns)

    @property
    def rows(self) -> int:
        return self.indices.shape[0]

    def decode_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Weight rows `ids`, decoded to fp32 [len(ids), columns]."""
        return kernels.palette_rows(self.indices, self.codebook, self.rows_per_book, ids)[:, : self.columns]

    def product(self, x: torch.Tensor) -> torch.Tensor:
        """x [b, columns] @ W.T for a few rows b, read straight from the indices."""
        width = self.indices.shape[1] * (2 if self.codebook.shape[1] <= NIBBLE_CODES else 1)
        if width != x.shape[1]:  # padded rows: the padding indices multiply zeros
            x = nn.functional.pad(x, (0, width - x.shape[1]))
        return kernels.palette_product(x, self.indices, self.codebook, self.rows_per_book)


class PQWeights(nn.Module):
    """PQ codes [rows, columns / d] (one byte each) and the fp32 codebook [k, d]."""

    def __init__(self, labels: torch.Tensor, codebook: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("labels", labels)
        self.register_buffer("codebook", codebook)
        # The codebook transposed [d, k], for the look-up tables (k values in a row vectorise): k x d floats.
        self.register_buffer("codebook_t", codebook.t().contiguous())

    @classmethod
    def from_encoded(cls, enc: Encoded, rows: int, columns: int) -> PQWeights | None:
        """The storage of a PQ-coded [rows, columns] weight; None above 256 codewords."""
        codebook, labels = PQ.codebook_and_labels(enc, dtype=torch.int32)
        k, d = codebook.shape
        if k > MAX_CODES or k == 0 or columns % d:
            return None
        return cls(labels.reshape(rows, columns // d).to(torch.uint8), codebook.float())

    @property
    def rows(self) -> int:
        return self.labels.shape[0]

    @property
    def columns(self) -> int:
        return self.labels.shape[1] * self.codebook.shape[1]

    def decode_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Weight rows `ids`, decoded to fp32 [len(ids), columns]."""
        return kernels.pq_rows(self.labels, self.codebook, ids)

    def product(self, x: torch.Tensor) -> torch.Tensor:
        """x [b, columns] @ W.T for a few rows b, by look-up tables."""
        return kernels.pq_product(x, self.labels, self.codebook, self.codebook_t)


CompressedWeights = PaletteWeights | PQWeights


def weights_of(enc: Encoded, rows: int, columns: int) -> CompressedWeights | None:
    """The compressed storage of a [rows, columns] weight coded by a palette or PQ; None for any
    other codec (dense, fp16 cast, sparse, low-rank: decoded dense as before, see `netshrink.inference`)."""
    if tuple(enc.shape) != (rows, columns):
        return None
    if enc.written_by(Palette):
        return PaletteWeights.from_encoded(enc, rows, columns)
    if enc.written_by(PQ):
        return PQWeights.from_encoded(enc, rows, columns)
    return None


def _packed(labels: torch.Tensor, k: int) -> torch.Tensor:
    """One block of rows' labels as the kernels read them: two per byte up to 16 values, else one."""
    return kernels.pack_nibbles(labels) if k <= NIBBLE_CODES else kernels.pack_bytes(labels)
