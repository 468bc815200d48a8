"""Which modules a step applies to: fnmatch patterns over module names (the optimum-quanto way).

No per-architecture lists: a step names the layer types it can handle, and the recipe's include /
exclude patterns pick among the model's modules. A pattern without wildcards that names a module of
a type the step cannot handle is an error (the user asked for something impossible), while a
wildcard silently skips such modules.

Settings that differ between layers use the same patterns: a step's `overrides` maps a pattern to
the fields it changes for the matching layers (`{"conv*": {"bits": 8}}`); for each field the first
pattern that matches a layer and sets it wins. A pattern that matches no selected layer is a typo
and an error, never silently unused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from torch import nn

from netshrink.errors import RecipeError

#: Layers whose `weight` the weight-compressing steps act on.
WEIGHT_LAYERS: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.Embedding)

#: Layers whose weight is a matrix over their inputs (a Linear's features, a Conv2d's im2col patch),
#: one row per output channel.
MATRIX_LAYERS: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class Selection:
    """fnmatch include/exclude patterns over module names (e.g. include ['layer*'], exclude ['fc'])."""

    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()


def _is_literal(pattern: str) -> bool:
    return not any(char in pattern for char in "*?[")


def select_modules(
    model: nn.Module, selection: Selection, types: tuple[type[nn.Module], ...], step: str
) -> list[tuple[str, nn.Module]]:
    """Modules of `types` whose name matches an include and no exclude pattern, in model order."""
    modules = dict(model.named_modules())
    for pattern in selection.include:
        if _is_literal(pattern) and pattern in modules and not isinstance(modules[pattern], types):
            kinds = ", ".join(t.__name__ for t in types)
            raise RecipeError(
                f"step {step}: layer {pattern!r} is a {type(modules[pattern]).__name__}; this step supports {kinds}"
            )
        if _is_literal(pattern) and pattern not in modules:
            raise RecipeError(f"step {step}: include names layer {pattern!r}, which this model does not have")
    chosen = [
        (name, module)
        for name, module in modules.items()
        if name
        and isinstance(module, types)
        and any(fnmatchcase(name, p) for p in selection.include)
        and not any(fnmatchcase(name, p) for p in selection.exclude)
    ]
    if not chosen:
        sample = ", ".join(n for n, m in modules.items() if isinstance(m, types))[:200] or "none"
        raise RecipeError(
            f"step {step}: include {list(selection.include)} / exclude {list(selection.exclude)} "
            f"match no layer; candidate layers: {sample}"
        )
    return chosen


def layer_settings(name: str, overrides: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The settings `overrides` gives module `name`: each field from the first matching pattern that sets it."""
    settings: dict[str, Any] = {}
    for pattern, fields in overrides.items():
        if fnmatchcase(name, pattern):
            for field, value in fields.items():
                settings.setdefault(field, value)
    return settings


def check_overrides_match(overrides: Mapping[str, Mapping[str, Any]], layers: list[str], step: str) -> None:
    """Every override pattern must match a selected layer: one that matches none is a typo, said by name."""
    for pattern, fields in overrides.items():
        if not any(fnmatchcase(layer, pattern) for layer in layers):
            raise RecipeError(
                f"step {step}: overrides pattern {pattern!r} (field {', '.join(map(repr, fields))}) "
                f"matches no selected layer; selected layers: {', '.join(layers)[:200]}"
            )
