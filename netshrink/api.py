"""The Python API: compress a model with a recipe, save it to a .nsk file, load it back.

    compressed = netshrink.compress(model, "oneshot-palette5")
    report = compressed.save("model.nsk")          # FileReport: sizes read back from disk
    model = netshrink.load("model.nsk")            # zoo models rebuild themselves
    model = netshrink.load("mine.nsk", model=MyNet())  # any other model: pass the module

Weights are decoded once, at load, into an ordinary dense module: inference runs at dense speed.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import netshrink.methods  # noqa: F401  (registers the recipe steps)
from netshrink.format.codecs import decode
from netshrink.errors import DATA_HINT, FormatError, ModelError, NetshrinkError
from netshrink.format.container import NskFile, TensorRecord, read_nsk, write_nsk
from netshrink.plan import CompressionPlan
from netshrink.recipe import Recipe, StepContext, load_recipe
from netshrink.report.sizes import FileReport, file_report, original_size

log = logging.getLogger(__name__)


@dataclass
class CompressedModel:
    """A model whose tensors have codecs assigned; `model` holds exactly what the file will load."""

    model: nn.Module
    plan: CompressionPlan
    recipe: Recipe | None
    identity: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | Path) -> FileReport:
        """Write the .nsk file. Coded tensors changed since `compress` (say, by the user's own
        training loop) are first coded again with their codebooks, and the model takes those values:
        the file and `model` stay the same network."""
        nsk = NskFile(self.plan.encode_all(self.model), self.identity, self.recipe.to_dict() if self.recipe else None)
        write_nsk(path, nsk)
        return file_report(path)


def model_identity(model: nn.Module, name: str | None = None, **extra: Any) -> dict[str, Any]:
    """What the header records about the model: zoo name (if any), class, and extra config."""
    cls = type(model)
    arch = model.arch_options() if hasattr(model, "arch_options") else {}  # zoo models: widths, head
    return {"name": name, "class": f"{cls.__module__}.{cls.__qualname__}", **({"arch": arch} if arch else {}), **extra}


def compress(model: nn.Module, recipe: Recipe | str | Path, data: Any = None, *, name: str | None = None,
             seed: int = 0, progress: bool = True, inplace: bool = False, identity: dict[str, Any] | None = None,
             dataset: str | None = None) -> CompressedModel:
    """Apply a recipe's steps in order. The input model is left untouched unless `inplace`.

    `data` is the training split for recipes that retrain or calibrate (never the evaluation
    split); `dataset` names it, which picks its default augmentation.
    """
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    if recipe.needs_data and data is None:
        raise NetshrinkError(f"recipe {recipe.name} needs training data {DATA_HINT}")
    model = model if inplace else copy.deepcopy(model)
    original = original_size(model)
    torch.manual_seed(seed)
    plan, ctx = CompressionPlan(), StepContext(data=data, seed=seed, progress=progress, dataset=dataset)
    if recipe.distills:
        ctx.teacher_for(model)  # frozen before any step changes the model
    for index, step in enumerate(recipe.steps, 1):
        log.info("recipe %s step %d/%d: %s", recipe.name, index, len(recipe.steps), step.step_name)
        step.apply(model, plan, ctx)
        plan.refresh(model)  # tensors a step retrained after an earlier one coded them: coded again
    ident = dict(identity) if identity is not None else model_identity(model, name)
    if ctx.arch:
        ident["arch"] = {**(ident.get("arch") or {}), **ctx.arch}
    ident.setdefault("original", original)  # a re-compressed file keeps the first original
    return CompressedModel(model, plan, recipe, ident)


def save(model: nn.Module | CompressedModel, path: str | Path, *, name: str | None = None, **identity: Any) -> FileReport:
    """Save a compressed model, or a plain model with every tensor stored exactly (a checkpoint)."""
    if isinstance(model, nn.Module):
        model = CompressedModel(model, CompressionPlan(), None, model_identity(model, name, **identity))
    return model.save(path)


def load(path: str | Path, model: nn.Module | None = None, *, max_bytes: int | None = None) -> nn.Module:
    """Rebuild a runnable module from a .nsk file (decoded once; eval mode).

    A file is untrusted input: its declared decoded size is checked against `max_bytes` (default:
    `fileformat.decode_limit`) and its tensor names and shapes against the model before anything is
    decoded, and a zoo model the header describes is first built on the meta device (no memory) to
    be checked the same way. So a crafted file fails in milliseconds instead of allocating.
    """
    nsk = read_nsk(path, max_bytes)
    module = model if model is not None else _build_from_identity(nsk, path)
    _check_matches(module, nsk.tensors, path)
    module.load_state_dict(_decode_state(nsk, path), strict=True)
    return module.eval()


def read_identity(path: str | Path) -> dict[str, Any]:
    """The model identity recorded in a file's header."""
    return read_nsk(path).model


def _build_from_identity(nsk: NskFile, path: str | Path) -> nn.Module:
    from netshrink import zoo

    name = nsk.model.get("name")
    if not isinstance(name, str) or name not in zoo.MODEL_NAMES:
        cls = nsk.model.get("class", "an unknown class")
        raise ModelError(f"{path} holds a {cls} model that is not in the zoo; pass the module: "
                         "netshrink.load(path, model=MyNet())")
    arch = nsk.model.get("arch") or {}
    if not isinstance(arch, dict):
        raise FormatError(f"{path}: malformed header: model 'arch' must be an object")
    try:
        _check_matches(zoo.build_skeleton(name, **arch), nsk.tensors, path)
    except ModelError as exc:
        raise ModelError(f"{path}: the model its header describes is not valid: {exc}") from None
    return zoo.build_model(name, **arch)


def _decode_state(nsk: NskFile, path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of the file, decoded; a tied tensor is the very tensor it is tied to."""
    state = {}
    for rec in nsk.tensors:
        if rec.tied_to:
            state[rec.name] = state[rec.tied_to]
            continue
        try:
            state[rec.name] = decode(rec.encoded)
        except NetshrinkError as exc:
            raise FormatError(f"{path}: tensor {rec.name!r}: {exc}") from None
        except (ValueError, TypeError, IndexError, KeyError, RuntimeError, OverflowError, MemoryError) as exc:
            # The header passed its checksum but describes data its codec cannot decode.
            raise FormatError(f"{path}: tensor {rec.name!r} cannot be decoded ({type(exc).__name__}: {exc})") from None
    return state


def _check_matches(module: nn.Module, records: list[TensorRecord], path: str | Path) -> None:
    """The file's tensor names and declared shapes against the model's, before any decoding."""
    expected = module.state_dict()
    shapes = {rec.name: tuple(rec.encoded.shape) for rec in records}
    missing = [k for k in expected if k not in shapes]
    unexpected = [k for k in shapes if k not in expected]
    if missing or unexpected:
        raise ModelError(f"{path} does not fit this model: missing {missing[:3]}, unexpected {unexpected[:3]}"
                         f"{' ...' if len(missing) + len(unexpected) > 6 else ''}")
    for key, shape in shapes.items():
        if shape != tuple(expected[key].shape):
            raise ModelError(f"{path}: tensor {key!r} has shape {shape}, the model expects {tuple(expected[key].shape)}")
