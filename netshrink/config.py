"""Configs are data: frozen dataclasses built from plain dicts (YAML) with field-naming errors.

`config_from_dict(cls, data, where)` checks every key against the dataclass's fields and every value
against the field's type hint, so a typo in a recipe ("sparsty") is reported with the recipe, step
and field it is in, instead of being ignored or failing deep inside a method.

A field whose type is itself a config dataclass (a retraining step's `train: RetrainSettings`) is
composed in code but spelled flat in YAML: its fields sit beside the step's own (`epochs: 3` rather
than `train: {epochs: 3}`), so a recipe reads as one list of settings. Reading and writing map the
two spellings here, in one place.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar, Union

from netshrink.errors import NetshrinkError, RecipeError

T = TypeVar("T")


#: Field metadata: leave the field out of `config_to_dict` while it is empty (an empty `overrides`
#: says nothing, and a recipe then prints back as it was written).
OMIT_WHEN_EMPTY = {"omit_when_empty": True}


def _renamed_hint(cls: type, name: str, valid: set[str]) -> str:
    """How to write a per-layer setting of an older recipe (`per_layer_bits: {conv1: 8}`) today."""
    if not name.startswith("per_layer") or "overrides" not in valid:
        return ""
    per_layer = getattr(cls, "per_layer_fields", ())
    field = name.removeprefix("per_layer").lstrip("_") or (per_layer[0] if len(per_layer) == 1 else "<field>")
    return f" (per-layer settings are now written `overrides: {{pattern: {{{field}: value}}}}`)"


def config_from_dict(cls: type[T], data: Any, where: str) -> T:
    """Build dataclass `cls` from a mapping, validating names and types; errors name `where`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: expected a mapping of settings, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    nested = _nested_configs(cls)
    flat = {name: owner for owner, sub in nested.items() for name in _init_fields(sub)}
    valid = recipe_fields(cls)
    unknown = sorted(set(data) - valid)
    if unknown:
        raise RecipeError(
            f"{where}: unknown field {unknown[0]!r}{_renamed_hint(cls, unknown[0], valid)}; "
            f"valid fields: {', '.join(sorted(valid))}"
        )
    values = coerce_fields(cls, {k: v for k, v in data.items() if k not in flat}, where)
    given = {
        owner: coerce_fields(sub, {k: v for k, v in data.items() if flat.get(k) == owner}, where)
        for owner, sub in nested.items()
    }
    try:
        for owner, settings in given.items():
            if settings:
                values[owner] = dataclasses.replace(_default_of(fields[owner]), **settings)
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"{where}: {exc}") from None
    except NetshrinkError as exc:  # a codec or method rejecting its settings
        raise RecipeError(f"{where}: {exc}") from None


def coerce_fields(cls: type, data: dict[str, Any], where: str) -> dict[str, Any]:
    """`data`'s values checked against the type hints of `cls`'s fields of the same names."""
    hints = typing.get_type_hints(cls)
    return {name: _coerce(value, hints[name], f"{where}: field {name!r}") for name, value in data.items()}


def config_overrides(cls: type, overrides: Any, allowed: tuple[str, ...], step: str) -> dict[str, dict[str, Any]]:
    """Per-layer settings `{pattern: {field: value}}` of step `cls`, each field one of `allowed` (the
    fields the step reads per layer) and of that field's type; anything else is named in the error."""
    if not isinstance(overrides, dict):
        raise RecipeError(f"{step} overrides: expected a mapping of pattern: {{field: value}}, got {overrides!r}")
    known = recipe_fields(cls)
    checked = {}
    for pattern, settings in overrides.items():
        where = f"{step} overrides {pattern!r}"
        if not isinstance(pattern, str) or not isinstance(settings, dict):
            raise RecipeError(f"{where}: expected a layer-name pattern mapped to {{field: value}}, got {settings!r}")
        for name in settings:
            if name not in allowed:
                why = "cannot differ per layer" if name in known else "is not a field of this step"
                raise RecipeError(f"{where}: field {name!r} {why}; per-layer fields: {', '.join(allowed) or 'none'}")
        checked[pattern] = coerce_fields(cls, settings, where)
    return checked


def recipe_fields(cls: type) -> set[str]:
    """The names a recipe may give config `cls`: its own fields, those of nested configs in their place."""
    nested = _nested_configs(cls)
    return (set(_init_fields(cls)) - set(nested)) | {name for sub in nested.values() for name in _init_fields(sub)}


def _init_fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


def _nested_configs(cls: type) -> dict[str, type]:
    """The fields of `cls` whose type is a config dataclass: spelled flat in YAML."""
    hints = typing.get_type_hints(cls)
    return {
        name: hints[name]
        for name in _init_fields(cls)
        if isinstance(hints[name], type) and dataclasses.is_dataclass(hints[name])
    }


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


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
    if hint is Any or (
        isinstance(hint, type) and isinstance(value, hint) and not (hint is int and isinstance(value, bool))
    ):
        return value
    raise RecipeError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def config_to_dict(config: Any) -> dict[str, Any]:
    """The settings of a config dataclass as plain JSON-able data (tuples become lists), in the
    recipe spelling: nested configs flat, empty `OMIT_WHEN_EMPTY` fields left out."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out.update(config_to_dict(value))
        elif value or not f.metadata.get("omit_when_empty"):
            out[f.name] = list(value) if isinstance(value, tuple) else dict(value) if isinstance(value, dict) else value
    return out
