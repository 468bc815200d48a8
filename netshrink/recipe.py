"""Recipes: an ordered list of validated steps, read from YAML.

    name: oneshot-prune50-palette5
    description: 50 % magnitude pruning, then 5-bit weight sharing
    steps:
      - prune: {sparsity: 0.5}
      - palette: {bits: 5, exclude: ["fc2"]}

Each step is a frozen config dataclass registered under its YAML name by `@register_step` (the
torchao pattern: adding a method touches no central if/elif). A recipe names a packaged file in
`netshrink/recipes/` or a path to a YAML file. Any bad field is reported with the recipe, the step
number and the field name.

Every layer step takes per-layer settings the same way, fnmatch patterns over module names mapped
to the fields that differ there (for each field the first matching pattern wins):

      - palette: {bits: 5, overrides: {"conv*": {bits: 8}, fc2: {bits: 4, init: linear}}}

Only the fields a step reads per layer (its `per_layer_fields`) may appear; any other name, or a
pattern that matches no selected layer, is an error naming the step, the pattern and the field.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

import netshrink.methods  # noqa: F401  (registers the packaged steps: this module reads recipes that name them)
from netshrink.config import config_from_dict
from netshrink.errors import RecipeError
from netshrink.step import STEPS, Recipe, Step


def recipe_dir() -> Path:
    return Path(str(resources.files("netshrink") / "recipes"))


def list_recipes() -> list[str]:
    return sorted(p.stem for p in recipe_dir().glob("*.yaml"))


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A packaged recipe by name, or a YAML file by path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = recipe_dir() / f"{name_or_path}.yaml"
        if not path.exists():
            raise RecipeError(
                f"unknown recipe {str(name_or_path)!r}; packaged recipes: {', '.join(list_recipes())} "
                "(or give a path to a YAML file)"
            )
    if not path.is_file():
        raise RecipeError(f"recipe file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise RecipeError(f"recipe {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return parse_recipe(data, source=str(path))


def parse_recipe(data: Any, source: str = "<recipe>") -> Recipe:
    """Validate a recipe mapping and build its step configs."""
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {source}: expected a mapping with 'name' and 'steps'")
    unknown = sorted(set(data) - {"name", "description", "steps"})
    if unknown:
        raise RecipeError(f"recipe {source}: unknown field {unknown[0]!r}; valid fields: name, description, steps")
    name = data.get("name", Path(source).stem)
    steps = data.get("steps")
    if not isinstance(name, str):
        raise RecipeError(f"recipe {source}: field 'name' must be a string")
    if not isinstance(steps, list):
        raise RecipeError(f"recipe {source}: field 'steps' must be a list of steps")
    built = tuple(_parse_step(entry, f"recipe {name} step {i + 1}") for i, entry in enumerate(steps))
    return Recipe(name, built, str(data.get("description", "")), source)


def _parse_step(entry: Any, where: str) -> Step:
    if isinstance(entry, str):
        entry = {entry: {}}
    if not isinstance(entry, dict) or len(entry) != 1:
        raise RecipeError(f"{where}: each step is a one-key mapping like '- palette: {{bits: 5}}'")
    ((kind, settings),) = entry.items()
    if kind not in STEPS:
        raise RecipeError(f"{where}: unknown step {kind!r}; known steps: {', '.join(sorted(STEPS))}")
    return config_from_dict(STEPS[kind], settings, f"{where} ({kind})")
