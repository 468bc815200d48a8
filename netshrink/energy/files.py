"""Energy of a model in memory or in a .nsk file (weights as the file stores them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from netshrink.energy.costs import EnergyConfig
from netshrink.energy.formats import WeightFormat, dense_formats, weight_format
from netshrink.energy.model import ModelEnergy, estimate
from netshrink.errors import ModelError, NetshrinkError
from netshrink.flops import layer_shapes


def energy_of_model(model: nn.Module, input_shape: Sequence[int], formats: Mapping[str, WeightFormat] | None = None,
                    config: EnergyConfig = EnergyConfig()) -> ModelEnergy:
    """Energy of `model` on one input of `input_shape` (no batch dim); weights dense unless `formats`."""
    shapes = layer_shapes(model, input_shape)
    return estimate(shapes, dense_formats(model) if formats is None else formats, config, input_shape)


def energy_of_file(path: str | Path, input_shape: Sequence[int] | None = None,
                   config: EnergyConfig = EnergyConfig(), model: nn.Module | None = None) -> ModelEnergy:
    """Energy of the model in a .nsk file, weights as the file stores them. The input shape comes from
    the zoo entry the header names; for any other model pass `input_shape` (else ModelError) and,
    as for `api.load`, the module."""
    from netshrink import api
    from netshrink.format.container import read_nsk

    nsk = read_nsk(path)
    shape = tuple(input_shape) if input_shape is not None else zoo_input_shape(nsk.model)
    if shape is None:
        raise ModelError(f"{path}: the input shape of a {nsk.model.get('class', 'non-zoo')} model is unknown; "
                         "pass input_shape")
    formats = {rec.name: weight_format(rec.encoded) for rec in nsk.tensors}
    return energy_of_model(api.load(path, model), shape, formats, config)


def zoo_input_shape(identity: Mapping[str, Any]) -> tuple[int, ...] | None:
    """The input shape of a zoo model named in a header identity, or None for a model outside the zoo."""
    from netshrink import zoo

    name = identity.get("name")
    return tuple(zoo.model_info(name).input_shape) if isinstance(name, str) and name in zoo.MODEL_NAMES else None


def file_energy_summary(path: str | Path) -> tuple[str, dict[str, Any]]:
    """(one text line, JSON object) on the energy of a .nsk file for `inspect` and `compress`; says
    why when it cannot be estimated (model outside the zoo, input the zero-input forward cannot take)."""
    try:
        energy = energy_of_file(path)
    except NetshrinkError as exc:  # not a zoo model, tensors that do not fit it, or inputs it cannot take
        reason = f"energy unavailable: {exc}"
    except (RuntimeError, TypeError, ValueError, IndexError) as exc:  # forward rejects a float zero input
        reason = f"energy unavailable: {path}: a forward pass on a zero input failed ({type(exc).__name__}: {exc})"
    else:
        return energy.summary(), energy.to_json()
    return reason, {"available": False, "reason": reason}
