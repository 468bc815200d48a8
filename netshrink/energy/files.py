"""Energy of a model in memory or in a .nsk file (weights as the file stores them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from netshrink.energy.costs import EnergyConfig
from netshrink.energy.formats import WeightFormat, dense_formats, weight_format
from netshrink.energy.model import ModelEnergy, estimate
from netshrink.errors import ModelError, NetshrinkError
from netshrink.flops import layer_shapes
from netshrink.identity import ModelIdentity


def energy_of_model(
    model: nn.Module,
    input_shape: Sequence[int],
    formats: Mapping[str, WeightFormat] | None = None,
    config: EnergyConfig = EnergyConfig(),
) -> ModelEnergy:
    """Energy of `model` on one input of `input_shape` (no batch dim); weights dense unless `formats`."""
    shapes = layer_shapes(model, input_shape)
    return estimate(shapes, dense_formats(model) if formats is None else formats, config, input_shape)


def energy_of_file(
    path: str | Path,
    input_shape: Sequence[int] | None = None,
    config: EnergyConfig = EnergyConfig(),
    model: nn.Module | None = None,
) -> ModelEnergy:
    """Energy of the model in a .nsk file, weights as the file stores them. The input shape comes from
    the zoo entry the header names; for any other model pass `input_shape` (else ModelError) and,
    as for `netshrink.load`, the module."""
    from netshrink.decoding import load_module, read_file

    nsk, identity = read_file(path)
    shape = tuple(input_shape) if input_shape is not None else zoo_input_shape(identity)
    if shape is None:
        raise ModelError(_unknown_shape(path, identity))
    return energy_of_model(load_module(path, model), shape, stored_formats(nsk.tensors), config)


def _unknown_shape(path: str | Path, identity: ModelIdentity) -> str:
    return f"{path}: the input shape of a {identity.class_name or 'non-zoo'} model is unknown; pass input_shape"


def stored_formats(records: Sequence[Any]) -> dict[str, WeightFormat]:
    """What the hardware sees of each tensor of a file: its stored bits, codebooks and density."""
    return {rec.name: weight_format(rec.encoded) for rec in records}


def zoo_input_shape(identity: ModelIdentity) -> tuple[int, ...] | None:
    """The input shape of the zoo model an identity names, or None for a model outside the zoo."""
    from netshrink import zoo

    name = identity.name
    return tuple(zoo.model_info(name).input_shape) if name in zoo.MODEL_NAMES else None


@dataclass(frozen=True)
class EnergySummary:
    """The estimated energy of a file's model, or why it cannot be estimated (one line for people)."""

    estimate: ModelEnergy | None
    reason: str = ""

    def text(self) -> str:
        return self.estimate.summary() if self.estimate is not None else self.reason

    def to_json(self) -> dict[str, Any]:
        return self.estimate.to_json() if self.estimate is not None else {"available": False, "reason": self.reason}


def energy_summary(
    path: str | Path,
    model: nn.Module | None,
    identity: ModelIdentity,
    formats: Mapping[str, WeightFormat],
    why_no_model: str = "",
) -> EnergySummary:
    """The energy of a file's model already loaded (`model`, None when it could not be built: then
    `why_no_model` says why); says why when it cannot be estimated (model outside the zoo, input the
    zero-input forward cannot take)."""
    shape = zoo_input_shape(identity)
    if shape is None:
        return EnergySummary(None, f"energy unavailable: {_unknown_shape(path, identity)}")
    if model is None:
        return EnergySummary(None, f"energy unavailable: {why_no_model}")
    try:
        return EnergySummary(energy_of_model(model, shape, formats))
    except NetshrinkError as exc:  # inputs it cannot take
        reason = f"energy unavailable: {exc}"
    except (RuntimeError, TypeError, ValueError, IndexError) as exc:  # forward rejects a float zero input
        reason = f"energy unavailable: {path}: a forward pass on a zero input failed ({type(exc).__name__}: {exc})"
    return EnergySummary(None, reason)
