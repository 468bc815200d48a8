"""Files: save a model, load one back, and open a file once for everything a command reports on it.

    report = netshrink.save(model, "model.nsk")        # every tensor stored exactly (a checkpoint)
    model = netshrink.load("model.nsk")                # zoo models rebuild themselves
    model = netshrink.load("mine.nsk", model=MyNet())  # any other model: pass the module
    model = netshrink.load("model.nsk", device="cuda")  # decoded tensor by tensor onto the GPU

Weights are decoded once, at load, into an ordinary dense module: inference runs at dense speed.
With `keep_compressed=True` palette and PQ layers keep their codes instead (`netshrink.inference`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from netshrink.api.compressed import CompressedModel
from netshrink.decoding import check_matches, decoded, load_module, loaded, read_file, zoo_module
from netshrink.energy.files import energy_summary, stored_formats
from netshrink.errors import ModelError
from netshrink.format.container import NskFile
from netshrink.identity import ModelIdentity
from netshrink.placement import Device
from netshrink.plan import CompressionPlan
from netshrink.report.sizes import FileReport, report_of

if TYPE_CHECKING:
    from netshrink.inference.keep import KeepCompressed


def save(
    model: nn.Module | CompressedModel, path: str | Path, *, name: str | None = None, **identity: Any
) -> FileReport:
    """Save a compressed model, or a plain model with every tensor stored exactly (a checkpoint).
    `identity` records more about a plain model (`dataset=`, or any JSON value under its own key)."""
    if isinstance(model, nn.Module):
        model = CompressedModel(model, CompressionPlan(), None, ModelIdentity.of(model, name, **identity))
    return model.save(path)


def load(
    path: str | Path,
    model: nn.Module | None = None,
    *,
    max_bytes: int | None = None,
    device: Device = None,
    keep_compressed: bool = False,
) -> nn.Module:
    """Rebuild a runnable module from a .nsk file (decoded once; eval mode), on `device` when given
    ("cpu", "cuda", "cuda:N"; a device this machine lacks is a NetshrinkError).

    `keep_compressed`: Linear and Embedding layers coded by a palette or PQ keep their codes and
    compute from them (`netshrink.inference`), so the model takes about the file's size in memory;
    for inference only (no training, no backward pass).

    A file is untrusted input: its declared decoded size is checked against `max_bytes` (default:
    `format.container.decode_limit`) and its tensor names and shapes against the model before
    anything is decoded (`netshrink.decoding`). The file is read and decoded one tensor at a time,
    each going straight into the module (a zoo model is built without weights first), so the
    memory it takes is the loaded model plus one tensor.
    """
    return load_module(path, model, max_bytes=max_bytes, device=device, keeper=keeper_for(keep_compressed))


def keeper_for(keep_compressed: bool) -> KeepCompressed | None:
    """A fresh keeper for one load when layers are to stay compressed, else None (all decoded).
    Imported here, not above: numba, when installed, then loads only for models that use it."""
    if not keep_compressed:
        return None
    from netshrink.inference.keep import KeepCompressed

    return KeepCompressed()


def read_identity(path: str | Path) -> ModelIdentity:
    """The model identity recorded in a file's header (nothing decoded)."""
    return read_file(path)[1]


@dataclass
class OpenedFile:
    """A file read and decoded once: its report (sizes, energy) and its model, when one could be built."""

    report: FileReport
    model: nn.Module | None


def open_file(path: str | Path, model: nn.Module | None = None, *, require_model: bool = False) -> OpenedFile:
    """Read and decode a file once, for its report, its estimated energy and its loaded model.

    Without `model`, the zoo model the header describes is built; a file of another model still
    gets its report (the energy then says why it is unavailable) unless `require_model`.
    """
    nsk, identity = read_file(path)
    module, why = _module_for(nsk, identity, path, model)
    if module is None and require_model:
        raise ModelError(why)
    contents = decoded(nsk, identity, path)
    report = report_of(contents)
    if module is not None:
        loaded(module, contents)
    report.energy = energy_summary(path, module, identity, stored_formats(nsk.tensors), why)
    return OpenedFile(report, module)


def _module_for(
    nsk: NskFile, identity: ModelIdentity, path: str | Path, model: nn.Module | None
) -> tuple[nn.Module | None, str]:
    """The module to load the file into, checked against it; or None and why there is none."""
    if model is not None:
        check_matches(model, nsk.tensors, path)
        return model, ""
    try:
        return zoo_module(identity, nsk.tensors, path), ""
    except ModelError as exc:
        return None, str(exc)
