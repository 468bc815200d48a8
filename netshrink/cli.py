"""Command line: `netshrink train | compress | sensitivity | eval | generate | inspect | report | recipes`.

A thin front end over the API (`netshrink.api`): arguments are parsed and every output path checked
before PyTorch is even imported, then one API call runs the command and its result is printed as
text or JSON. A user error (`NetshrinkError`) is printed as one line on stderr and exits with
status 2; a traceback means a bug in netshrink.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from netshrink import DEFAULT_RECIPE
from netshrink.arguments import NO_COMMAND_HINT, build_parser, checkpoint_identity
from netshrink.errors import NetshrinkError
from netshrink.parallel.command import exit_if_collective_failed, is_main_process, join_run, stopped, without_nproc
from netshrink.paths import check_output_path

log = logging.getLogger("netshrink")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit status: 0 done, 2 a user error (one line on stderr), 130 interrupted."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        _check_arguments(parser, args)
    except SystemExit as exc:  # --help (0) or a usage error (2, already printed): a status, not an exception
        return exc.code if isinstance(exc.code, int) else 2
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if args.command is None:
        parser.print_usage(sys.stderr)
        print(NO_COMMAND_HINT, file=sys.stderr)
        return 2
    try:
        _check_outputs(args)  # before PyTorch is imported: a wrong path fails in milliseconds
        if getattr(args, "nproc", None) and args.nproc > 1:
            from netshrink.parallel.launch import launch

            return launch(args.nproc, without_nproc(sys.argv[1:] if argv is None else argv))
        result = run(args)
    except NetshrinkError as exc:
        print(f"netshrink: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("netshrink: interrupted", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        exit_if_collective_failed(exc)
        raise
    except BaseException as exc:
        if stopped(exc):  # the launcher stops this rank after another one failed
            return 143
        raise
    if not is_main_process():
        return 0
    try:
        _emit(result, args)
    except BrokenPipeError:  # `netshrink inspect F | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Combinations argparse cannot express: a target generates its own recipe, and one target at a time."""
    if getattr(args, "nproc", None) is not None:
        from netshrink.parallel.launch import check_nproc

        try:
            args.nproc = check_nproc(args.nproc)
        except NetshrinkError as exc:
            parser.error(str(exc))
    if args.command != "compress":
        return
    if args.recipe and _has_target(args):
        parser.error(
            "give either --recipe or a target (--target-ratio, --target-energy): a target generates its own recipe"
        )
    if args.target_ratio is not None and args.target_energy is not None:
        parser.error("give one target at a time: --target-ratio or --target-energy")
    if args.autocast and _has_target(args):
        parser.error("--autocast sets how a recipe retrains; the recipe a target generates does not retrain")
    stream_only = [flag for flag, value in STREAM_ONLY.items() if getattr(args, value)]
    if stream_only and not args.stream:
        parser.error(f"{', '.join(stream_only)}: only with --stream")
    if args.stream and (_has_target(args) or args.report or args.runs or not args.model):
        parser.error("--stream takes a .safetensors checkpoint and a --recipe (no target, --report or --runs)")


#: Options of `compress` that only block-by-block compression reads, by the attribute they set.
STREAM_ONLY = {"--resume": "resume"}


def _has_target(args: argparse.Namespace) -> bool:
    return getattr(args, "target_ratio", None) is not None or getattr(args, "target_energy", None) is not None


#: The files each command writes, by option, and what they are called in an error.
OUTPUTS = {
    "train": (("output", "checkpoint"),),
    "compress": (("output", "output file"), ("report", "HTML report")),
    "report": (("output", "HTML report"),),
    "sensitivity": (("output", "sensitivity JSON"),),
}


def _check_outputs(args: argparse.Namespace) -> None:
    """Every file the command will write, as named on the command line (the API checks them again,
    with those it names itself)."""
    outputs = [(getattr(args, option), what) for option, what in OUTPUTS.get(args.command, ())]
    if args.command == "compress" and _has_target(args) and args.sensitivity and not os.path.isfile(args.sensitivity):
        outputs.append((args.sensitivity, "sensitivity JSON"))  # measured, then written there
    for path, what in outputs:
        if path:
            check_output_path(path, what)


def run(args: argparse.Namespace) -> Any:
    """The one API call of a command (imports PyTorch)."""
    from netshrink import api
    from netshrink.devices import resolve_device

    computes = args.command in ("train", "compress", "sensitivity", "eval", "generate")
    device = resolve_device(args.device) if computes else None  # a missing device fails before any work
    join_run(device)
    if args.command in ("inspect", "report", "recipes") and not is_main_process():
        return None  # nothing to share: rank 0 reads, writes and prints
    data = {
        "dataset": getattr(args, "dataset", None),
        "data_dir": getattr(args, "data_dir", None),
        "progress": is_main_process(),  # one set of progress bars in a run on several processes
    }
    if computes:
        data["device"] = device
    if args.command == "train":
        return api.train(
            args.model,
            args.output,
            **data,
            epochs=args.epochs,
            lr=args.lr,
            batch_size=args.batch_size,
            from_pretrained=args.from_pretrained,
            seed=args.seed,
            autocast=args.autocast,
        )
    if args.command == "compress":
        return _compress(api, args, data)
    if args.command == "sensitivity":
        return api.sensitivity(
            args.model,
            **data,
            bits=args.bits,
            sparsity=args.sparsity,
            samples=args.samples,
            seed=args.seed,
            output=args.output,
        )
    if args.command == "eval":
        return api.evaluate(
            args.model,
            **data,
            limit=args.limit,
            identity=checkpoint_identity(args),
            keep_compressed=args.keep_compressed,
        )
    if args.command == "generate":
        from netshrink.api.language import generate

        return generate(
            args.model,
            args.prompt,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            seed=args.seed,
            tokenizer=args.tokenizer,
            device=device,
            data_dir=data["data_dir"],
            keep_compressed=args.keep_compressed,
        )
    if args.command == "inspect":
        return api.inspect(args.file)
    if args.command == "report":
        return api.write_report(args.file, args.output, runs=args.runs, sensitivity=args.sensitivity)
    return api.recipes()


def _compress(api: Any, args: argparse.Namespace, data: dict[str, Any]) -> Any:
    if args.stream or _language_model_by_block(args):
        from netshrink.streaming import compress_streaming

        return compress_streaming(
            args.model,
            args.recipe or DEFAULT_RECIPE,
            output=args.output or f"{Path(args.model).stem}.nsk",
            model=args.zoo_model,
            arch=args.arch,
            calibration=data["dataset"],
            data_dir=data["data_dir"],
            resume=args.resume,
            seed=args.seed,
        )
    output = args.output or api.default_output(args.model)
    common = dict(
        output=output,
        evaluate=not args.no_eval,
        report=args.report,
        runs=args.runs,
        seed=args.seed,
        identity=checkpoint_identity(args),
        **data,
    )
    if _has_target(args):
        return api.compress_to_target(
            args.model, ratio=args.target_ratio, energy=args.target_energy, sensitivity=args.sensitivity, **common
        )
    return api.compress(args.model, args.recipe, sensitivity=args.sensitivity, autocast=args.autocast, **common)


def _language_model_by_block(args: argparse.Namespace) -> bool:
    """A language model published as a GGUF file (a zoo name or the file), under a recipe whose every
    step works block by block, is compressed block by block even without --stream: compressing it
    whole, each calibrated layer would run the whole network again (hours instead of minutes)."""
    if _has_target(args) or args.report or args.runs or not args.model:
        return False
    from netshrink import zoo
    from netshrink.data import WINDOW_LENGTHS
    from netshrink.recipe import load_recipe
    from netshrink.streaming.parts import streams_whole_recipe

    name = str(args.model)
    is_zoo_lm = name in zoo.MODEL_NAMES and zoo.model_info(name).dataset in WINDOW_LENGTHS
    if not (is_zoo_lm or Path(name).suffix == ".gguf"):
        return False
    if streams_whole_recipe(load_recipe(args.recipe or DEFAULT_RECIPE)):
        log.info("compressing %s block by block (as with --stream)", name)
        return True
    return False


def _emit(result: Any, args: argparse.Namespace) -> None:
    """The result on stdout: JSON for scripts (--json), text for people."""
    if getattr(args, "json", False):
        print(json.dumps(result.to_json(), indent=2, default=str))
    else:
        print(result.to_text())


if __name__ == "__main__":
    sys.exit(main())
