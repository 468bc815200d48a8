"""Recipe steps and recipes as data: the context a step runs in, the `Step` protocol, `LayerStep`
(fnmatch selection and per-layer `overrides`), the registry `@register_step` fills, and `Recipe`, an
ordered tuple of steps.

Each step is a frozen config dataclass registered under its YAML name by `@register_step` (the
torchao pattern: adding a method touches no central if/elif). Every layer step takes per-layer
settings the same way, fnmatch patterns over module names mapped to the fields that differ there
(for each field the first matching pattern wins):

      - palette: {bits: 5, overrides: {"conv*": {bits: 8}, fc2: {bits: 4, init: linear}}}

Only the fields a step reads per layer (its `per_layer_fields`) may appear; any other name, or a
pattern that matches no selected layer, is an error naming the step, the pattern and the field.
Reading recipes from YAML is `netshrink.recipe`'s job; steps never import it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar

from torch import nn

from netshrink.config import OMIT_WHEN_EMPTY, config_overrides, config_to_dict
from netshrink.errors import NetshrinkError, RecipeError
from netshrink.plan import CompressionPlan
from netshrink.select import WEIGHT_LAYERS, Selection, check_overrides_match, layer_settings, select_modules


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
    """What a recipe step is: a frozen config with a YAML name that changes the model and the plan."""

    step_name: ClassVar[str]

    @property
    def needs_data(self) -> bool:
        """Whether `apply` reads training data (to retrain or to calibrate)."""

    @property
    def distills(self) -> bool:
        """Whether the step trains against the uncompressed network (`StepContext.teacher`)."""

    def apply(self, model: nn.Module, plan: CompressionPlan, ctx: StepContext) -> None: ...


L = TypeVar("L", bound="LayerStep")


@dataclass(frozen=True)
class LayerStep:
    """Base of steps that act on the weights of selected Conv/Linear/Embedding layers.

    `include` / `exclude` pick the layers; `overrides` ({pattern: {field: value}}) changes the
    `per_layer_fields` for the layers a pattern matches. A step checks its own settings in
    `validate` (raising ValueError that names the field), which runs on construction and again
    for each override, so a per-layer value meets the same rules as the step's own.
    """

    step_name: ClassVar[str] = ""
    layer_types: ClassVar[tuple[type[nn.Module], ...]] = WEIGHT_LAYERS
    #: The fields `apply` reads per layer (through `for_layer`), so the ones `overrides` may set.
    per_layer_fields: ClassVar[tuple[str, ...]] = ()

    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict, metadata=OMIT_WHEN_EMPTY)

    def __post_init__(self) -> None:
        checked = config_overrides(type(self), self.overrides, self.per_layer_fields, self.step_name)
        object.__setattr__(self, "overrides", checked)  # values coerced to their fields' types
        self.validate()
        for pattern, settings in checked.items():
            try:
                dataclasses.replace(self, overrides={}, **settings)
            except (ValueError, NetshrinkError) as exc:
                raise RecipeError(f"{self.step_name} overrides {pattern!r}: {exc}") from None

    def validate(self) -> None:
        """Check the step's settings; raise ValueError naming the bad field."""

    @property
    def needs_data(self) -> bool:
        return False

    @property
    def distills(self) -> bool:
        return False

    def layers(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        chosen = select_modules(model, Selection(self.include, self.exclude), self.layer_types, self.step_name)
        check_overrides_match(self.overrides, [name for name, _ in chosen], self.step_name)
        return chosen

    def weight_names(self, model: nn.Module) -> list[str]:
        return [f"{name}.weight" for name, _ in self.layers(model)]

    def for_layer(self: L, name: str) -> L:
        """This step as it applies to module `name`: its settings with the matching overrides."""
        settings = layer_settings(name, self.overrides)
        return dataclasses.replace(self, overrides={}, **settings) if settings else self


STEPS: dict[str, type[Step]] = {}
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
    steps: tuple[Step, ...]
    description: str = ""
    source: str = field(default="", compare=False)

    @property
    def needs_data(self) -> bool:
        return any(step.needs_data for step in self.steps)

    @property
    def distills(self) -> bool:
        """Whether any step trains against the uncompressed network (`distill` other than 'ce')."""
        return any(step.distills for step in self.steps)

    def to_dict(self) -> dict[str, Any]:
        steps = [{step.step_name: config_to_dict(step)} for step in self.steps]
        return {"name": self.name, "description": self.description, "steps": steps}
