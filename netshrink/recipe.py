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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol, TypeVar

import yaml
from torch import nn

from netshrink.config import config_from_dict, config_to_dict
from netshrink.errors import RecipeError
from netshrink.plan import CompressionPlan
from netshrink.select import Selection, WEIGHT_LAYERS, select_modules


@dataclass
class StepContext:
    """What a step may use besides the model: data (for steps that need it), seed, progress bars."""

    data: Any = None
    seed: int = 0
    progress: bool = True
    dataset: str | None = None
    #: Architecture changes a step made (e.g. channels removed), merged into the file's model
    #: identity under "arch" so `netshrink.load` rebuilds the smaller module.
    arch: dict[str, Any] = field(default_factory=dict)
    #: The uncompressed network, frozen: the teacher of every step that distils. `compress` sets it
    #: before the first step when the recipe distils, so a later step (say, the retraining after
    #: filter pruning) learns from the original network, not from what earlier steps left.
    teacher: nn.Module | None = None

    def teacher_for(self, model: nn.Module) -> nn.Module:
        """The recipe's teacher; a step applied on its own (no teacher set) distils from its input."""
        if self.teacher is None:
            from netshrink.training.distill import frozen_teacher  # distill -> train -> data: keep recipe.py light

            self.teacher = frozen_teacher(model)
        return self.teacher


class Step(Protocol):
    step_name: ClassVar[str]
    needs_data: ClassVar[bool]

    def apply(self, model: nn.Module, plan: CompressionPlan, ctx: StepContext) -> None: ...


@dataclass(frozen=True)
class LayerStep:
    """Base of steps that act on the weights of selected Conv/Linear/Embedding layers."""

    step_name: ClassVar[str] = ""
    needs_data: ClassVar[bool] = False
    layer_types: ClassVar[tuple[type[nn.Module], ...]] = WEIGHT_LAYERS

    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()

    def layers(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        return select_modules(model, Selection(self.include, self.exclude), self.layer_types, self.step_name)

    def weight_names(self, model: nn.Module) -> list[str]:
        return [f"{name}.weight" for name, _ in self.layers(model)]


STEPS: dict[str, type] = {}
S = TypeVar("S")


def register_step(name: str) -> Callable[[type[S]], type[S]]:
    """Class decorator: make a step config available in recipes under `name`."""

    def decorate(cls: type[S]) -> type[S]:
        cls.step_name = name  # type: ignore[attr-defined]
        STEPS[name] = cls
        return cls

    return decorate


@dataclass(frozen=True)
class Recipe:
    name: str
    steps: tuple[Any, ...]
    description: str = ""
    source: str = field(default="", compare=False)

    @property
    def needs_data(self) -> bool:
        return any(step.needs_data for step in self.steps)

    @property
    def distills(self) -> bool:
        """Whether any step trains against the uncompressed network (`distill` other than 'ce')."""
        return any(getattr(step, "distill", "ce") != "ce" for step in self.steps)

    def to_dict(self) -> dict[str, Any]:
        steps = [{step.step_name: config_to_dict(step)} for step in self.steps]
        return {"name": self.name, "description": self.description, "steps": steps}


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
            raise RecipeError(f"unknown recipe {str(name_or_path)!r}; packaged recipes: {', '.join(list_recipes())} "
                              "(or give a path to a YAML file)")
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


def _parse_step(entry: Any, where: str) -> Any:
    if isinstance(entry, str):
        entry = {entry: {}}
    if not isinstance(entry, dict) or len(entry) != 1:
        raise RecipeError(f"{where}: each step is a one-key mapping like '- palette: {{bits: 5}}'")
    (kind, settings), = entry.items()
    if kind not in STEPS:
        raise RecipeError(f"{where}: unknown step {kind!r}; known steps: {', '.join(sorted(STEPS))}")
    return config_from_dict(STEPS[kind], settings, f"{where} ({kind})")
