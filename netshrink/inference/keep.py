"""Loading a file with its palette and PQ weights kept compressed (`netshrink.load(path, keep_compressed=True)`).

While a file is read one tensor at a time (`netshrink.decoding.fill_module`), `KeepCompressed.take`
is offered each record first. The weight of an `nn.Linear` or `nn.Embedding` coded by a palette or
PQ (at most 256 values) replaces its layer by a `CompressedLinear` or `CompressedEmbedding` that
holds the codes: the dense weight is never built. A record tied to a kept one (a tied LM head,
stored once as `tied_to`) gets a layer over the very same storage. Everything else is decoded as
without the flag: dense, fp16 casts, low-rank factors, and sparse weights. A pruned weight stays
dense because a sparse kernel only pays on a CPU well below ~10 % density (index overhead and
irregular reads eat the saved multiply-adds above that), far sparser than pruning leaves networks
that keep their accuracy.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from netshrink.decoding import decode_tensor
from netshrink.format.container import TensorRecord
from netshrink.inference.compressed_linear import CompressedEmbedding, CompressedLinear
from netshrink.inference.weights import CompressedWeights, weights_of
from netshrink.placement import TensorPlacer

KEPT_LAYERS = (nn.Linear, nn.Embedding)


class KeepCompressed:
    """Offered each record of a file as it loads: takes those whose layer can run from the codes."""

    def __init__(self) -> None:
        #: Storage of every weight kept so far, by state-dict name (a tied record finds its source here).
        self.kept: dict[str, CompressedWeights] = {}

    def take(self, rec: TensorRecord, placer: TensorPlacer, path: str | Path) -> bool:
        """Put `rec` into the module as a compressed layer; False (nothing done) when it is not one
        that stays compressed, for the loader to decode and place as usual."""
        owner_name, _, attr = rec.name.rpartition(".")
        owner = placer.module.get_submodule(owner_name) if attr == "weight" else None
        if not isinstance(owner, KEPT_LAYERS):
            return self._dense_tie(rec, placer)
        weights = self._weights(rec, owner, path)
        layer = None if weights is None else _replacement(owner, weights)
        if layer is None:
            return self._dense_tie(rec, placer)
        placer.forget(rec.name)
        _set_submodule(placer.module, owner_name, layer)
        self.kept[rec.name] = weights
        return True

    def _weights(self, rec: TensorRecord, owner: nn.Module, path: str | Path) -> CompressedWeights | None:
        """The storage for `rec`: the kept one it is tied to, or read from its codes (a corrupt
        record is the loader's one-line FormatError naming the file and tensor)."""
        if rec.tied_to:
            weights = self.kept.get(rec.tied_to)
            return weights if weights is not None and _fits(owner, weights) else None
        rows, columns = owner.weight.shape
        return decode_tensor(rec, path, lambda enc: weights_of(enc, rows, columns))

    def _dense_tie(self, rec: TensorRecord, placer: TensorPlacer) -> bool:
        """A record tied to a kept weight whose own layer cannot run from codes gets that weight
        decoded (the module may tie the two names, but one of them is a compressed layer now)."""
        weights = self.kept.get(rec.tied_to) if rec.tied_to else None
        if weights is None:
            return False
        placer.place(rec.name, weights.decode_rows(_all_rows(weights)))
        return True


def _replacement(layer: nn.Module, weights: CompressedWeights) -> nn.Module | None:
    if isinstance(layer, nn.Linear):
        return CompressedLinear.replacing(layer, weights)
    return CompressedEmbedding.replacing(layer, weights)


def _fits(layer: nn.Module, weights: CompressedWeights) -> bool:
    """Whether a storage (kept for another name) has this layer's weight shape."""
    return tuple(layer.weight.shape) == (weights.rows, weights.columns)


def _all_rows(weights: CompressedWeights) -> torch.Tensor:
    return torch.arange(weights.rows, device=weights.codebook.device)


def _set_submodule(module: nn.Module, name: str, layer: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(module.get_submodule(parent_name), child, layer)
