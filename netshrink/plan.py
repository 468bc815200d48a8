"""The compression plan: which codec stores each tensor of a model, and its encoded form.

Steps of a recipe assign codecs through `CompressionPlan.assign` (the codec fits its state, e.g. a
codebook, and encodes the tensor) or hand over codes they chose themselves through `set_encoded`;
either way the plan decodes the encoding itself and writes the decoded value back into the model.
So the model in memory is exactly the model the file will load, and accuracy measured on it is the
accuracy of the file. When a later step (retraining) changes a coded tensor, `refresh` (run after
every step, and before saving) encodes it again with its codec's current state: the same codebook,
shared or fine-tuned, gives the changed tensor new codes, and the model takes the decoded value.

Tensors that share storage (an embedding tied to the output layer: two state-dict names, one
tensor) are stored once, under the first name; the others become tied records. Tensors encoded with
the same `Codebook` object (their own, not a nested codec's) share it: the first in the file stores
it, the others borrow its stream.

The model may live on any device: codecs encode a CPU copy of a tensor (they are written for CPU
and numpy), and the decoded value is copied back onto the tensor's own device.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from netshrink.errors import CodecError
from netshrink.format.codecs import Codebook, Codec, Dense, Encoded, decode
from netshrink.format.container import TensorRecord

log = logging.getLogger(__name__)

EXACT = Dense("exact")


def fingerprint(tensor: torch.Tensor) -> bytes:
    """A digest of a tensor's exact values, to tell whether a cached encoding is still valid."""
    flat = tensor.detach().contiguous().cpu().reshape(-1)
    if flat.dtype == torch.bfloat16:
        flat = flat.view(torch.int16)
    return hashlib.blake2b(flat.numpy().tobytes(), digest_size=16).digest()


@dataclass
class PlanEntry:
    codec: Codec
    encoded: Encoded
    digest: bytes

    @property
    def state(self) -> Any:
        """The codec state the tensor was encoded with (its codebook), to encode it again with."""
        return self.encoded.state


class CompressionPlan:
    """Codec per state-dict tensor name; unassigned tensors are stored exactly."""

    def __init__(self) -> None:
        self.entries: dict[str, PlanEntry] = {}

    def codec_for(self, name: str) -> Codec:
        entry = self.entries.get(name)
        return entry.codec if entry else EXACT

    def assign(self, model: nn.Module, name: str, codec: Codec, state: Any = None) -> torch.Tensor:
        """Store tensor `name` with `codec`: encode it with `state` (None: the codec fits its state on
        the tensor; give a `Codebook` to share it with other tensors) and load the decoded value."""
        return self.set_encoded(model, name, codec, codec.encode(model.state_dict()[name].detach().cpu(), state))

    def set_encoded(self, model: nn.Module, name: str, codec: Codec, encoded: Encoded) -> torch.Tensor:
        """Record `codec`'s encoding of tensor `name` (codes a method chose itself, e.g. by output
        error or error feedback) and load its decoded value into the model."""
        tensor = model.state_dict()[name]
        if tuple(encoded.shape) != tuple(tensor.shape):
            raise CodecError(
                f"an encoding of shape {tuple(encoded.shape)} cannot store {name!r} of shape {tuple(tensor.shape)}"
            )
        with torch.no_grad():
            tensor.copy_(decode(encoded).to(device=tensor.device, dtype=tensor.dtype))
        self.entries[name] = PlanEntry(codec, encoded, fingerprint(tensor))
        return tensor

    def refresh(self, model: nn.Module) -> list[str]:
        """Encode again, with their codec's current state, the tensors changed since they were
        encoded, and load the decoded values. Returns the names of the tensors re-encoded."""
        state = model.state_dict()
        first_of = tied_names(state)
        changed = []
        for name, tensor in state.items():
            names = self._assigned(name, first_of)
            if names and first_of.get(name, name) == name and self._cached(tensor, names) is None:
                entry = self.entries[names[-1]]  # several names of one tensor: the last assigned codec
                encoded = entry.codec.encode(tensor.detach().cpu(), entry.state)
                self.set_encoded(model, names[-1], entry.codec, encoded)
                changed.append(name)
        if changed:
            log.info(
                "%d coded tensors changed since they were encoded; encoded again with their codebooks: %s",
                len(changed),
                ", ".join(changed[:5]) + (" ..." if len(changed) > 5 else ""),
            )
        return changed

    def encode_all(self, model: nn.Module) -> list[TensorRecord]:
        """Every state-dict tensor as a TensorRecord, after `refresh`. A tensor tied to an earlier one
        is recorded as tied to it, with no bytes of its own; a tensor encoded with the codebook of an
        earlier one borrows that tensor's codebook stream."""
        self.refresh(model)
        owners = _module_types(model)
        state = model.state_dict()
        first_of = tied_names(state)
        records, stored, lenders = [], {}, {}
        for name, tensor in state.items():
            source = first_of.get(name, name)
            if source != name:
                records.append(TensorRecord(name, stored[source], owners.get(name, ""), tied_to=source))
                continue
            names = self._assigned(name, first_of)
            encoded = self._cached(tensor, names) if names else EXACT.encode(tensor.detach().cpu())
            stored[name] = _lent(encoded, name, lenders)
            records.append(TensorRecord(name, stored[name], owners.get(name, "")))
        return records

    def _assigned(self, name: str, first_of: dict[str, str]) -> list[str]:
        """The names of tensor `name` (several when tied) that a step gave a codec, in state-dict order."""
        group = [other for other, first in first_of.items() if first == name] or [name]
        return [n for n in group if n in self.entries]

    def _cached(self, tensor: torch.Tensor, names: list[str]) -> Encoded | None:
        """The encoding of a tensor known under `names` that still matches its values (the last
        name's, if several do), or None."""
        digest = fingerprint(tensor)
        return next((self.entries[n].encoded for n in reversed(names) if self.entries[n].digest == digest), None)


def _lent(encoded: Encoded, name: str, lenders: dict[Codebook, str]) -> Encoded:
    """`encoded`, borrowing its codebook stream from the first tensor (in `lenders`) that holds the
    same Codebook; else `name` becomes that codebook's lender."""
    book = encoded.state if isinstance(encoded.state, Codebook) else None
    if book is None:
        return encoded
    if book in lenders:
        return encoded.borrowing_codebook(lenders[book])
    lenders[book] = name
    return encoded


def tied_names(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """name -> first state-dict name of the same tensor, for tensors known under several names.

    Two names are one tensor when they view the same storage at the same offset, shape and stride
    (what `lm_head.weight = embed.weight` produces). Empty tensors are never tied.
    """
    first: dict[tuple, str] = {}
    groups: dict[str, str] = {}
    for name, tensor in state.items():
        if tensor.numel() == 0 or tensor.device.type == "meta":
            continue
        key = (
            tensor.untyped_storage().data_ptr(),
            tensor.storage_offset(),
            tuple(tensor.shape),
            tensor.stride(),
            tensor.dtype,
        )
        groups[name] = first.setdefault(key, name)
    counts: dict[str, int] = {}
    for source in groups.values():
        counts[source] = counts.get(source, 0) + 1
    return {name: source for name, source in groups.items() if counts[source] > 1}


#: Layer kinds recorded by their torch base class, so a subclass (EfficientNet's SameConv2d) still
#: counts as a conv weight in `weights_ratio` and every other per-kind report.
_LAYER_KINDS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.Embedding)


def module_kind(module: nn.Module) -> str:
    """The torch layer class a module is (for subclasses of the layers above), else its class name."""
    return next((kind.__name__ for kind in _LAYER_KINDS if isinstance(module, kind)), type(module).__name__)


def _module_types(model: nn.Module) -> dict[str, str]:
    """state-dict name -> kind of the module that owns it (`module_kind`)."""
    owners = {}
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        for local, _ in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            owners[prefix + local] = module_kind(module)
    return owners
