"""Low-rank codec: truncated SVD of a weight matrix (Denton et al. 2014; Xue et al. 2013).

W (out x in; conv weights are viewed as out x in*kh*kw) is stored as two factors U (out x r) and
V (r x in) with W ~= U V, each factor encoded by an inner codec (fp32 by default, fp16 or a palette
to nest with weight sharing). The singular values are split evenly, U = U_r sqrt(S), V = sqrt(S) V_r^T,
so both factors have the same scale and survive 16-bit storage equally well. The rank is given, or
chosen as the smallest that keeps a fraction `energy` of sum(sigma^2). The codec's state is that
rank and the states of the factors' codec: a tensor a later step retrains is factorised again at
the same rank, its factors coded with the same codebooks.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch

from netshrink.errors import CodecError, FormatError
from netshrink.format.codecs.base import (
    Codec,
    Encoded,
    decode,
    register_codec,
    require_child,
    require_float_tensor,
    require_int,
)
from netshrink.format.codecs.dense import Dense


def rank_for_energy(singular_values: torch.Tensor, energy: float) -> int:
    """Smallest r whose leading singular values keep `energy` of the squared Frobenius norm."""
    power = singular_values.double() ** 2
    if float(power.sum()) == 0.0:
        return 1
    kept = torch.cumsum(power, 0) / power.sum()
    return int(torch.searchsorted(kept, torch.tensor(energy, dtype=kept.dtype)).item()) + 1


@dataclass(eq=False)
class LowRankState:
    """The rank, and the states of the inner codec for each factor."""

    rank: int
    u: Any = None
    v: Any = None


@register_codec
@dataclass(frozen=True)
class LowRank(Codec):
    """W ~= U V with rank `rank`, or the rank keeping `energy` of sum(sigma^2)."""

    name: ClassVar[str] = "lowrank"
    rank: int | None = None
    energy: float | None = None
    inner: Codec = field(default_factory=lambda: Dense("fp32"))

    def __post_init__(self) -> None:
        if (self.rank is None) == (self.energy is None):
            raise CodecError("lowrank needs exactly one of rank or energy")
        if self.rank is not None and (not isinstance(self.rank, int) or self.rank < 1):
            raise CodecError(f"lowrank rank must be a positive integer, got {self.rank!r}")
        if self.energy is not None and not 0.0 < float(self.energy) <= 1.0:
            raise CodecError(f"lowrank energy must be in (0, 1], got {self.energy!r}")

    def with_inner(self, inner: Codec) -> Codec:
        return replace(self, inner=self.inner.with_inner(inner))

    def fit(self, tensor: torch.Tensor) -> LowRankState:
        """The rank (given, or by energy) and the inner codec fitted on each factor."""
        left, right = self._factors(tensor, self.rank)
        return LowRankState(left.shape[1], self.inner.fit(left), self.inner.fit(right))

    def encode(self, tensor: torch.Tensor, state: LowRankState | None = None) -> Encoded:
        """The factors at the state's rank, each by the inner codec with its state."""
        state = self.fit(tensor) if state is None else state
        left, right = self._factors(tensor, state.rank)
        params = {"rank": left.shape[1], "label": f"lowrank{left.shape[1]}"}
        children = {"u": self.inner.encode(left, state.u), "v": self.inner.encode(right, state.v)}
        return Encoded(self.name, tuple(tensor.shape), params, {}, children, state=state)

    def _factors(self, tensor: torch.Tensor, rank: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """U_r sqrt(S) and sqrt(S) V_r^T at `rank` (None: the rank keeping `energy`)."""
        require_float_tensor(tensor, self.name)
        if tensor.dim() < 2:
            raise CodecError(f"lowrank needs a matrix or conv weight, got shape {tuple(tensor.shape)}")
        matrix = tensor.detach().double().reshape(tensor.shape[0], -1)
        u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
        rank = min(rank if rank is not None else rank_for_energy(s, float(self.energy)), s.numel())
        root = s[:rank].sqrt()
        return (u[:, :rank] * root).float(), (root[:, None] * vh[:rank]).float()

    @classmethod
    def decode(cls, enc: Encoded) -> torch.Tensor:
        if len(enc.shape) < 2:
            raise FormatError(f"lowrank tensor has shape {enc.shape}; it needs at least 2 dimensions")
        rows = enc.shape[0]
        cols = enc.numel // rows if rows else 0
        rank = require_int(enc.params, "rank", 1, max(1, min(rows, cols)), cls.name)
        left_enc, right_enc = require_child(enc, "u"), require_child(enc, "v")
        if left_enc.shape != (rows, rank) or right_enc.shape != (rank, cols):
            raise FormatError(f"lowrank factors {left_enc.shape} x {right_enc.shape} do not make {enc.shape}")
        return (decode(left_enc).float() @ decode(right_enc).float()).reshape(enc.shape)

    def describe(self) -> str:
        size = f"r{self.rank}" if self.rank is not None else f"e{self.energy}"
        return f"lowrank{size}({self.inner.describe()})"
