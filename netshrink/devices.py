"""Where a model computes: the device a user names, the device a model is on, batches moved there.

A device is named as PyTorch names it (`cpu`, `cuda`, `cuda:N`, `mps`); `None` means
$NETSHRINK_DEVICE when it is set (say, `cpu` on a GPU machine, for runs that must repeat a CPU
result bit for bit), else the GPU when there is one. A device that is not there is a `NetshrinkError` with one line saying why, raised
when the flow starts: a typo in `--device` should not surface as a CUDA traceback after the model
was loaded and half-trained.

Steps never take a device: a calibration pass or a retraining runs where the model is
(`model_device`), and moves its batches there (`to_device`). What is computed per layer from the
weights (clustering, codecs) runs on CPU; the plan copies decoded values back onto the device.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any, Literal

import torch
from torch import nn

from netshrink.errors import NetshrinkError

#: `autocast` settings of a training run: None (full precision) or bfloat16 autocast.
Autocast = Literal["bf16"] | None
AUTOCAST_CHOICES = ("bf16",)

_SPELLING = re.compile(r"(cpu|mps|cuda)(:(\d+))?")


def resolve_device(text: str | torch.device | None = None) -> torch.device:
    """The device `text` names, checked to be on this machine; None: $NETSHRINK_DEVICE if set, else
    `cuda` when available, else `cpu`."""
    if isinstance(text, torch.device):
        text = str(text)
    if text is None:
        text = os.environ.get("NETSHRINK_DEVICE") or None
    if text is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    match = _SPELLING.fullmatch(text.strip().lower())
    if match is None:
        raise NetshrinkError(f"device {text!r} is not a device name: give cpu, cuda, cuda:N or mps")
    kind, index = match.group(1), match.group(3)
    if kind == "cpu":
        if index not in (None, "0"):
            raise NetshrinkError(f"device {text} is not available: the CPU is device cpu")
        return torch.device("cpu")
    if kind == "mps":
        if not (torch.backends.mps.is_available() and index in (None, "0")):
            raise NetshrinkError(f"device {text} is not available: PyTorch here has no MPS (Apple GPU) support")
        return torch.device("mps")
    return _cuda_device(text, None if index is None else int(index))


def _cuda_device(text: str, index: int | None) -> torch.device:
    if not torch.cuda.is_available():
        why = "PyTorch here has no CUDA" if torch.version.cuda is None else "no CUDA device is visible"
        raise NetshrinkError(f"device {text} is not available: {why}")
    count = torch.cuda.device_count()
    if index is not None and index >= count:
        raise NetshrinkError(
            f"device {text} is not available: this machine has {count} CUDA device{'s' if count != 1 else ''}"
            f" (cuda:0{f' to cuda:{count - 1}' if count > 1 else ''})"
        )
    return torch.device("cuda", index if index is not None else torch.cuda.current_device())


def model_device(module: nn.Module) -> torch.device:
    """The device of the module's first parameter (else buffer); cpu for a module with neither."""
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        return tensor.device
    return torch.device("cpu")


def to_device(batch: Any, device: torch.device) -> Any:
    """`batch` (a tensor, or tuples / lists / dicts of them, as `call_model` takes inputs) on `device`;
    anything else is returned as it is. A tensor already there is returned itself, not copied."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {key: to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(value, device) for value in batch)
    return batch


@contextlib.contextmanager
def placed_on(module: nn.Module, device: str | torch.device | None) -> Iterator[nn.Module]:
    """`module` on `device` for the duration (None: where it is), then back where it was: a flow that
    only reads a caller's model (scoring, sensitivity) does not leave it on another device."""
    home, device = model_device(module), None if device is None else resolve_device(device)
    if device is None or device == home:
        yield module
        return
    try:
        yield module.to(device)
    finally:
        module.to(home)


def autocast_context(device: torch.device, autocast: Autocast) -> AbstractContextManager:
    """The forward pass's precision: bfloat16 autocast on `device` (its matmuls and convolutions in
    bf16, reductions and the loss in float32), or nothing when `autocast` is None."""
    if autocast is None:
        return contextlib.nullcontext()
    if autocast not in AUTOCAST_CHOICES:
        raise NetshrinkError(f"autocast must be one of {', '.join(AUTOCAST_CHOICES)}, got {autocast!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16)


def device_name(device: torch.device) -> str:
    """The device for people: the GPU's product name, or `cpu`."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
