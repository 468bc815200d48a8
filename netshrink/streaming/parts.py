"""A model cut into the parts it is compressed in, one at a time: prefix, each block, suffix.

The model is a skeleton on the meta device. A part's tensors are materialised from the checkpoint,
its steps run, its tensors are encoded, then they go back to meta. The steps see a `PartModule`:
the part's modules at their FULL names (`model.layers.3.mlp.up_proj`), so the recipe's include /
exclude / override patterns and the names in the file are those of the whole model, and whose
forward is the part's (the embedding, one block, or the head), so calibration passes run it on the
part's own inputs: the hidden states the compressed parts before it produced.

A tensor known under several names (an LM head tied to the embedding) belongs to the part of its
first name; a later part records the others as tied to it and its steps do not see them again. Its
value stays materialised until the last part that uses it is done.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

import torch
from torch import nn

from netshrink.errors import ModelError, RecipeError
from netshrink.step import LayerStep, Recipe, Step
from netshrink.zoo.protocols import BlockStructure

#: Steps that act on each layer alone, so they can run on one block at a time.
LAYERWISE_STEPS = frozenset({"palette", "pq", "prune", "lowrank", "cast", "tune"})
#: Steps that train what they are given, a block when compressing block by block, against that
#: block before compression.
PARTWISE_TRAINING = frozenset({"tune"})


@dataclass(frozen=True)
class Part:
    """Modules compressed together: their names, how to run them, and the tensor names they own."""

    name: str
    roots: tuple[str, ...]
    run: Callable[[torch.Tensor], torch.Tensor]
    tensors: tuple[str, ...]  # state-dict names, in state-dict order, aliases included

    def holds(self, module_name: str) -> bool:
        return any(module_name == root or module_name.startswith(f"{root}.") for root in self.roots)


def why_not_streamable(step: Step) -> str | None:
    """Why a step cannot run block by block (it looks at the whole model at once), or None."""
    if step.step_name not in LAYERWISE_STEPS:
        return "it trains or distils the whole model; only steps that act layer by layer can stream"
    if getattr(step, "scope", "layer") == "global":
        return "scope: global ranks the weights of all layers together (use scope: layer)"
    train = getattr(step, "train", None)
    trains = (train is not None and train.epochs > 0) or getattr(step, "stage_epochs", 0) > 0
    if trains and step.step_name not in PARTWISE_TRAINING:
        return "it fine-tunes the whole model (set epochs: 0 and stage_epochs: 0)"
    if getattr(step, "share_codebook", False):
        return "share_codebook shares one codebook across layers of different blocks"
    return None


def streams_whole_recipe(recipe: Recipe) -> bool:
    """Whether every step of the recipe can run block by block."""
    return all(why_not_streamable(step) is None for step in recipe.steps)


def check_streamable(recipe: Recipe) -> None:
    for step in recipe.steps:
        reason = why_not_streamable(step)
        if reason:
            raise RecipeError(f"recipe {recipe.name}: step {step.step_name} cannot compress block by block: {reason}")


def cut(model: nn.Module) -> list[Part]:
    """The model's parts in order: prefix, blocks, suffix; every state-dict tensor in exactly one."""
    if not isinstance(model, BlockStructure):
        raise ModelError(
            f"{type(model).__name__} has no block structure (block_layout, embed, run_block, head), "
            "so it cannot be compressed block by block; compress it whole"
        )
    layout = model.block_layout()
    blocks = model.get_submodule(layout.blocks)
    parts = [Part("prefix", layout.prefix, model.embed, ())]
    for index, block in enumerate(blocks):
        parts.append(Part(f"block {index}", (f"{layout.blocks}.{index}",), _block_runner(model, block), ()))
    parts.append(Part("suffix", layout.suffix, model.head, ()))
    names = list(model.state_dict(keep_vars=True))
    owned = [tuple(n for n in names if part.holds(n.rpartition(".")[0])) for part in parts]
    stray = sorted(set(names) - {n for group in owned for n in group})
    if stray:
        raise ModelError(f"tensors outside the block structure of {type(model).__name__}: {', '.join(stray[:5])}")
    return [dataclasses.replace(part, tensors=tensors) for part, tensors in zip(parts, owned)]


def _block_runner(model: Any, block: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda hidden: model.run_block(block, hidden)


def aliases(model: nn.Module) -> dict[str, str]:
    """name -> first name of the same tensor, for tensors known under several names (tied)."""
    first: dict[int, str] = {}
    out = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        source = first.setdefault(id(tensor), name)
        if source != name:
            out[name] = source
    return out


class PartModule(nn.Module):
    """A part's modules under their full names; forward runs the part."""

    def __init__(self, model: nn.Module, part: Part, skip: set[str]) -> None:
        super().__init__()
        self._run = part.run
        for root in part.roots:
            for name, module in _outermost(model.get_submodule(root), root, skip):
                _attach(self, name, module)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._run(hidden)


class FrozenBlock(nn.Module):
    """A block as it was before its steps ran, frozen and run the way the model runs its blocks:
    the teacher of a step that trains the block (`tune`)."""

    def __init__(self, model: Any, block: nn.Module) -> None:
        super().__init__()
        self.block = copy.deepcopy(block).eval().requires_grad_(False)
        self._run_block = model.run_block  # a bound method: not a module, not copied

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._run_block(self.block, hidden)


def part_teacher(model: Any, part: Part) -> FrozenBlock:
    """The teacher of the steps of `part` that train against the uncompressed part: blocks only."""
    if not part.name.startswith("block "):
        raise RecipeError(
            f"a step that trains against the uncompressed model (tune) runs on blocks when compressing "
            f"block by block, but it selects layers of the {part.name}; exclude them from it"
        )
    return FrozenBlock(model, model.get_submodule(part.roots[0]))


def _outermost(module: nn.Module, name: str, skip: set[str]) -> list[tuple[str, nn.Module]]:
    """`module`, or, if some of its tensors are in `skip` (tied to an earlier part), its children
    that hold none, so the steps never see those tensors."""
    own = [f"{name}.{local}" for local, _ in module.state_dict(keep_vars=True).items()]
    if not any(n in skip for n in own):
        return [(name, module)]
    out = []
    for child_name, child in module.named_children():
        out.extend(_outermost(child, f"{name}.{child_name}", skip))
    return out


def _attach(root: nn.Module, name: str, module: nn.Module) -> None:
    *parents, leaf = name.split(".")
    for parent in parents:
        if not hasattr(root, parent):
            root.add_module(parent, nn.Module())
        root = getattr(root, parent)
    root.add_module(leaf, module)


def steps_for(recipe: Recipe, model: nn.Module, part: Part, shell: PartModule) -> list[Step]:
    """The recipe's steps as they apply to `part` (held by `shell`): each step's layers chosen on
    the whole model (so its patterns are checked once, against every name), narrowed to those in the
    part, with the overrides that concern them. A step with no layer in the part is left out."""
    present = dict(shell.named_modules())
    out: list[Step] = []
    for step in recipe.steps:
        assert isinstance(step, LayerStep)  # check_streamable: every layer-wise step is a LayerStep
        inside = [name for name, _ in step.layers(model) if part.holds(name) and name in present]
        if not inside:
            continue
        overrides = {p: f for p, f in step.overrides.items() if any(fnmatchcase(n, p) for n in inside)}
        out.append(dataclasses.replace(step, include=tuple(inside), exclude=(), overrides=overrides))
    return out


def set_tensor(model: nn.Module, name: str, value: torch.Tensor) -> None:
    """Put `value` in the model under state-dict name `name` (a parameter stays a parameter)."""
    module_name, _, local = name.rpartition(".")
    module = model.get_submodule(module_name)
    if local in module._parameters:
        module._parameters[local] = nn.Parameter(value, requires_grad=False)
    else:
        module._buffers[local] = value


def tensor_of(model: nn.Module, name: str) -> torch.Tensor:
    module_name, _, local = name.rpartition(".")
    module = model.get_submodule(module_name)
    return module._parameters[local] if local in module._parameters else module._buffers[local]


def to_meta(model: nn.Module, names: list[str]) -> None:
    """Release the memory of tensors `names`: they become meta tensors of the same shape and dtype."""
    for name in names:
        set_tensor(model, name, torch.empty_like(tensor_of(model, name), device="meta"))


def tie(model: nn.Module, names: dict[str, str]) -> None:
    """Make each alias the very tensor its source is (the tie that setting the source broke)."""
    for alias, source in names.items():
        module_name, _, local = alias.rpartition(".")
        module = model.get_submodule(module_name)
        value = tensor_of(model, source)
        (module._parameters if local in module._parameters else module._buffers)[local] = value
