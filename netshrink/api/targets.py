"""Compression to a target instead of a recipe: a whole-file size ratio, or an estimated energy ratio.

The per-layer bits and sparsity come from the model's sensitivity curves (`netshrink.budget`): the
allocator chooses, a recipe of ordinary steps realises the choice, and the file is written and
measured exactly as a recipe's would be (`CompressOutputs`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from netshrink.api.compressed import CompressedModel, apply_recipe
from netshrink.api.flows import measured_sensitivity
from netshrink.api.models import ModelSource, Source, resolve
from netshrink.api.outputs import CompressOutputs
from netshrink.budget.allocation import (
    Budget,
    BudgetError,
    budget_description,
    budget_recipe,
    check_target,
    choose_for_energy,
    choose_for_ratio,
    layer_tensors,
    non_weight_bytes,
    original_bytes_of,
)
from netshrink.budget.curves import SensitivityResult
from netshrink.budget.sensitivity import SensitivityConfig, load_for_model
from netshrink.devices import resolve_device
from netshrink.energy import energy_of_model, weight_format, zoo_input_shape
from netshrink.errors import NetshrinkError
from netshrink.identity import ModelIdentity
from netshrink.paths import check_output_path


def compress_to_target(
    model: ModelSource = None,
    *,
    ratio: float | None = None,
    energy: float | None = None,
    sensitivity: SensitivityResult | str | Path | None = None,
    output: str | Path | None = None,
    evaluate: bool = False,
    dataset: str | None = None,
    data_dir: str | None = None,
    report: str | Path | None = None,
    runs: Sequence[str | Path] = (),
    input_shape: tuple[int, ...] | None = None,
    metric: str = "kl",
    prune: bool = True,
    name: str | None = None,
    identity: ModelIdentity | Mapping[str, Any] | None = None,
    seed: int = 0,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> CompressedModel:
    """Compress to a whole-file `ratio` or an estimated `energy` ratio (original / compressed), with the
    least predicted damage; `budget` of the result holds the per-layer choice.

    `sensitivity` is a measured result, or a JSON file: reused when it holds this model's curves,
    else measured (default settings) and written there (default: the user cache). The other
    arguments are those of `compress`; an energy target of a model outside the zoo needs `input_shape`.
    """
    device = resolve_device(device)
    value, what = _one_target(ratio, energy)
    sens_file = sensitivity if isinstance(sensitivity, (str, Path)) else None
    if sens_file is not None and not Path(sens_file).is_file():
        check_output_path(sens_file, "sensitivity JSON")  # measured, then written there
    outputs = CompressOutputs.check(
        output, evaluate=evaluate, data_dir=data_dir, report=report, runs=runs, device=device
    )
    source = resolve(
        model, dataset=dataset, data_dir=data_dir, name=name, identity=identity, seed=seed, progress=progress
    )
    before = outputs.score(source)
    sens = _sensitivity_of(source, sensitivity, data_dir, seed, progress, device)
    outputs.plot(sens)
    started = time.perf_counter()
    settings = dict(metric=metric, prune=prune, name=name, seed=seed, progress=progress, device=device)
    if what == "ratio":
        compressed = _to_ratio(source, sens, value, **settings)
    else:
        compressed = _to_energy(source, sens, value, input_shape, **settings)
    compressed.seconds = time.perf_counter() - started
    return outputs.finish(compressed, source, before)


def _one_target(ratio: float | None, energy: float | None) -> tuple[float, str]:
    if (ratio is None) == (energy is None):
        raise NetshrinkError("give one target: a size ratio or an energy ratio (CLI: --target-ratio, --target-energy)")
    value, what = (ratio, "ratio") if ratio is not None else (energy, "energy")
    check_target(value, f"--target-{what}")  # before any work, and before any division by it
    return value, what


def _sensitivity_of(
    source: Source,
    sensitivity: SensitivityResult | str | Path | None,
    data_dir: str | None,
    seed: int,
    progress: bool,
    device: torch.device,
) -> SensitivityResult:
    """The given result; a file of this model's curves; else measured with the default settings."""
    if isinstance(sensitivity, SensitivityResult):
        return sensitivity
    if sensitivity is not None and Path(sensitivity).is_file():
        return load_for_model(sensitivity, source.module)
    return measured_sensitivity(source, SensitivityConfig(seed=seed), data_dir, sensitivity, progress, device)


def _compress(
    source: Source,
    choice: dict,
    recipe_name: str,
    description: str,
    *,
    name: str | None,
    seed: int,
    progress: bool,
    device: torch.device,
) -> CompressedModel:
    """The model compressed (on `device`) by the recipe that realises a per-layer choice."""
    recipe = budget_recipe(choice, recipe_name, description)
    return apply_recipe(
        source.module,
        recipe,
        identity=source.identity,
        name=name,
        dataset=source.dataset,
        seed=seed,
        progress=progress,
        device=device,
    )


def _to_ratio(
    source: Source,
    sens: SensitivityResult,
    ratio: float,
    *,
    metric: str,
    prune: bool,
    attempts: int = 4,
    **settings: Any,
) -> CompressedModel:
    """Choose, compress, measure the real file; if the header pushed it over, shrink the budget by that much."""
    original = original_bytes_of(source.module, source.identity)
    target, header = int(original / ratio), 0
    fixed = non_weight_bytes(source.module, layer_tensors(sens))
    description = budget_description(sens, f"a whole-file ratio of {ratio:g}x", metric, prune)
    for attempt in range(attempts):
        choice = choose_for_ratio(sens, source.module, ratio, original, header, metric, prune)
        compressed = _compress(source, choice, f"auto-ratio-{ratio:g}x", description, **settings)
        size = compressed.nbytes()
        if size <= target:
            compressed.budget = Budget(choice, size, target)
            return compressed
        # What is neither a layer weight nor another tensor is the header (its recipe text changes a
        # little with the choice: keep a small margin that grows with each attempt).
        header = max(header, size - sum(option.bytes for option in choice.values()) - fixed) + 64 * attempt
    raise BudgetError(
        f"target ratio {ratio:g}x: the file stays {size - target:,} bytes over its "
        f"{target:,}-byte target after {attempts} attempts; try a slightly lower ratio"
    )


def _to_energy(
    source: Source,
    sens: SensitivityResult,
    energy_ratio: float,
    input_shape: tuple[int, ...] | None,
    *,
    metric: str,
    prune: bool,
    **settings: Any,
) -> CompressedModel:
    """Choose for an energy target, compress, and estimate the energy of what the file stores."""
    shape = input_shape or zoo_input_shape(source.identity or ModelIdentity())
    if shape is None:
        raise BudgetError(
            "an energy target needs the model's input shape: use a zoo model or a checkpoint of one "
            "(Python: input_shape=)"
        )
    choice = choose_for_energy(sens, source.module, energy_ratio, tuple(shape), metric, prune)
    description = budget_description(sens, f"an estimated energy ratio of {energy_ratio:g}x", metric, prune)
    compressed = _compress(source, choice, f"auto-energy-{energy_ratio:g}x", description, **settings)
    formats = {name: weight_format(entry.encoded) for name, entry in compressed.plan.entries.items() if entry.encoded}
    achieved = energy_of_model(compressed.model, tuple(shape), formats).ratio
    compressed.budget = Budget(choice, compressed.nbytes(), energy_ratio=achieved)
    return compressed
