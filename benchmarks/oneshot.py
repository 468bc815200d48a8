"""One-shot compression benchmark: the shipped recipes, and a palette bit-width sweep against coremltools.

Part 1 runs `oneshot-palette5`, `oneshot-prune50-palette5` and `fp16` on LeNet-5 (MNIST), ResNet-20
(CIFAR-10 JPEG) and EfficientNet-Lite0 (Imagenette val, 1000-way). Each result is the real file:
compress, save a .nsk, load it back (the zoo rebuilds the module from the file header) and score the
LOADED model on the held-out split. `ratio` is fp32 bytes of every parameter and buffer over the file
size on disk; `weights_ratio` is the papers' convention (conv/linear weights only).

Part 2 sweeps palette bit widths per tensor and per output channel, ours (a recipe with one
`palette` step, measured as a real file) against coremltools' PostTrainingPalettizer on exactly the
same layers (see peers/coreml_palettize.py for its size convention: coremltools writes no file here).

    NETSHRINK_DATA=/work/shared/data python benchmarks/oneshot.py \
        [--models lenet5,resnet20,efficientnet_lite0] [--lenet5-ckpt PATH] [--train-lenet5] \
        [--data-dir DIR] [--limit N] [--bits 2,3,4,5,6] [--efficientnet-bits 3,4,5] \
        [--repeats N] [--out benchmarks/results/oneshot.json]

Compression times are the median of --repeats runs (default: 3 for LeNet-5 and ResNet-20, 1 for
EfficientNet-Lite0); the k-means is deterministic (seed 0), so accuracy is measured on the last run.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import coreml_palettize as peer  # noqa: E402

import netshrink  # noqa: E402
from netshrink import zoo  # noqa: E402
from netshrink.data import ArrayDataset, load_dataset  # noqa: E402
from netshrink.evaluate import evaluate, top1_predictions  # noqa: E402
from netshrink.recipe import load_recipe, parse_recipe  # noqa: E402
from netshrink.report.sizes import WEIGHTS_RATIO_LABEL  # noqa: E402
from netshrink.step import Recipe  # noqa: E402

log = logging.getLogger("oneshot")

MODELS = ("lenet5", "resnet20", "efficientnet_lite0")
RECIPES = ("oneshot-palette5", "oneshot-prune50-palette5", "fp16")
SMALL_MODELS = ("lenet5", "resnet20")
SWEEP_MODELS = ("resnet20", "efficientnet_lite0")
#: McNemar's test level below which an accuracy difference on the same samples counts as real.
SIGNIFICANCE = 0.05


@dataclass
class Subject:
    """A model to benchmark, its held-out data, and its uncompressed score on that data."""

    name: str
    model: nn.Module
    dataset: str
    data: ArrayDataset
    top1: float = float("nan")
    repeats: int = 1
    train: ArrayDataset | None = None  # calibration samples for `palette weighting: activation`
    predictions: torch.Tensor | None = None  # the uncompressed model's top-1 on `data`


def median_seconds(run: Callable[[], Any], repeats: int) -> tuple[float, list[float], Any]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times, result


def top1(model: nn.Module, subject: Subject) -> float:
    return evaluate(model, subject.data, progress=False).value


def scored(model: nn.Module, subject: Subject) -> tuple[float, list[bool], float]:
    """(top-1, per-sample correctness, agreement with the uncompressed model's top-1) on the
    held-out split: the paired test and the fidelity column of the sweep."""
    predicted, target = top1_predictions(model, subject.data)
    if subject.predictions is None:
        subject.predictions = top1_predictions(subject.model, subject.data)[0]
    correct = predicted == target
    return float(correct.float().mean()), correct.tolist(), float((predicted == subject.predictions).float().mean())


def mcnemar(ours: list[bool], theirs: list[bool]) -> dict[str, Any]:
    """McNemar's exact test on the same samples: only the samples one model gets right and the
    other wrong count; p = two-sided binomial probability of a split at least this uneven."""
    only_ours = sum(a and not b for a, b in zip(ours, theirs))
    only_theirs = sum(b and not a for a, b in zip(ours, theirs))
    n, low = only_ours + only_theirs, min(only_ours, only_theirs)
    tail = sum(math.comb(n, i) for i in range(low + 1)) / 2**n if n else 1.0
    return {"only_ours_right": only_ours, "only_theirs_right": only_theirs, "p_value": min(1.0, 2 * tail)}


# --- models -----------------------------------------------------------------------------------------


def lenet5_model(args: argparse.Namespace) -> nn.Module | None:
    """LeNet-5 from --lenet5-ckpt, or trained here with the CLI's settings (--train-lenet5)."""
    if args.lenet5_ckpt:
        return netshrink.load(args.lenet5_ckpt, model=zoo.build_model("lenet5"))
    if not args.train_lenet5:
        log.warning(
            "lenet5 skipped: no --lenet5-ckpt given (make one with `netshrink train lenet5 --dataset "
            "mnist -o lenet5.nsk`), and --train-lenet5 (train it here, several minutes) not set"
        )
        return None
    from netshrink.training.loop import default_train_config, fit

    torch.manual_seed(0)
    model = zoo.build_model("lenet5")
    config = default_train_config("lenet5", "mnist")
    log.info("training lenet5 on mnist (%s epochs): this takes several minutes", config.epochs)
    fit(model, load_dataset("mnist", "train", args.data_dir), config, desc="train lenet5")
    return model.eval()


def load_subject(name: str, args: argparse.Namespace) -> Subject | None:
    model = lenet5_model(args) if name == "lenet5" else zoo.get_model(name, pretrained=True, data_dir=args.data_dir)
    if model is None:
        return None
    dataset = zoo.model_info(name).dataset
    data = load_dataset(dataset, "test", args.data_dir)
    if args.limit is not None:
        data = data.sample(args.limit)
    repeats = args.repeats or (3 if name in SMALL_MODELS else 1)
    subject = Subject(name, model.eval(), dataset, data, repeats=repeats)
    subject.top1 = top1(model, subject)
    log.info("%s uncompressed: top-1 %.2f %% on %d %s test samples", name, 100 * subject.top1, len(data), dataset)
    return subject


# --- ours -------------------------------------------------------------------------------------------


def palette_recipe(bits: int, per_channel: bool, weighting: str = "none", compensate: bool = False) -> Recipe:
    name = (
        f"palette{bits}{'-per-channel' if per_channel else ''}{'' if weighting == 'none' else '-' + weighting}"
        f"{'-compensate' if compensate else ''}"
    )
    step = {"bits": bits, "per_channel": per_channel, "weighting": weighting, "compensate": compensate}
    return parse_recipe({"name": name, "steps": [{"palette": step}]})


def run_ours(subject: Subject, recipe: Recipe, workdir: Path) -> dict[str, Any]:
    """Compress (timed), save, load the file back and score the loaded model."""
    path = workdir / f"{subject.name}-{recipe.name}.nsk"

    def compress_and_save() -> Any:
        data = subject.train if recipe.needs_data else None
        compressed = netshrink.compress(subject.model, recipe, data, name=subject.name, progress=False)
        return compressed.save(path)

    seconds, times, report = median_seconds(compress_and_save, subject.repeats)
    loaded = netshrink.load(path)
    after, correct, agreement = scored(loaded, subject)
    path.unlink()
    return {
        "tool": "netshrink",
        "model": subject.name,
        "recipe": recipe.name,
        "recipe_spec": recipe.to_dict(),
        "file_bytes": report.file_bytes,
        "original_bytes": report.original_bytes,
        "ratio": report.ratio,
        "weights_ratio": report.weights_ratio,
        "top1_before": subject.top1,
        "top1_after": after,
        "drop_pp": 100 * (subject.top1 - after),
        "compress_seconds": seconds,
        "compress_seconds_all": times,
        "repeats": subject.repeats,
        "n_eval": len(subject.data),
        "correct": correct,
        "agreement": agreement,
    }


def layer_names(subject: Subject, recipe: Recipe) -> list[str]:
    """The modules our palette step compresses, so the peer gets exactly the same ones."""
    (step,) = recipe.steps
    return [name for name, _ in step.layers(subject.model)]


# --- peer -------------------------------------------------------------------------------------------


def run_peer(subject: Subject, layers: list[str], bits: int, per_channel: bool) -> dict[str, Any]:
    times, result = [], None
    for _ in range(subject.repeats):
        result = peer.palettize_like_ours(subject.model, layers, bits, per_channel)
        times.append(result.seconds)
    after, correct, agreement = scored(result.model, subject)
    size = result.size
    return {
        "tool": f"coremltools {peer.peer_version()}",
        "model": subject.name,
        "bits": bits,
        "per_channel": per_channel,
        "config": result.config,
        "size_bytes": size.size_bytes,
        "original_bytes": size.original_bytes,
        "ratio": size.ratio,
        "weights_ratio": size.weights_ratio,
        "size": size.to_json(),
        "top1_before": subject.top1,
        "top1_after": after,
        "drop_pp": 100 * (subject.top1 - after),
        "compress_seconds": statistics.median(times),
        "compress_seconds_all": times,
        "repeats": subject.repeats,
        "n_eval": len(subject.data),
        "correct": correct,
        "agreement": agreement,
    }


# --- the two parts ----------------------------------------------------------------------------------


def run_recipes(subjects: list[Subject], workdir: Path) -> list[dict[str, Any]]:
    rows = []
    jobs = [(s, r) for s in subjects for r in RECIPES]
    for subject, recipe_name in tqdm(jobs, desc="recipes", unit="run"):
        row = run_ours(subject, load_recipe(recipe_name), workdir)
        row.pop("correct")
        log.info(
            "%s %s: ratio %.2fx (weights %.2fx), top-1 %.2f -> %.2f %%, %.1f s",
            subject.name,
            recipe_name,
            row["ratio"],
            row["weights_ratio"],
            100 * row["top1_before"],
            100 * row["top1_after"],
            row["compress_seconds"],
        )
        rows.append(row)
    return rows


def run_sweep(
    subjects: list[Subject],
    bits_for: dict[str, list[int]],
    workdir: Path,
    weighting: str = "none",
    compensate: bool = False,
) -> list[dict[str, Any]]:
    """Ours (with `weighting` and `compensate`; also plain k-means when either is on, for the record)
    vs coremltools."""
    rows = []
    jobs = [(s, b, pc) for s in subjects if s.name in SWEEP_MODELS for pc in (False, True) for b in bits_for[s.name]]
    for subject, bits, per_channel in tqdm(jobs, desc="bit-width sweep", unit="config"):
        recipe = palette_recipe(bits, per_channel, weighting, compensate)
        ours = run_ours(subject, recipe, workdir)
        data_free = weighting == "none" and not compensate
        plain = ours if data_free else run_ours(subject, palette_recipe(bits, per_channel), workdir)
        theirs = run_peer(subject, layer_names(subject, recipe), bits, per_channel)
        ours.update(bits=bits, per_channel=per_channel)
        log.info(
            "%s %d-bit %s: ours %.2fx %.2f %% (%.1f s) | coremltools %.2fx %.2f %% (%.1f s)",
            subject.name,
            bits,
            granularity(per_channel),
            ours["ratio"],
            100 * ours["top1_after"],
            ours["compress_seconds"],
            theirs["ratio"],
            100 * theirs["top1_after"],
            theirs["compress_seconds"],
        )
        paired = mcnemar(ours.pop("correct"), theirs.pop("correct"))
        plain.pop("correct", None)
        rows.append(
            {
                "model": subject.name,
                "bits": bits,
                "per_channel": per_channel,
                "ours": ours,
                "coremltools": theirs,
                "paired_test": paired,
                "ours_plain": plain,
                "ours_smaller_at_equal_or_better_accuracy": ours_wins(ours, theirs),
            }
        )
    return rows


def ours_wins(ours: dict[str, Any], theirs: dict[str, Any]) -> bool:
    return ours["ratio"] > theirs["ratio"] and ours["top1_after"] >= theirs["top1_after"]


def granularity(per_channel: bool) -> str:
    return "per-channel" if per_channel else "per-tensor"


# --- output -----------------------------------------------------------------------------------------


def pct(value: float) -> str:
    return f"{100 * value:.2f}"


def verdict(row: dict[str, Any]) -> str:
    ours, theirs = row["ours"], row["coremltools"]
    if row["ours_smaller_at_equal_or_better_accuracy"]:
        return "yes"
    reasons = []
    if ours["ratio"] <= theirs["ratio"]:
        reasons.append("file not smaller")
    if ours["top1_after"] < theirs["top1_after"]:
        reasons.append(f"{100 * (ours['top1_after'] - theirs['top1_after']):+.2f} pp top-1")
        if "paired_test" in row and row["paired_test"]["p_value"] >= SIGNIFICANCE:
            reasons.append("not significant")
    return "no (" + ", ".join(reasons) + ")"


def agreement(row: dict[str, Any]) -> str:
    ours, theirs = row["ours"].get("agreement"), row["coremltools"].get("agreement")
    return "-" if ours is None or theirs is None else f"{pct(ours)} / {pct(theirs)}"


def paired(row: dict[str, Any]) -> str:
    test = row.get("paired_test")
    if test is None:
        return "-"
    return f"{test['only_ours_right']} / {test['only_theirs_right']}, p={test['p_value']:.2f}"


def recipes_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| model | recipe | ratio | weights_ratio | file bytes | top-1 before % | top-1 after % | drop pp | compress s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['recipe']} | {r['ratio']:.2f}x | {r['weights_ratio']:.2f}x | "
            f"{r['file_bytes']:,} | {pct(r['top1_before'])} | {pct(r['top1_after'])} | {r['drop_pp']:.2f} | "
            f"{r['compress_seconds']:.1f} |"
        )
    return lines


def sweep_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| model | bits | granularity | ours ratio | ours top-1 % | ours plain k-means top-1 % | coremltools ratio | "
        "coremltools top-1 % | paired: only ours right / only theirs right | agreement with uncompressed: ours / "
        "coremltools % | ours s | coremltools s | ours smaller at equal-or-better accuracy? |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|---|---:|---:|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["model"], r["per_channel"], r["bits"])):
        ours, theirs = r["ours"], r["coremltools"]
        plain = r.get("ours_plain", ours)
        lines.append(
            f"| {r['model']} | {r['bits']} | {granularity(r['per_channel'])} | {ours['ratio']:.2f}x | "
            f"{pct(ours['top1_after'])} | {pct(plain['top1_after'])} | {theirs['ratio']:.2f}x | "
            f"{pct(theirs['top1_after'])} | {paired(r)} | {agreement(r)} | "
            f"{ours['compress_seconds']:.1f} | {theirs['compress_seconds']:.1f} | {verdict(r)} |"
        )
    return lines


def finding_lines(sweep_rows: list[dict[str, Any]]) -> list[str]:
    """What the sweep shows against coremltools, as plain statements (no rows: nothing to say)."""
    if not sweep_rows:
        return []
    losses = [
        f"{r['model']} {r['bits']}-bit {granularity(r['per_channel'])}"
        for r in sweep_rows
        if not r["ours_smaller_at_equal_or_better_accuracy"]
    ]
    lines = [
        f"- ours is smaller at equal-or-better accuracy than coremltools at {len(sweep_rows) - len(losses)} of "
        f"{len(sweep_rows)} swept settings" + (f" (not at: {'; '.join(losses)})" if losses else "")
    ]
    worse = [
        f"{r['model']} {r['bits']}-bit {granularity(r['per_channel'])}"
        for r in sweep_rows
        if "paired_test" in r
        and r["ours"]["top1_after"] < r["coremltools"]["top1_after"]
        and r["paired_test"]["p_value"] < SIGNIFICANCE
    ]
    lines.append(
        f"- settings where coremltools is significantly more accurate (McNemar p < {SIGNIFICANCE}): "
        + (", ".join(worse) if worse else "none")
    )
    return lines


def markdown(result: dict[str, Any]) -> str:
    meta = result["meta"]
    limit = f"a deterministic subset of {meta['limit']} samples" if meta["limit"] else "the full held-out split"
    lines = [
        "# One-shot compression benchmark",
        "",
        f"Evaluated on {limit} (LeNet-5: MNIST test; ResNet-20: CIFAR-10 JPEG test; EfficientNet-Lite0: "
        "Imagenette val, 1000-way). Ours: the loaded .nsk file, size on disk. "
        f"Times: median of {meta['repeats_note']}; machine: {meta['machine']}, load average at start "
        f"{meta['loadavg_start']}, at end {meta.get('loadavg_end')} (shared machine: times are noisy).",
        "",
        "## Shipped recipes",
        "",
        f"ratio = fp32 bytes of all parameters and buffers / file bytes; {WEIGHTS_RATIO_LABEL}.",
        "",
        *recipes_table(result["recipes"]),
        "",
    ]
    if result["sweep"]:
        lines += [
            "## Palette bit-width sweep: ours vs coremltools",
            "",
            f"Ours: one `palette` step (optimal 1-D k-means, fp16 codebook, rANS-coded indices), real file, "
            f"with `weighting: {meta.get('weighting', 'none')}` and `compensate: {str(meta.get('compensate', False)).lower()}` "
            "(weighting, netshrink/calibration/importance.py: the k-means counts each weight by the squared scale of the BatchNorm "
            "after its layer times the variance of the input it multiplies; compensate, netshrink/calibration/error_feedback.py: "
            "layer by layer in forward order, the weights are assigned to those shared values with GPTQ-style error feedback under the "
            "second moment of the layer's input patches, the values refit for the layer's output, and the mean output shift cancelled in "
            "the bias or BatchNorm; statistics from 512 TRAINING images, never the test split); 'ours plain k-means' is "
            "the same step with plain k-means and no data (`weighting: none`, `compensate: false`). "
            f"coremltools {meta['coremltools']}: PostTrainingPalettizer on the same layers, defaults otherwise; "
            f"{peer.SIZE_CONVENTION} Its lookup tables are rounded to fp16 before scoring.",
            "Paired: McNemar's exact test on the same held-out images (how many only ours / only coremltools "
            f"classify right; p < {SIGNIFICANCE} would mean a real difference). Agreement: the share of held-out images on "
            "which the compressed model predicts what the uncompressed model predicts (fidelity to the original).",
            f"Bits swept: {meta['bits_for']}.",
            "",
            *sweep_table(result["sweep"]),
            "",
        ]
    findings = finding_lines(result["sweep"])
    if findings:
        lines += ["## Findings", "", *findings, ""]
    return "\n".join(lines)


# --- main -------------------------------------------------------------------------------------------


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated zoo models")
    parser.add_argument("--lenet5-ckpt", help="LeNet-5 checkpoint from `netshrink train lenet5 --dataset mnist -o X`")
    parser.add_argument(
        "--train-lenet5",
        action="store_true",
        help="without --lenet5-ckpt, train LeNet-5 here (default settings; several minutes)",
    )
    parser.add_argument("--data-dir", help="data root (default: $NETSHRINK_DATA)")
    parser.add_argument("--limit", type=int, help="score a deterministic subset of N held-out samples")
    parser.add_argument("--bits", type=int_list, default=[2, 3, 4, 5, 6], help="sweep bit widths (default 2,3,4,5,6)")
    parser.add_argument(
        "--efficientnet-bits",
        type=int_list,
        help="sweep bit widths for efficientnet_lite0 (default: --bits); its per-channel k-means "
        "takes minutes per setting on 2 cores",
    )
    parser.add_argument("--no-sweep", action="store_true", help="run the shipped recipes only")
    parser.add_argument(
        "--weighting",
        choices=("none", "norm", "activation"),
        default="activation",
        help="palette weighting of our sweep rows (default activation; plain k-means is also run)",
    )
    parser.add_argument(
        "--compensate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="palette compensate (error feedback) in our sweep rows (default on)",
    )
    parser.add_argument(
        "--repeats", type=int, help="timed runs per compression (default 3 small models, 1 efficientnet)"
    )
    parser.add_argument("--out", default="benchmarks/results/oneshot.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("netshrink.evaluate", "netshrink.zoo", "netshrink.api"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = parse_args(argv)
    started, loadavg_start = time.perf_counter(), os.getloadavg()
    names = [n for n in args.models.split(",") if n]
    subjects = [s for s in (load_subject(n, args) for n in names) if s is not None]
    bits_for = {n: (args.efficientnet_bits or args.bits) if n == "efficientnet_lite0" else args.bits for n in names}
    with tempfile.TemporaryDirectory(prefix="oneshot-") as tmp:
        recipe_rows = run_recipes(subjects, Path(tmp))
        if args.weighting == "activation" or args.compensate:
            for subject in subjects:
                subject.train = load_dataset(subject.dataset, "train", args.data_dir)
        sweep_rows = [] if args.no_sweep else run_sweep(subjects, bits_for, Path(tmp), args.weighting, args.compensate)
    meta = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "limit": args.limit,
        "weighting": args.weighting,
        "compensate": args.compensate,
        "bits_for": {n: b for n, b in bits_for.items() if n in SWEEP_MODELS},
        "repeats": {s.name: s.repeats for s in subjects},
        "repeats_note": ", ".join(f"{s.repeats} run(s) for {s.name}" for s in subjects),
        "torch": torch.__version__,
        "netshrink": getattr(netshrink, "__version__", "?"),
        "coremltools": peer.peer_version(),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}",
        "loadavg_start": [round(x, 1) for x in loadavg_start],
        "loadavg_end": [round(x, 1) for x in os.getloadavg()],
        "wall_seconds": time.perf_counter() - started,
        "size_convention_coremltools": peer.SIZE_CONVENTION,
        "ratio_definition": "4 bytes x every parameter and buffer element of the uncompressed model / size",
        "weights_ratio_label": WEIGHTS_RATIO_LABEL,
        "skipped": [n for n in names if n not in {s.name for s in subjects}],
    }
    result = {"meta": meta, "recipes": recipe_rows, "sweep": sweep_rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    out.with_suffix(".md").write_text(table)
    print(table)
    log.info("wrote %s and %s in %.0f s", out, out.with_suffix(".md"), meta["wall_seconds"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
