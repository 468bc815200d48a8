"""The flows the command line runs, one function each: compress with a recipe, evaluate, measure
sensitivity, train a zoo model, inspect a file, write its HTML report, list the recipes.

A model may be given as a module, a zoo name, a .nsk file, or None (the embedded demo model), as
on the command line; every function returns a typed result that prints itself for people
(`to_text`) and for scripts (`to_json`). `device` (cpu, cuda, cuda:N, mps; default: $NETSHRINK_DEVICE,
else cuda when there is one) is checked first, before any model is loaded.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from netshrink import DEFAULT_RECIPE
from netshrink.api.compressed import CompressedModel, apply_recipe
from netshrink.api.files import open_file
from netshrink.api.models import ModelSource, Source, initial_model, resolve, torch_save_hint
from netshrink.api.outputs import CompressOutputs
from netshrink.api.results import RecipeList, ReportWritten, TrainedCheckpoint
from netshrink.budget.curves import SensitivityResult
from netshrink.budget.sensitivity import SensitivityConfig
from netshrink.budget.sensitivity import sensitivity as cached_sensitivity
from netshrink.data import WINDOW_LENGTHS, ArrayDataset, SentencePairs, TokenWindows, load_dataset
from netshrink.devices import Autocast, placed_on, resolve_device
from netshrink.errors import DataError, NetshrinkError
from netshrink.evaluate import EvalResult
from netshrink.evaluate import evaluate as score_on
from netshrink.identity import ModelIdentity
from netshrink.parallel.runtime import is_main
from netshrink.paths import check_output_path
from netshrink.recipe import list_recipes, load_recipe
from netshrink.report.sizes import FileReport
from netshrink.step import Recipe
from netshrink.training.loop import TrainConfig, default_train_config, fit
from netshrink.training.retraining import TrainingStep


def compress(
    model: ModelSource = None,
    recipe: Recipe | str | Path | None = None,
    data: Any = None,
    *,
    output: str | Path | None = None,
    evaluate: bool = False,
    dataset: str | None = None,
    data_dir: str | None = None,
    report: str | Path | None = None,
    runs: Sequence[str | Path] = (),
    sensitivity: str | Path | None = None,
    name: str | None = None,
    identity: ModelIdentity | Mapping[str, Any] | None = None,
    seed: int = 0,
    progress: bool = True,
    inplace: bool = False,
    device: str | torch.device | None = None,
    autocast: Autocast = None,
) -> CompressedModel:
    """Compress a model with a recipe (default `DEFAULT_RECIPE`); with `output`, write and measure the file.

    `data` is the training split for recipes that retrain or calibrate (default: the training split
    of `dataset`, or of the model's own data set). `evaluate` scores the model before and after on the
    held-out split; `report` writes an HTML page about the file, plotting benchmark `runs` and
    `sensitivity` curves. The input model is left untouched unless `inplace`. The steps compute on
    `device` (the compressed model stays there); `autocast: "bf16"` retrains under bfloat16 autocast.
    """
    device = resolve_device(device)
    outputs = CompressOutputs.check(
        output, evaluate=evaluate, data_dir=data_dir, report=report, runs=runs, sensitivity=sensitivity, device=device
    )
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe or DEFAULT_RECIPE)  # before any training
    recipe = with_autocast(recipe, autocast)
    source = resolve(
        model, dataset=dataset, data_dir=data_dir, name=name, identity=identity, seed=seed, progress=progress
    )
    before = outputs.score(source)
    data = data if data is not None else _training_data(recipe, source, data_dir)
    started = time.perf_counter()
    compressed = apply_recipe(
        source.module,
        recipe,
        data,
        identity=source.identity,
        name=name,
        dataset=source.dataset,
        seed=seed,
        progress=progress,
        inplace=inplace,
        device=device,
    )
    compressed.seconds = time.perf_counter() - started
    return outputs.finish(compressed, source, before)


def _training_data(recipe: Recipe, source: Source, data_dir: str | None) -> ArrayDataset | None:
    """The training split for recipes that retrain or calibrate; a one-line error when it is missing."""
    if not recipe.needs_data or source.dataset is None:
        return None
    try:
        return load_dataset(source.dataset, "train", data_dir)
    except DataError as exc:
        raise DataError(
            f"recipe {recipe.name} retrains, so it needs the {source.dataset} training split: {exc}"
        ) from None


def evaluate(
    model: ModelSource,
    dataset: str | ArrayDataset | SentencePairs | TokenWindows | None = None,
    *,
    data_dir: str | None = None,
    limit: int | None = None,
    split: str = "test",
    progress: bool = True,
    device: str | torch.device | None = None,
    identity: ModelIdentity | Mapping[str, Any] | None = None,
    keep_compressed: bool = False,
) -> EvalResult:
    """Score a model on the held-out split of its data set (or `dataset`): top-1, Spearman for
    sentence pairs, perplexity for text windows. `limit` scores a fixed random subset of that many
    samples (windows). `identity` names the
    zoo model of a .safetensors checkpoint whose metadata does not. `keep_compressed`: a .nsk
    file's palette and PQ layers run from their codes (`netshrink.load`)."""
    device = resolve_device(device)
    if dataset is not None and not isinstance(dataset, str):  # a data set in memory
        source = resolve(
            model, data_dir=data_dir, identity=identity, progress=progress, keep_compressed=keep_compressed
        )
        return replace(
            score_on(source.module, dataset, split=split, progress=progress, limit=limit, device=device),
            model=source.label,
            dataset="dataset",
        )
    source = resolve(
        model,
        dataset=dataset,
        data_dir=data_dir,
        identity=identity,
        progress=progress,
        keep_compressed=keep_compressed,
    )
    name = source.require_dataset()
    data: Any = name
    if name in WINDOW_LENGTHS:  # text: encoded with the model's own tokenizer
        from netshrink.api.language import find_tokenizer

        data = load_dataset(name, split, data_dir, tokenizer=find_tokenizer(source))
    result = score_on(source.module, data, data_dir, split=split, progress=progress, limit=limit, device=device)
    return replace(result, model=source.label, dataset=name)


def sensitivity(
    model: ModelSource,
    dataset: str | None = None,
    *,
    bits: Sequence[int] = (2, 3, 4, 5, 6),
    sparsity: Sequence[float] = (0.3, 0.5, 0.7, 0.9),
    samples: int = 512,
    seed: int = 0,
    data_dir: str | None = None,
    output: str | Path | None = None,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> SensitivityResult:
    """Per-layer accuracy and KL against palette bits and pruning, on a held-out slice of the training
    split; reused from `output` (default: the user cache) when measured before on this very model."""
    device = resolve_device(device)
    if output is not None:
        check_output_path(output, "sensitivity JSON")
    try:
        config = SensitivityConfig(tuple(bits), tuple(sparsity), samples, seed)
    except ValueError as exc:
        raise NetshrinkError(f"sensitivity settings: {exc}") from None
    source = resolve(model, dataset=dataset, data_dir=data_dir, progress=progress)
    return measured_sensitivity(source, config, data_dir, output, progress, device)


def measured_sensitivity(
    source: Source,
    config: SensitivityConfig,
    data_dir: str | None,
    path: str | Path | None,
    progress: bool,
    device: torch.device | None = None,
) -> SensitivityResult:
    """The sensitivity of a resolved model, measured (on `device`) or reused from `path` / the cache."""
    dataset = source.require_dataset()
    train = load_dataset(dataset, "train", data_dir)
    with placed_on(source.module, device):
        return cached_sensitivity(
            source.module, train, config, dataset=dataset, path=path, identity=source.identity, progress=progress
        )


def train(
    model: str,
    output: str | Path,
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    epochs: float | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    from_pretrained: bool = False,
    seed: int = 0,
    progress: bool = True,
    device: str | torch.device | None = None,
    autocast: Autocast = None,
) -> TrainedCheckpoint:
    """Train a zoo model (from scratch, or fine-tune its published weights) on `device` and save a
    checkpoint; `autocast: "bf16"` trains under bfloat16 autocast."""
    from netshrink import zoo
    from netshrink.api.files import save

    device = resolve_device(device)
    check_output_path(output, "checkpoint")  # before training, not after it
    dataset = dataset or zoo.model_info(model).dataset
    module = initial_model(model, from_pretrained, data_dir, seed)
    config = _train_config(
        model, dataset, from_pretrained, seed, epochs=epochs, lr=lr, batch_size=batch_size, autocast=autocast
    )
    train_data = load_dataset(dataset, "train", data_dir)
    started = time.perf_counter()
    fit(module, train_data, config, progress=progress, desc=f"train {model}", device=device)
    seconds = time.perf_counter() - started
    if not is_main():  # a distributed run: rank 0 scores and writes the checkpoint
        return TrainedCheckpoint(str(output), model, dataset, None, seconds, config)
    score = score_on(module, dataset, data_dir, progress=progress, device=device)
    save(module, output, name=model, dataset=dataset)
    return TrainedCheckpoint(str(output), model, dataset, score, seconds, config)


def _train_config(model: str, dataset: str, fine_tune: bool, seed: int, **overrides: Any) -> TrainConfig:
    base = default_train_config(model, dataset, fine_tune=fine_tune)
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return TrainConfig(**{**vars(base), **given, "seed": seed})
    except ValueError as exc:
        raise NetshrinkError(f"bad training setting: {exc}") from None


def with_autocast(recipe: Recipe, autocast: Autocast) -> Recipe:
    """`recipe` with every retraining step set to train under `autocast` (None: the recipe as written)."""
    if autocast is None:
        return recipe
    steps = tuple(
        replace(step, train=replace(step.train, autocast=autocast)) if isinstance(step, TrainingStep) else step
        for step in recipe.steps
    )
    return replace(recipe, steps=steps)


def inspect(path: str | Path) -> FileReport:
    """Per-tensor codecs and bytes of a .nsk file, read from disk, with its estimated energy."""
    with torch_save_hint(path):
        return open_file(path).report


def write_report(
    path: str | Path, output: str | Path, *, runs: Sequence[str | Path] = (), sensitivity: str | Path | None = None
) -> ReportWritten:
    """A self-contained HTML page with plots of a .nsk file, benchmark `runs` and `sensitivity` curves."""
    from netshrink.report.html import read_extras, write_html_report

    check_output_path(output, "HTML report")
    extras = read_extras([str(run) for run in runs], str(sensitivity) if sensitivity else None)
    report = inspect(path)
    extras.energy = report.energy.to_json()
    write_html_report(report, output, extras)
    return ReportWritten(
        str(path),
        str(output),
        len(extras.runs),
        None if sensitivity is None else str(sensitivity),
        bool(extras.energy.get("available", False)),
        report.summary(),
    )


def recipes() -> RecipeList:
    """The packaged recipes with their descriptions."""
    return RecipeList({name: " ".join(load_recipe(name).description.split()) for name in list_recipes()})
