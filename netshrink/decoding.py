"""Reading a .nsk file into tensors: the one place a file is checked against a model and decoded.

A file is untrusted input: its declared decoded size is checked against a limit
(`format.container.read_nsk`), and its tensor names and shapes against the model before anything
is decoded; a zoo model the header describes is first built on the meta device (no memory) to be
checked the same way. So a crafted file fails in milliseconds instead of allocating.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import torch
from torch import nn

from netshrink.errors import FormatError, ModelError, NetshrinkError
from netshrink.format.bounded import open_nsk
from netshrink.format.codecs import Encoded, decode
from netshrink.format.container import NskFile, TensorRecord, read_nsk
from netshrink.identity import ModelIdentity
from netshrink.memory import return_freed_memory
from netshrink.placement import Device, TensorPlacer, target_device

if TYPE_CHECKING:
    from netshrink.inference.keep import KeepCompressed

T = TypeVar("T")


@dataclass
class DecodedFile:
    """A file read and decoded once: its records, the identity its header records, and every tensor."""

    path: Path
    nsk: NskFile
    identity: ModelIdentity
    state: dict[str, torch.Tensor]


def read_file(path: str | Path, max_bytes: int | None = None) -> tuple[NskFile, ModelIdentity]:
    """The records and model identity of a file, nothing decoded yet."""
    nsk = read_nsk(path, max_bytes)
    return nsk, ModelIdentity.from_json(nsk.model, str(path))


def decode_file(path: str | Path, module: nn.Module | None = None, *, max_bytes: int | None = None) -> DecodedFile:
    """Read and decode every tensor of a file; with a module, its names and shapes are checked first."""
    nsk, identity = read_file(path, max_bytes)
    if module is not None:
        check_matches(module, nsk.tensors, path)
    return decoded(nsk, identity, path)


def decoded(nsk: NskFile, identity: ModelIdentity, path: str | Path) -> DecodedFile:
    """Every tensor of a file already read (and checked against its model), decoded."""
    return DecodedFile(Path(path), nsk, identity, decode_state(nsk, path))


def decode_state(nsk: NskFile, path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of the file, decoded; a tied tensor is the very tensor it is tied to."""
    state = {}
    for rec in nsk.tensors:
        state[rec.name] = state[rec.tied_to] if rec.tied_to else decode_tensor(rec, path)
    return state


def decode_tensor(rec: TensorRecord, path: str | Path, decoder: Callable[[Encoded], T] = decode) -> T:
    """One stored tensor, decoded (by `decoder`: another form than the dense tensor, for one); a
    failure is a FormatError naming the file and the tensor."""
    try:
        return decoder(rec.encoded)
    except NetshrinkError as exc:
        raise FormatError(f"{path}: tensor {rec.name!r}: {exc}") from None
    except (ValueError, TypeError, IndexError, KeyError, RuntimeError, OverflowError, MemoryError) as exc:
        # The header passed its checksum but describes data its codec cannot decode.
        raise FormatError(f"{path}: tensor {rec.name!r} cannot be decoded ({type(exc).__name__}: {exc})") from None


def zoo_module(
    identity: ModelIdentity, records: list[TensorRecord], path: str | Path, *, empty: bool = False
) -> nn.Module:
    """The zoo model a header describes, built only after its skeleton matched the file's records;
    `empty`: its parameters left on the meta device, for `fill_module` to place the file's tensors."""
    from netshrink import zoo

    if identity.name not in zoo.MODEL_NAMES:
        raise ModelError(
            f"{path} holds a {identity.class_name or 'an unknown class'} model that is not in the zoo; "
            "pass the module: netshrink.load(path, model=MyNet())"
        )
    try:
        check_matches(zoo.build_skeleton(identity.name, **identity.arch), records, path)
    except ModelError as exc:
        raise ModelError(f"{path}: the model its header describes is not valid: {exc}") from None
    return (zoo.build_empty if empty else zoo.build_model)(identity.name, **identity.arch)


def check_matches(module: nn.Module, records: list[TensorRecord], path: str | Path) -> None:
    """The file's tensor names and declared shapes against the model's, before any decoding."""
    expected = module.state_dict()
    shapes = {rec.name: tuple(rec.encoded.shape) for rec in records}
    missing = [k for k in expected if k not in shapes]
    unexpected = [k for k in shapes if k not in expected]
    if missing or unexpected:
        raise ModelError(
            f"{path} does not fit this model: missing {missing[:3]}, unexpected {unexpected[:3]}"
            f"{' ...' if len(missing) + len(unexpected) > 6 else ''}"
        )
    for key, shape in shapes.items():
        if shape != tuple(expected[key].shape):
            raise ModelError(
                f"{path}: tensor {key!r} has shape {shape}, the model expects {tuple(expected[key].shape)}"
            )


def load_module(
    path: str | Path,
    model: nn.Module | None = None,
    *,
    max_bytes: int | None = None,
    device: Device = None,
    keeper: KeepCompressed | None = None,
) -> nn.Module:
    """The module of a file (the given one, or the zoo model its header describes), loaded, in eval mode."""
    return open_module(path, model, max_bytes=max_bytes, device=device, keeper=keeper)[0]


def open_module(
    path: str | Path,
    model: nn.Module | None = None,
    *,
    max_bytes: int | None = None,
    device: Device = None,
    keeper: KeepCompressed | None = None,
) -> tuple[nn.Module, ModelIdentity]:
    """`load_module`, and the identity the header records.

    The file is read one tensor at a time (`format.bounded.open_nsk`), and a zoo model is built with
    its parameters on the meta device, each decoded tensor taking the place of one: the peak is the
    loaded model plus one tensor, never the file and a decoded copy of the model on top of it.
    A `keeper` (`netshrink.inference.keep`) is offered each record first: the layers it takes run
    from the codes, their dense weights never built.
    """
    target = target_device(device)
    with open_nsk(path, max_bytes) as reader:
        identity = ModelIdentity.from_json(reader.nsk.model, str(path))
        module = model if model is not None else zoo_module(identity, reader.nsk.tensors, path, empty=True)
        check_matches(module, reader.nsk.tensors, path)
        fill_module(module, reader.records(), path, target, keeper)
    if target is not None:
        module.to(target)  # what the file does not hold: non-persistent buffers, a given module's own tensors
    return module.eval(), identity


def fill_module(
    module: nn.Module,
    records: Iterable[TensorRecord],
    path: str | Path,
    device: torch.device | None = None,
    keeper: KeepCompressed | None = None,
) -> None:
    """Decode records one at a time into `module` (names and shapes already checked): each tensor
    replaces a meta one or is copied into a real one, then is dropped before the next is read."""
    placer = TensorPlacer(module, device)
    for rec in records:
        if keeper is not None and keeper.take(rec, placer, path):
            return_freed_memory()  # the codes' decoding temporaries
        elif rec.tied_to:
            placer.tie(rec.name, rec.tied_to)
        else:
            placer.place(rec.name, decode_tensor(rec, path))
            return_freed_memory()  # the tensor's decoding temporaries, before the next one's
    placer.check_complete(str(path))


def loaded(module: nn.Module, decoded: DecodedFile) -> nn.Module:
    """`module` holding a decoded file's tensors (names and shapes already checked), in eval mode."""
    module.load_state_dict(decoded.state, strict=True)
    return module.eval()
