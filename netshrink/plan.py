"""The compression plan: which codec stores each tensor of a model, and its encoded form.

Steps of a recipe assign codecs through `CompressionPlan.assign`, which encodes the tensor, writes the
decoded value back into the model, and caches the encoding. So the model in memory is always exactly
the model the file will load, and accuracy measured on it is the accuracy of the file. When a later
step (retraining) changes a tensor, its cached encoding no longer matches the tensor's fingerprint
and `encode_all` encodes it afresh with the same codec.

Tensors that share storage (an embedding tied to the output layer: two state-dict names, one
tensor) are stored once, under the first name; the others become tied records.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import nn

from netshrink.format.codecs import Codec, Dense, Encoded
from netshrink.format.container import TensorRecord

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
    encoded: Encoded | None = None
    digest: bytes | None = None


class CompressionPlan:
    """Codec per state-dict tensor name; unassigned tensors are stored exactly."""

    def __init__(self) -> None:
        self.entries: dict[str, PlanEntry] = {}

    def codec_for(self, name: str) -> Codec:
        entry = self.entries.get(name)
        return entry.codec if entry else EXACT

    def assign(self, model: nn.Module, name: str, codec: Codec) -> torch.Tensor:
        """Store tensor `name` with `codec`: encode it, write the decoded value back, cache both."""
        tensor = model.state_dict()[name]
        encoded, decoded = codec.round_trip(tensor)
        with torch.no_grad():
            tensor.copy_(decoded)
        self.entries[name] = PlanEntry(codec, encoded, fingerprint(tensor))
        return tensor

    def set_encoded(self, model: nn.Module, name: str, codec: Codec, encoded: Encoded, decoded: torch.Tensor) -> None:
        """Record an encoding a method built itself (e.g. fine-tuned centroids) and load its value."""
        tensor = model.state_dict()[name]
        with torch.no_grad():
            tensor.copy_(decoded.reshape(tensor.shape))
        self.entries[name] = PlanEntry(codec, encoded, fingerprint(tensor))

    def encode_all(self, model: nn.Module) -> list[TensorRecord]:
        """Every state-dict tensor as a TensorRecord, re-encoding those changed since assignment;
        a tensor tied to an earlier one is recorded as tied to it, with no bytes of its own."""
        owners = _module_types(model)
        state = model.state_dict()
        first_of = tied_names(state)
        records, stored = [], {}
        for name, tensor in state.items():
            source = first_of.get(name, name)
            if source != name:
                records.append(TensorRecord(name, stored[source], owners.get(name, ""), tied_to=source))
                continue
            group = [other for other, first in first_of.items() if first == name] or [name]
            stored[name] = self._encode(tensor, group)
            records.append(TensorRecord(name, stored[name], owners.get(name, "")))
        return records

    def _encode(self, tensor: torch.Tensor, names: list[str]) -> Encoded:
        """The encoding of a tensor known under `names`: a cached one still valid, else the codec a
        step assigned to any of its names (the last name's, if several), else exact storage."""
        entries = [self.entries[n] for n in names if n in self.entries]
        if not entries:
            return EXACT.encode(tensor)
        digest = fingerprint(tensor)
        valid = [e for e in entries if e.encoded is not None and e.digest == digest]
        return valid[-1].encoded if valid else entries[-1].codec.encode(tensor)


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
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.stride(),
               tensor.dtype)
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
