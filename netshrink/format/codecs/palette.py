"""Palette codec: scalar weight sharing (Deep Compression, Han et al. 2016, sec. 3).

The weights of a tensor (or of each output channel, or of each `group` of consecutive output
channels) are clustered by 1-D k-means into 2^bits shared values (`fit`: the codebook, the codec's
state); `encode` gives each weight the index of its nearest value. The file holds the codebook in 16-bit floats and the indices entropy coded (rANS):
skewed index histograms cost fewer bits than `bits`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from netshrink.cluster import assign_nearest_1d, fit_centroids_1d
from netshrink.cluster.kmeans1d import INITS
from netshrink.cluster.rows1d import fit_rows_density
from netshrink.errors import CodecError, FormatError
from netshrink.format.codecs.base import (
    Codebook,
    Codec,
    Encoded,
    Stream,
    register_codec,
    require_float_tensor,
    require_int,
    require_stream,
)
from netshrink.format.codecs.dense import bytes_to_tensor, tensor_to_bytes
from netshrink.format.entropy import decode_symbols, encode_symbols

MAX_BITS = 16


def book_size(bits: int, row_length: int) -> int:
    """Codebook entries per row: 2^bits, but never more than the row has weights.

    A row of 9 weights (a depthwise 3x3 kernel, per channel) needs at most 9 values: padding its
    codebook to 32 would spend 46 bytes per channel on entries no index can use.
    """
    return max(1, min(1 << bits, row_length))


@register_codec
@dataclass(frozen=True)
class Palette(Codec):
    """2^bits shared values per tensor (or per output channel), fp16 codebook, coded indices.

    `group` > 1 (with `per_channel`): that many consecutive output channels share one palette. A
    palette of 2^bits fp16 values costs 2^(bits+4) bits: 0.22 bits per weight on a 576-wide row at
    3 bits, which sharing it between two rows halves. The file needs nothing new: a palette row is
    a run of weights, and decoding only reads how many rows there are.
    """

    name: ClassVar[str] = "palette"
    bits: int = 5
    per_channel: bool = False
    init: str = "optimal"
    seed: int = 0
    #: Optional importance of each weight (same shape as the tensor): the k-means then minimises
    #: sum w_i (x_i - c)^2. A property of this encoding run, not of the file: never written.
    importance: torch.Tensor | None = field(default=None, compare=False, repr=False)
    #: Consecutive output channels that share one palette (per_channel only).
    group: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or not 1 <= self.bits <= MAX_BITS:
            raise CodecError(f"palette bits must be an integer in 1..{MAX_BITS}, got {self.bits!r}")
        if self.init not in INITS:
            raise CodecError(f"palette init must be one of {', '.join(INITS)}, got {self.init!r}")
        if not isinstance(self.group, int) or self.group < 1 or (self.group > 1 and not self.per_channel):
            raise CodecError(f"palette group must be an integer >= 1 (> 1 only per channel), got {self.group!r}")

    def fit(self, tensor: torch.Tensor) -> Codebook:
        """The fp16 values of each row (the tensor, or each output channel) by 1-D k-means, padded
        to the same count per row (importance-weighted when the codec has an `importance`)."""
        rows = self._rows(tensor)
        weights = self._importance_rows(tensor, rows.shape[0])
        k = book_size(self.bits, rows.shape[1])
        if not rows.numel():
            return Codebook(torch.zeros(0, k, dtype=torch.float16))
        if self.init == "density" and weights is None and len(rows) > 1 and rows.shape[1] <= FIT_SAMPLE:
            return Codebook(torch.from_numpy(np.stack([_book(c.numpy(), k) for c in fit_rows_density(rows, k)])))
        books = [
            self._cluster_row(row.numpy(), k, None if weights is None else weights[i].numpy())
            for i, row in enumerate(rows)
        ]
        return Codebook(torch.from_numpy(np.stack(books)))

    def encode(self, tensor: torch.Tensor, state: Codebook | None = None) -> Encoded:
        """Each weight coded by the index of its nearest value in its row of `state`."""
        state = self.fit(tensor) if state is None else state
        rows = self._rows(tensor)
        if rows.numel() and (state.values.dim() != 2 or state.values.shape[0] != rows.shape[0]):
            raise CodecError(f"palette codebook has {state.values.shape[0]} rows, the tensor {rows.shape[0]}")
        if not rows.numel():
            return self._encoded(state, np.zeros(0, dtype=np.int64), tuple(tensor.shape))
        labels = [nearest_entry(row.numpy(), book.numpy()) for row, book in zip(rows, state.values)]
        return self._encoded(state, labels[0] if len(labels) == 1 else np.concatenate(labels), tuple(tensor.shape))

    def encode_assigned(
        self, codebook: Codebook | torch.Tensor, labels: torch.Tensor, shape: tuple[int, ...]
    ) -> Encoded:
        """Store a given codebook [rows, k] (rounded to fp16) and per-weight labels without
        clustering: for methods that choose the assignment themselves (error feedback, fine-tuning)."""
        values = codebook.values if isinstance(codebook, Codebook) else codebook
        rows = self.palettes(tuple(shape))
        if values.dim() != 2 or values.shape[0] != rows or not values.is_floating_point():
            raise CodecError(f"palette codebook must be a float [{rows}, k] tensor, got {tuple(values.shape)}")
        k = values.shape[1]
        if not 1 <= k <= (1 << self.bits) or labels.numel() != math.prod(shape):
            raise CodecError(
                f"palette{self.bits} cannot store {k} values per row for {labels.numel()} labels of "
                f"shape {tuple(shape)}"
            )
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= k):
            raise CodecError(f"palette labels must lie in 0..{k - 1}")
        book = codebook if isinstance(codebook, Codebook) else Codebook.fp16(values)
        return self._encoded(book, labels.reshape(-1).numpy().astype(np.int64), shape)

    def _encoded(self, book: Codebook, indices: np.ndarray, shape: tuple[int, ...]) -> Encoded:
        rows, k = book.values.shape
        params = {
            "bits": self.bits,
            "rows": rows,
            "book": k,
            "label": self.describe(),
        }
        streams = {
            "codebook": Stream("codebook", tensor_to_bytes(book.values)),
            "indices": Stream("indices", encode_symbols(indices, k)),
        }
        return Encoded(self.name, shape, params, streams, state=book)

    def _rows(self, tensor: torch.Tensor) -> torch.Tensor:
        """The tensor as rows that each have their own values: one row, or one per output channel."""
        require_float_tensor(tensor, self.name)
        if self.per_channel and tensor.dim() < 2:
            raise CodecError("palette per_channel needs a tensor with an output-channel dimension (>= 2-D)")
        return tensor.detach().float().reshape(self.palettes(tuple(tensor.shape)), -1)

    def palettes(self, shape: tuple[int, ...]) -> int:
        """How many palettes a tensor of this shape has (its output channels are shape[0])."""
        if not self.per_channel:
            return 1
        channels = shape[0]
        if channels % self.group:
            raise CodecError(f"palette group {self.group} does not divide the tensor's {channels} output channels")
        return channels // self.group

    def _importance_rows(self, tensor: torch.Tensor, n_rows: int) -> torch.Tensor | None:
        if self.importance is None:
            return None
        if self.importance.shape != tensor.shape:
            raise CodecError(
                f"palette importance has shape {tuple(self.importance.shape)} but the tensor has "
                f"{tuple(tensor.shape)}; give one importance per weight"
            )
        return self.importance.detach().double().reshape(n_rows, -1)

    def _cluster_row(self, row: np.ndarray, k: int, weights: np.ndarray | None = None) -> np.ndarray:
        """One row's fp16 values, sorted, padded to k entries by repeating the largest."""
        if row.size == 0:
            return np.zeros(k, dtype=np.float16)
        if weights is not None and not weights.any():  # an unused row (e.g. a dead channel): plain k-means
            weights = None
        row, weights = fit_sample(row, weights, self.seed)
        centroids = fit_centroids_1d(row, k, init=self.init, seed=self.seed, sample_weight=weights)
        # The codebook is stored in fp16 (Wu et al. 2018 store 16-bit centres): `encode` assigns each
        # weight to the nearest *stored* value, so the file decodes to exactly what the model was evaluated with.
        return _book(centroids, k)

    @classmethod
    def codebook_and_labels(cls, enc: Encoded, dtype: torch.dtype = torch.int64) -> tuple[torch.Tensor, torch.Tensor]:
        """The fp16 codebook [rows, k] and labels [rows, weights per row] (int64, or `dtype`: int32
        is what decoding gives, without a copy), validated before anything is allocated."""
        codebook, labels = cls._stored(enc)
        return codebook, labels.to(dtype)

    @classmethod
    def _stored(cls, enc: Encoded) -> tuple[torch.Tensor, torch.Tensor]:
        """`codebook_and_labels` with the labels as decoded (int32)."""
        bits = require_int(enc.params, "bits", 1, MAX_BITS, cls.name)
        numel = enc.numel
        rows = require_int(enc.params, "rows", 0 if numel == 0 else 1, max(numel, 1), cls.name)
        if rows and numel % rows:
            raise FormatError(f"palette has {rows} rows, which do not divide {numel} weights")
        k = require_int(enc.params, "book", 1, 1 << bits, cls.name)
        codebook = bytes_to_tensor(require_stream(enc, "codebook", "codebook"), torch.float16, rows * k)
        labels = torch.from_numpy(decode_symbols(require_stream(enc, "indices", "indices"), numel, k))
        return codebook.reshape(rows, k), labels.reshape(rows, numel // rows if rows else 0)

    @classmethod
    def decode(cls, enc: Encoded) -> torch.Tensor:
        codebook, labels = cls._stored(enc)
        if codebook.shape[0] == 0:
            return torch.zeros(enc.shape)
        return gather_rows(codebook.float(), labels).reshape(enc.shape)

    def describe(self) -> str:
        return f"palette{self.bits}" + ("c" if self.per_channel else "") + (f"g{self.group}" if self.group > 1 else "")


def nearest_entry(row: np.ndarray, book: np.ndarray) -> np.ndarray:
    """For each value of `row`, the index in `book` (any order, repeats allowed: the first of equal
    entries) of its nearest entry."""
    values, first = np.unique(book.astype(np.float64), return_index=True)
    labels = assign_nearest_1d(row, values)
    if not np.array_equal(first, np.arange(first.size)):  # repeated entries: the first of each
        np.take(first, labels, out=labels)
    return labels


#: Rows of more weights than this fit their values on a random sample of this many (seeded): the
#: k-means working memory is ~20 bytes a point, and 2^24 points pin each of 256 values far more
#: finely than fp16 stores them. Every weight is still assigned to its nearest value.
FIT_SAMPLE = 1 << 24


def _book(centroids: np.ndarray, k: int) -> np.ndarray:
    """Centroids as a row of the fp16 codebook: sorted distinct values, padded to k with the largest."""
    book = np.unique(centroids.astype(np.float16))
    return np.concatenate([book, np.full(k - book.size, book[-1], dtype=np.float16)])


def fit_sample(
    row: np.ndarray, weights: np.ndarray | None, seed: int, size: int = FIT_SAMPLE
) -> tuple[np.ndarray, np.ndarray | None]:
    """`row` (and its weights) as they are, or a seeded uniform sample of `size` of them when longer."""
    if row.size <= size:
        return row, weights
    index = np.int32 if row.size < 2**31 else np.int64  # half the memory of int64 for most rows
    picks = np.random.default_rng(seed).integers(0, row.size, size, dtype=index)
    picks.sort()  # reads the row in order
    return row[picks], None if weights is None else weights[picks]


#: Labels `gather_rows` widens to int64 at a time: the decoded tensor plus its int32 labels is then
#: all a large tensor's decoding holds.
GATHER_CHUNK = 1 << 20


def gather_rows(book: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """book[r, labels[r, j]] for every row r and position j, a chunk of labels at a time."""
    rows, per_row = labels.shape
    out = torch.empty(rows, per_row, dtype=book.dtype)
    step = max(1, GATHER_CHUNK // max(per_row, 1))
    for r in range(0, rows, step):
        for c in range(0, per_row, GATHER_CHUNK):
            out[r : r + step, c : c + GATHER_CHUNK] = book[r : r + step].gather(
                1, labels[r : r + step, c : c + GATHER_CHUNK].long()
            )
    return out
