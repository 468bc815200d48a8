"""A .safetensors checkpoint as the model a flow works on: a zoo model, its weights from the file.

The zoo model is the one the checkpoint's metadata names (`{"netshrink_model": NAME, "arch":
"<json>"}`, as netshrink and its benchmarks write them), or the one the caller names (`--model`,
`--arch`; Python: `identity={"name": ..., "arch": {...}}`). The checkpoint's names and shapes are
checked against the model on the meta device before anything is read, and the weights are then
read one tensor at a time into a model built without weights (`zoo.build_empty`), so loading takes
the model's memory once. A model larger than the memory this process may take is refused with a
pointer to streaming compression, which never holds it whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn

from netshrink import zoo
from netshrink.errors import ModelError, NetshrinkError
from netshrink.identity import ModelIdentity
from netshrink.memory import available_bytes, is_out_of_memory
from netshrink.placement import TensorPlacer, tied_names
from netshrink.streaming.checkpoint import SafetensorsCheckpoint
from netshrink.streaming.run import model_skeleton

SUFFIX = ".safetensors"
GIB = 1 << 30


def is_safetensors(path: Path) -> bool:
    """A .safetensors file, by its name."""
    return path.suffix == SUFFIX


def checkpoint_model(
    checkpoint: SafetensorsCheckpoint, given: ModelIdentity | Mapping[str, Any] | None = None
) -> tuple[nn.Module, ModelIdentity]:
    """The checkpoint's zoo model on the meta device, and its identity: the model and arch `given`
    (a name, and an arch as an object or JSON text), else those the checkpoint's metadata names."""
    if isinstance(given, ModelIdentity):
        name, arch = given.name, dict(given.arch) or None
    else:
        name, arch = (given or {}).get("name"), (given or {}).get("arch")
    wanted = name or checkpoint.model_description()[0]
    if wanted not in (None, *zoo.MODEL_NAMES):
        raise ModelError(f"{checkpoint.path}: unknown model {wanted!r}; choose one of: {', '.join(zoo.MODEL_NAMES)}")
    skeleton, identity = model_skeleton(checkpoint, name, arch)
    return skeleton, replace(identity, dataset=zoo.model_info(identity.name).dataset)


def load_checkpoint(
    path: str | Path, given: ModelIdentity | Mapping[str, Any] | None = None
) -> tuple[nn.Module, ModelIdentity]:
    """The zoo model of a .safetensors checkpoint holding its weights, and its identity (see the module)."""
    checkpoint = SafetensorsCheckpoint.open(path)
    skeleton, identity = checkpoint_model(checkpoint, given)
    check_fits(skeleton, checkpoint)
    needed = sum(t.numel() * t.element_size() for t in {id(t): t for t in skeleton.state_dict().values()}.values())
    room = available_bytes()
    if room is not None and needed > room:
        why = f"its model needs {needed / GIB:.1f} GiB, {room / GIB:.1f} GiB available"
        raise NetshrinkError(out_of_memory(checkpoint.path, why))
    try:
        module = zoo.build_empty(identity.name, **identity.arch)
        placer = TensorPlacer(module)
        for name in checkpoint.entries:
            placer.place(name, checkpoint.read(name))
        placer.check_complete(str(checkpoint.path))
    except (MemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise
        raise NetshrinkError(out_of_memory(checkpoint.path, "an allocation failed")) from None
    return module.eval(), identity


def out_of_memory(path: Path, why: str) -> str:
    """The one line for a checkpoint too large to load whole: what to do instead."""
    return f"out of memory loading {path} ({why}); use --stream to compress it block by block"


def check_fits(skeleton: nn.Module, checkpoint: SafetensorsCheckpoint) -> None:
    """The checkpoint's names and shapes against the model's; the first offending tensor in one line.

    A name the model ties to another (an LM head tied to the embedding) may be left out, as
    checkpoints of tied models usually do.
    """
    expected, aliases, given = skeleton.state_dict(), tied_names(skeleton), checkpoint.entries
    hint = "give the right model (--model NAME --arch JSON)"
    for name, tensor in expected.items():
        if not any(alias in given for alias in aliases[name]):
            raise ModelError(f"{checkpoint.path} does not fit this model: tensor {name!r} is missing; {hint}")
        if name in given and given[name].shape != tuple(tensor.shape):
            raise ModelError(
                f"{checkpoint.path}: tensor {name!r} has shape {given[name].shape}, "
                f"the model expects {tuple(tensor.shape)}; {hint}"
            )
    for name in given:
        if name not in expected:
            raise ModelError(f"{checkpoint.path} does not fit this model: unexpected tensor {name!r}; {hint}")
