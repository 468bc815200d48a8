"""Configs are data: frozen dataclasses built from plain dicts (YAML) with field-naming errors.

`config_from_dict(cls, data, where)` checks every key against the dataclass's fields and every value
against the field's type hint, so a typo in a recipe ("sparsty") is reported with the recipe, step
and field it is in, instead of being ignored or failing deep inside a method.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar, Union

from netshrink.errors import NetshrinkError, RecipeError

T = TypeVar("T")


def config_from_dict(cls: type[T], data: Any, where: str) -> T:
    """Build dataclass `cls` from a mapping, validating names and types; errors name `where`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: expected a mapping of settings, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise RecipeError(f"{where}: unknown field {unknown[0]!r}; valid fields: {', '.join(sorted(fields))}")
    values = {name: _coerce(value, hints[name], f"{where}: field {name!r}") for name, value in data.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"{where}: {exc}") from None
    except NetshrinkError as exc:  # a codec or method rejecting its settings
        raise RecipeError(f"{where}: {exc}") from None


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check `value` against a type hint; turn lists into tuples for tuple fields."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _coerce(value, option, where)
            except RecipeError as exc:
                errors.append(str(exc))
        raise RecipeError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {hint}")
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            choices = ", ".join(map(repr, typing.get_args(hint)))
            raise RecipeError(f"{where}: {value!r} is not one of {choices}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping, got {value!r}")
        key_hint, value_hint = typing.get_args(hint)
        return {_coerce(k, key_hint, where): _coerce(v, value_hint, f"{where}[{k!r}]") for k, v in value.items()}
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            value = [value]
        item = typing.get_args(hint)[0]
        return tuple(_coerce(v, item, where) for v in value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is Any or (isinstance(hint, type) and isinstance(value, hint) and not (hint is int and isinstance(value, bool))):
        return value
    raise RecipeError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def config_to_dict(config: Any) -> dict[str, Any]:
    """The settings of a config dataclass as plain JSON-able data (tuples become lists)."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else dict(value) if isinstance(value, dict) else value
    return out
