"""PQ codec: product quantization of weight sub-vectors (Deep k-Means, Wu et al. 2018; "And the
Bit Goes Down", Stock et al. 2020; Jégou et al. 2011 for PQ itself).

The tensor is viewed as rows (shape[0], -1) and every row is cut into contiguous sub-vectors of
length d. For a conv weight (O, I, KH, KW), d = KW gives one vector per kernel row (Deep k-Means'
row-wise sharing), d = KH*KW one per kernel, d = 2*KH*KW two neighbouring in-channel kernels
(Stock et al.); for a Linear (O, I) the vectors run along the input. All sub-vectors share one
codebook of k codewords (`fit`: k-means by `netshrink.cluster.kmeans`, the codec's state);
`encode` gives each sub-vector the index of its nearest codeword. The file holds the codebook in
fp16 and the indices entropy coded (rANS). Several tensors may share one codebook (they are
encoded with the same `Codebook` object): the file stores it once, with the first of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from netshrink.cluster import assign_nearest, kmeans
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
from netshrink.format.entropy import MAX_ALPHABET, decode_symbols, encode_symbols

#: Largest sub-vector length a file may declare (a 3x3x... kernel group is far below it).
MAX_D = 1 << 16
MAX_ITERS = 10_000
#: Divisors listed in the message for a d that does not divide the row length.
_DIVISORS_SHOWN = 12


def row_length(shape: tuple[int, ...] | torch.Size) -> int:
    """Elements per row when a tensor is viewed as (shape[0], -1)."""
    return math.prod(shape[1:])


def subvectors(tensor: torch.Tensor, d: int) -> torch.Tensor:
    """[n, d] contiguous sub-vectors of the rows (shape[0], -1): the one reshape every PQ user
    (codec, Deep k-Means regulariser, output-aware PQ) must agree on."""
    _check_d(tuple(tensor.shape), d)
    return tensor.reshape(-1, d)


def from_subvectors(vectors: torch.Tensor, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """Inverse of `subvectors`: the tensor of `shape` whose sub-vectors are `vectors`."""
    if vectors.dim() != 2 or vectors.numel() != math.prod(shape):
        raise CodecError(f"{tuple(vectors.shape)} sub-vectors do not fill a tensor of shape {tuple(shape)}")
    _check_d(tuple(shape), vectors.shape[1])
    return vectors.reshape(shape)


def _check_d(shape: tuple[int, ...], d: int) -> None:
    if len(shape) == 0:
        raise CodecError("pq needs a tensor with at least one dimension, got a scalar")
    length = row_length(shape)
    if isinstance(d, bool) or not isinstance(d, int) or d < 1 or length % d:
        divisors = _divisors(length)
        shown = ", ".join(map(str, divisors[:_DIVISORS_SHOWN])) + (", ..." if len(divisors) > _DIVISORS_SHOWN else "")
        raise CodecError(f"pq d={d!r} does not divide the row length {length} of shape {shape}; use d in {{{shown}}}")


def _divisors(length: int) -> list[int]:
    """The d values that divide `length`, ascending (any d divides an empty row; 1 stands for them)."""
    if length == 0:
        return [1]
    small = [v for v in range(1, math.isqrt(length) + 1) if length % v == 0]
    return sorted(set(small + [length // v for v in small]))


@register_codec
@dataclass(frozen=True)
class PQ(Codec):
    """k shared codewords of d consecutive weights, fp16 codebook, entropy-coded indices."""

    name: ClassVar[str] = "pq"
    d: int
    k: int = 256
    iters: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        for key, low, high in (("d", 1, MAX_D), ("k", 1, MAX_ALPHABET), ("iters", 0, MAX_ITERS)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise CodecError(f"pq {key} must be an integer in [{low}, {high}], got {value!r}")

    def fit(self, tensor: torch.Tensor) -> Codebook:
        """min(k, sub-vectors) codewords by k-means of the tensor's sub-vectors, in fp16."""
        vectors = self._vectors(tensor)
        if vectors.shape[0] == 0:
            return Codebook(torch.zeros(0, self.d, dtype=torch.float16))
        return Codebook.fp16(kmeans(vectors, min(self.k, vectors.shape[0]), iters=self.iters, seed=self.seed).centroids)

    def encode(self, tensor: torch.Tensor, state: Codebook | None = None) -> Encoded:
        """Each sub-vector coded by its nearest codeword of `state`. The codewords are the stored
        fp16 ones, so the file decodes to exactly what the model was evaluated with."""
        state = self.fit(tensor) if state is None else state
        vectors = self._vectors(tensor)
        if vectors.shape[0] == 0:
            return PQ.encode_assigned(state, torch.zeros(0, dtype=torch.int64), tensor.shape)
        labels, _ = assign_nearest(vectors, state.values.float())
        return PQ.encode_assigned(state, labels, tensor.shape)

    def _vectors(self, tensor: torch.Tensor) -> torch.Tensor:
        require_float_tensor(tensor, self.name)
        return subvectors(tensor.detach().float(), self.d)

    @classmethod
    def encode_assigned(
        cls, codebook: Codebook | torch.Tensor, labels: torch.Tensor, shape: tuple[int, ...] | torch.Size
    ) -> Encoded:
        """Store a given codebook [k, d] (rounded to fp16) and labels [n] without clustering: for
        methods that choose the codes themselves (in a layer's output metric) or fine-tune the
        codewords by gradient (Stock et al. 2020, sec. 3.3). Tensors given the same `Codebook`
        share it: the file stores it once."""
        values = codebook.values if isinstance(codebook, Codebook) else codebook
        if values.dim() != 2 or not values.is_floating_point():
            raise CodecError(f"pq codebook must be a float [k, d] tensor, got {values.dtype} {tuple(values.shape)}")
        k, d = values.shape
        _check_d(tuple(shape), d)
        labels = _checked_labels(labels, math.prod(shape) // d, k)
        book = codebook if isinstance(codebook, Codebook) else Codebook.fp16(values)
        params = {"d": d, "k": k, "label": f"pq d={d} k={k}"}
        streams = {
            "codebook": Stream("codebook", tensor_to_bytes(book.values)),
            "indices": Stream("indices", encode_symbols(labels.numpy(), max(k, 1))),
        }
        return Encoded(cls.name, tuple(shape), params, streams, state=book)

    @classmethod
    def decode(cls, enc: Encoded) -> torch.Tensor:
        codebook, labels = cls.codebook_and_labels(enc)
        return codebook.float()[labels].reshape(enc.shape)

    @classmethod
    def labels_of(cls, enc: Encoded) -> torch.Tensor:
        """The codeword index of each sub-vector (for methods that fine-tune the codewords)."""
        return cls.codebook_and_labels(enc)[1]

    @classmethod
    def codebook_and_labels(cls, enc: Encoded, dtype: torch.dtype = torch.int64) -> tuple[torch.Tensor, torch.Tensor]:
        """The fp16 codebook [k, d] and labels [n] (int64, or `dtype`: int32 is what decoding gives,
        without a copy), validated before anything is allocated."""
        if len(enc.shape) == 0:
            raise FormatError("pq tensor has a scalar shape; pq needs at least one dimension")
        d = require_int(enc.params, "d", 1, MAX_D, cls.name)
        if row_length(enc.shape) % d:
            raise FormatError(f"pq d={d} does not divide the row length {row_length(enc.shape)} of shape {enc.shape}")
        n = enc.numel // d
        k = require_int(enc.params, "k", 0 if n == 0 else 1, MAX_ALPHABET, cls.name)
        codebook = bytes_to_tensor(require_stream(enc, "codebook", "codebook"), torch.float16, k * d)
        labels = decode_symbols(require_stream(enc, "indices", "indices"), n, max(k, 1))
        return codebook.reshape(k, d), torch.from_numpy(labels).to(dtype)

    def describe(self) -> str:
        return f"pq d={self.d} k={self.k}"


def _checked_labels(labels: torch.Tensor, n: int, k: int) -> torch.Tensor:
    labels = labels.detach().reshape(-1).cpu()
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise CodecError(f"pq labels must be integers, got {labels.dtype}")
    if labels.numel() != n:
        raise CodecError(f"pq got {labels.numel()} labels for {n} sub-vectors")
    low, high = (int(labels.min()), int(labels.max())) if n else (0, -1)
    if low < 0 or high >= k:
        raise CodecError(f"pq labels must index the {k} codewords, got range [{low}, {high}]")
    return labels.to(torch.int64)
