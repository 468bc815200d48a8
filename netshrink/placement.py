"""Putting tensors into a module one at a time, by state-dict name, on the device asked for.

A loader that builds the whole state dict first and then calls `load_state_dict` holds the weights
twice. `TensorPlacer` takes one tensor at a time instead: into a module built with its parameters
on the meta device (`zoo.build_empty`) it assigns the tensor in place of the meta one, as
`load_state_dict(assign=True)` does; into a real tensor it copies, as `load_state_dict` does. Names
the module ties (one tensor under two names) receive the same tensor, so ties survive.
"""

from __future__ import annotations

import torch
from torch import nn

from netshrink.errors import ModelError, NetshrinkError

#: A device as the user names it: "cpu", "cuda", "cuda:1", a torch.device, or None (leave as read).
Device = str | torch.device | None
SUPPORTED_DEVICES = ("cpu", "cuda")


def target_device(device: Device) -> torch.device | None:
    """The torch device `device` names, checked to exist here: a missing one is a one-line error."""
    if device is None:
        return None
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise NetshrinkError(f"unknown device {device!r}: give cpu, cuda or cuda:N") from None
    if target.type not in SUPPORTED_DEVICES:
        raise NetshrinkError(f"device {device!r} is not supported: give cpu, cuda or cuda:N")
    if target.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (target.index or 0) >= count:
            raise NetshrinkError(f"device {device!r} is not available: this machine has {count} CUDA device(s)")
    return target


def tied_names(module: nn.Module) -> dict[str, list[str]]:
    """For every state-dict name, all the names that hold the very same tensor (itself included)."""
    slots = module.state_dict(keep_vars=True)
    by_tensor: dict[int, list[str]] = {}
    for name, tensor in slots.items():
        by_tensor.setdefault(id(tensor), []).append(name)
    return {name: by_tensor[id(tensor)] for name, tensor in slots.items()}


class TensorPlacer:
    """Places tensors into `module` by state-dict name: assigned over meta tensors, copied into real
    ones; on `device` when given (else where the value is)."""

    def __init__(self, module: nn.Module, device: torch.device | None = None) -> None:
        self.module, self.device = module, device
        self.slots = module.state_dict(keep_vars=True)
        self.aliases = tied_names(module)

    def place(self, name: str, value: torch.Tensor) -> None:
        """`value` becomes tensor `name` of the module (and of every name tied to it)."""
        current = self.slots[name]
        if not current.is_meta:
            with torch.no_grad():
                current.copy_(value)
            return
        value = value.to(device=self.device, dtype=current.dtype)
        if isinstance(current, nn.Parameter):
            value = nn.Parameter(value, requires_grad=current.requires_grad)
        for alias in self.aliases[name]:
            owner, _, attr = alias.rpartition(".")
            table = "_parameters" if isinstance(current, nn.Parameter) else "_buffers"
            getattr(self.module.get_submodule(owner), table)[attr] = value
            self.slots[alias] = value

    def tie(self, name: str, source: str) -> None:
        """Tensor `name` takes the value of the already placed tensor `source`: nothing to do when the
        module ties them too; else a copy (the module keeps them apart, as `load_state_dict` would)."""
        if name in self.aliases[source]:
            return
        value = self.slots[source]
        self.place(name, value.detach().clone() if self.slots[name].is_meta else value)

    def forget(self, name: str) -> None:
        """Tensor `name` is no longer the module's (its layer was replaced by one that holds no such
        tensor): nothing will be placed there, and names tied to it are placed on their own."""
        self.slots.pop(name, None)
        tied = self.aliases.pop(name, [])
        if name in tied:
            tied.remove(name)  # the list every tied name shares

    def check_complete(self, what: str) -> None:
        """Every parameter and buffer holds a value: none is left on the meta device."""
        empty = [name for name, tensor in self.slots.items() if tensor.is_meta]
        empty += [name for name, tensor in self.module.named_buffers() if tensor.is_meta and name not in self.slots]
        if empty:
            raise ModelError(f"{what}: tensors {empty[:3]} hold no value after loading (built on the meta device)")
