"""Sparse codec: a pruned tensor as its nonzero values plus their positions.

Positions are stored as relative (gap) indices, as Deep Compression does (Han et al. 2016, sec. 2):
each symbol is the number of zeros skipped before the next nonzero. A gap too long for the alphabet
of M symbols is written as the "filler" symbol M-1, which skips M-1 zeros and carries no value
(Deep Compression pads with a zero weight instead; a pure skip symbol costs no value slot). The gap
stream goes through the shared entropy coder; M is picked per tensor as the cheapest of a few sizes.
The nonzero values form a 1-D tensor encoded by any inner codec: `Sparse(Palette(5))` is pruning
followed by weight sharing of the survivors. The codec's state is which weights survive and the
inner codec's state: a pruned tensor that a later step retrains is re-encoded with the same
positions (a weight pruned stays pruned) and the same values' codebook.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
import torch

from netshrink.errors import CodecError, FormatError
from netshrink.format.codecs.base import (
    Codec,
    Encoded,
    Stream,
    decode,
    register_codec,
    require_child,
    require_int,
    require_stream,
)
from netshrink.format.codecs.dense import Dense
from netshrink.format.entropy import decode_symbols, encode_symbols

GAP_ALPHABETS = (4, 16, 64, 256, 4096, 65536)


@dataclass(eq=False)
class SparseState:
    """The flat positions of the weights that survive (ascending) and the state of their values' codec."""

    positions: np.ndarray
    values: Any = None


def gaps_from_positions(positions: np.ndarray, alphabet: int) -> np.ndarray:
    """Gap symbols for sorted flat positions, with filler symbols for gaps >= alphabet - 1."""
    filler = alphabet - 1
    gaps = np.diff(positions, prepend=-1) - 1
    fillers = gaps // filler
    remainders = gaps - fillers * filler
    # Each nonzero becomes `fillers` filler symbols followed by its remainder symbol.
    counts = fillers + 1
    symbols = np.full(int(counts.sum()), filler, dtype=np.int64)
    symbols[np.cumsum(counts) - 1] = remainders
    return symbols


def positions_from_gaps(symbols: np.ndarray, alphabet: int) -> np.ndarray:
    """Inverse of gaps_from_positions."""
    filler = alphabet - 1
    is_value = symbols != filler
    advance = np.where(is_value, symbols + 1, filler)
    ends = np.cumsum(advance) - 1
    return ends[is_value]


@register_codec
@dataclass(frozen=True)
class Sparse(Codec):
    """Nonzero values (inner codec) + entropy-coded gap positions."""

    name: ClassVar[str] = "sparse"
    inner: Codec = field(default_factory=lambda: Dense("exact"))

    def with_inner(self, inner: Codec) -> Codec:
        return replace(self, inner=self.inner.with_inner(inner))

    def fit(self, tensor: torch.Tensor) -> SparseState:
        """The nonzero weights' positions, and the inner codec fitted on their values."""
        flat = tensor.detach().reshape(-1)
        positions = torch.nonzero(flat, as_tuple=True)[0].numpy().astype(np.int64)
        return SparseState(positions, self.inner.fit(flat[torch.from_numpy(positions)]))

    def encode(self, tensor: torch.Tensor, state: SparseState | None = None) -> Encoded:
        """The weights at the state's positions, by the inner codec with its state (the others: zero)."""
        state = self.fit(tensor) if state is None else state
        flat = tensor.detach().reshape(-1)
        if state.positions.size and state.positions[-1] >= flat.numel():
            raise CodecError(f"sparse positions reach {state.positions[-1]}, the tensor has {flat.numel()} weights")
        values = self.inner.encode(flat[torch.from_numpy(state.positions)], state.values)
        alphabet, stream, count = min(
            (self._gap_stream(state.positions, m) for m in GAP_ALPHABETS), key=lambda option: len(option[1])
        )
        params = {"alphabet": alphabet, "symbols": count, "label": "sparse"}
        return Encoded(
            self.name,
            tuple(tensor.shape),
            params,
            {"positions": Stream("positions", stream)},
            {"values": values},
            state=state,
        )

    @staticmethod
    def _gap_stream(positions: np.ndarray, alphabet: int) -> tuple[int, bytes, int]:
        symbols = gaps_from_positions(positions, alphabet)
        return alphabet, encode_symbols(symbols, alphabet), int(symbols.size)

    @classmethod
    def decode(cls, enc: Encoded) -> torch.Tensor:
        numel = enc.numel
        alphabet = require_int(enc.params, "alphabet", 2, 1 << 16, cls.name)
        count = require_int(enc.params, "symbols", 0, 2 * numel + 1, cls.name)
        symbols = decode_symbols(require_stream(enc, "positions", "positions"), count, alphabet)
        positions = positions_from_gaps(symbols, alphabet)
        if positions.size and positions[-1] >= numel:
            raise FormatError(f"sparse positions run past the tensor's {numel} elements")
        values_enc = require_child(enc, "values")
        if values_enc.shape != (positions.size,):
            raise FormatError(f"sparse tensor has {positions.size} positions but {values_enc.shape} values")
        values = decode(values_enc)
        out = torch.zeros(numel, dtype=values.dtype)
        out[torch.from_numpy(positions)] = values
        return out.reshape(enc.shape)

    def describe(self) -> str:
        return f"sparse({self.inner.describe()})"
