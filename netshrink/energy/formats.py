"""What the hardware sees of a stored weight tensor: value width, stored bits, density, look-ups."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from netshrink.format.codecs import PQ, Dense, Encoded, Palette, Sparse
from netshrink.format.codecs.dense import DTYPES


@dataclass(frozen=True)
class WeightFormat:
    """What the hardware sees of one weight tensor.

    value_bits: width of a weight at the multiplier; stored_bits: every bit of the tensor in its
    stored form; codebook_bits: the part of it that is shared codebooks; density: fraction of
    weights present (only the sparse codec lets a MAC be skipped); shared: decoded by a look-up.
    """

    value_bits: int
    stored_bits: int
    codebook_bits: int = 0
    density: float = 1.0
    shared: bool = False

    @classmethod
    def dense(cls, numel: int, bits: int) -> WeightFormat:
        return cls(value_bits=bits, stored_bits=numel * bits)

    def rf_bits(self, numel: int) -> float:
        """Bits per present weight as kept next to the multiplier (index + position, or the value)."""
        present = numel * self.density
        return (self.stored_bits - self.codebook_bits) / present if present else 0.0


def weight_format(enc: Encoded) -> WeightFormat:
    """The format of an encoded weight, read from its codec tree (as written in the .nsk file)."""
    kinds = enc.bytes_by_kind()
    density, node = 1.0, enc
    if enc.written_by(Sparse) and "values" in enc.children:
        node = enc.children["values"]
        density = node.numel / enc.numel if enc.numel else 1.0
    value_bits, shared = _value_bits(node)
    return WeightFormat(value_bits, 8 * sum(kinds.values()), 8 * kinds["codebook"], density, shared)


def _value_bits(enc: Encoded) -> tuple[int, bool]:
    """(bits of a decoded weight value, whether decoding is a codebook look-up)."""
    if enc.written_by((Palette, PQ)):
        return 16, True  # both store fp16 codebooks (codecs/palette.py, codecs/pq.py)
    if enc.written_by(Dense):
        dtype = DTYPES.get(enc.params.get("dtype"), torch.float32)
        return 8 * torch.empty((), dtype=dtype).element_size(), False
    children = list(enc.children.values())
    return _value_bits(children[0]) if children else (32, False)


def dense_formats(model: nn.Module) -> dict[str, WeightFormat]:
    """Formats of an in-memory model: every weight dense at its dtype (a dense tensor has no zeros to skip)."""
    return {
        name: WeightFormat.dense(tensor.numel(), 8 * tensor.element_size())
        for name, tensor in model.state_dict().items()
        if name.endswith("weight")
    }
