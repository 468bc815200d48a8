"""Encodings made on one rank and recorded on all: the one-shot work of a step spread over the ranks.

A step that encodes groups of tensors independently (a palette per layer, a PQ codebook per layer
or per group of layers without calibration) hands each group to `encode_apart`: the group is
encoded on the rank that owns it (runtime.share_work: by index, never by timing) into a scratch
plan, and every rank then records the same encodings in its own plan, in the order of the groups.
The codes are the same for any number of ranks, so is the file. Tensors of one group that share a
codebook still share it after the exchange (pickling keeps shared objects shared).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from torch import nn

from netshrink.parallel.runtime import share_work
from netshrink.plan import CompressionPlan

T = TypeVar("T")


def encode_apart(
    model: nn.Module,
    plan: CompressionPlan,
    groups: Sequence[Sequence[str]],
    encode: Callable[[CompressionPlan, list[str]], T],
) -> list[T]:
    """`encode(scratch_plan, group)` for every group, each on one rank; the encodings it recorded in
    its scratch plan are then set in `plan` (and the model) on every rank. Returns what each call
    returned, in the order of `groups`. `encode` must depend on its group's tensors alone."""
    keys = [str(index) for index in range(len(groups))]

    def apart(key: str) -> tuple[T, dict[str, tuple]]:
        scratch = CompressionPlan()
        result = encode(scratch, list(groups[int(key)]))
        return result, {name: (entry.codec, entry.encoded) for name, entry in scratch.entries.items()}

    done = share_work(keys, apart)
    results = []
    for key in keys:
        result, entries = done[key]
        for name, (codec, encoded) in entries.items():
            plan.set_encoded(model, name, codec, encoded)
        results.append(result)
    return results
