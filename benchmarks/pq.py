"""Output-aware PQ benchmark (Stock et al. 2020): the pq recipes, the output-aware vs weight-only
ablation at the same size (before and after fine-tuning), and the speed of the loaded files.

Each row is a real file: compress the baseline with the recipe (calibration and fine-tuning on the
TRAIN split), save the .nsk, load it back (the zoo rebuilds the module) and score the LOADED model
on the held-out split (CIFAR-10 JPEG test; Imagenette val, 1000-way). ratio = fp32 bytes of every
parameter and buffer / file bytes on disk; weights_ratio is the papers' convention (labelled).
"before fine-tuning" rows are the same recipe with epochs = stage_epochs = 0 (codebooks only).

    NETSHRINK_DATA=/work/shared/data python benchmarks/pq.py \
        --resnet20 /work/runs/resnet20-ft20.ckpt.nsk [--models resnet20,efficientnet_lite0] \
        [--variants output,weights,output-raw,weights-raw] [--quick] [--out benchmarks/results/pq.json]

Baselines: ResNet-20 = the pretrained net fine-tuned on the JPEG train split for as many epochs as
resnet20-pq retrains (`netshrink train resnet20 --dataset cifar10 --from-pretrained --epochs 20`), so
the JPEG shift is never counted as compression gain; EfficientNet-Lite0 = the zoo's ImageNet weights.
Speed: dense baseline vs the loaded .nsk (decoded once at load), same batch, median of --repeats.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import netshrink  # noqa: E402
from netshrink import zoo  # noqa: E402
from netshrink.data import load_dataset  # noqa: E402
from netshrink.evaluate import evaluate  # noqa: E402
from netshrink.identity import ModelIdentity  # noqa: E402
from netshrink.recipe import load_recipe, parse_recipe  # noqa: E402
from netshrink.report.sizes import WEIGHTS_RATIO_LABEL  # noqa: E402
from netshrink.step import Recipe  # noqa: E402

log = logging.getLogger("pq")

#: What Stock et al. 2020 report (abstract of the ICLR 2020 paper), for reference only: other
#: models and data (ImageNet, COCO), never used in any computation.
PAPER = [
    {"model": "ResNet-50 (semi-supervised) / ImageNet", "reported": "5 MB, 20x compression, 76.1 % top-1"},
    {"model": "Mask R-CNN / COCO", "reported": "26x compression"},
]


@dataclass(frozen=True)
class Model:
    name: str
    dataset: str
    recipe: str
    ablation: str
    note: str
    batch: int  # inference-speed batch


MODELS = {
    "resnet20": Model(
        "resnet20",
        "cifar10",
        "resnet20-pq",
        "resnet20-pq-weights",
        "vs the shipped weights fine-tuned 20 epochs (the same budget)",
        256,
    ),
    "efficientnet_lite0": Model(
        "efficientnet_lite0",
        "imagenette",
        "efficientnet-lite0-pq",
        "efficientnet-lite0-pq-weights",
        "1000-way top-1 on the 10 Imagenette classes",
        32,
    ),
}


def variant(name: str, finetune: bool, quick: bool) -> Recipe:
    """The packaged recipe, without fine-tuning if asked, shrunk for --quick (a smoke test)."""
    spec = load_recipe(name).to_dict()
    for step in spec["steps"]:
        ((kind, settings),) = step.items()
        if kind != "pq":
            continue
        if not finetune:
            settings.update(epochs=0.0, stage_epochs=0.0)
        if quick:
            settings.update(calibration=64, epochs=min(settings["epochs"], 0.02), stage_epochs=0.0, kmeans_iters=3)
    suffix = ("" if finetune else " [no fine-tuning]") + (" [quick]" if quick else "")
    return parse_recipe({**spec, "name": name + suffix})


def baseline(model: Model, args: argparse.Namespace) -> tuple[torch.nn.Module, dict[str, Any], str]:
    path = getattr(args, model.name, None)
    if path:
        identity = netshrink.api.read_identity(path).to_json()
        return netshrink.load(path), identity, str(path)
    module = zoo.get_model(model.name, pretrained=True)
    return module, ModelIdentity.of(module, model.name, model.dataset).to_json(), f"zoo {model.name}"


def run_row(
    model: Model,
    recipe: Recipe,
    base: torch.nn.Module,
    identity: dict[str, Any],
    data: dict[str, Any],
    limit: int | None,
    workdir: Path,
) -> dict[str, Any]:
    started = time.perf_counter()
    compressed = netshrink.compress(
        base,
        recipe,
        data["train"],
        name=model.name,
        dataset=model.dataset,
        identity={**identity, "name": model.name, "dataset": model.dataset},
    )
    path = workdir / f"{recipe.name.replace(' ', '_')}.nsk"
    report = compressed.save(path)
    seconds = time.perf_counter() - started
    after = evaluate(netshrink.load(path), data["test"], limit=limit, progress=False).value
    row = {
        "model": model.name,
        "recipe": recipe.name,
        "file": str(path),
        "file_bytes": report.file_bytes,
        "original_bytes": report.original_bytes,
        "ratio": report.ratio,
        "weights_ratio": report.weights_ratio,
        "top1_after": after,
        "seconds": seconds,
        "recipe_spec": recipe.to_dict(),
    }
    log.info(
        "%s %s: %.1fx (weights %.1fx), top-1 %.2f %%, %.0f s",
        model.name,
        recipe.name,
        report.ratio,
        report.weights_ratio,
        100 * after,
        seconds,
    )
    return row


def inference_speed(
    dense: torch.nn.Module, path: str, shape: tuple[int, ...], batch: int, repeats: int
) -> dict[str, Any]:
    """Median ms per batch of the dense model and of the loaded .nsk (and the one-off load time)."""
    started = time.perf_counter()
    loaded = netshrink.load(path)
    load_seconds = time.perf_counter() - started
    x = torch.rand(batch, *shape)
    if x.dim() == 4:  # both in the layout `evaluate` runs image models in (channels-last)
        x = x.contiguous(memory_format=torch.channels_last)
        dense, loaded = dense.to(memory_format=torch.channels_last), loaded.to(memory_format=torch.channels_last)
    timings = {}
    for label, module in (("dense", dense.eval()), ("loaded", loaded)):
        with torch.inference_mode():
            module(x)  # warm-up
            runs = []
            for _ in range(repeats):
                start = time.perf_counter()
                module(x)
                runs.append(1000 * (time.perf_counter() - start))
        timings[label] = statistics.median(runs)
    return {
        "batch": batch,
        "dense_ms": timings["dense"],
        "loaded_ms": timings["loaded"],
        "slowdown": timings["loaded"] / timings["dense"],
        "load_seconds": load_seconds,
        "repeats": repeats,
    }


def run_model(
    model: Model, args: argparse.Namespace, workdir: Path, previous: list[dict[str, Any]], publish: Any
) -> dict[str, Any]:
    base, identity, source = baseline(model, args)
    limit = 500 if args.quick else None
    data = {"train": load_dataset(model.dataset, "train"), "test": load_dataset(model.dataset, "test")}
    # The baseline's score is deterministic: reuse it from an earlier run on the same baseline and split.
    known = [
        r["top1_before"]
        for r in previous
        if r["model"] == model.name
        and r["baseline"] == source
        and not r["recipe"].endswith("[quick]")
        and not args.quick
    ]
    before = known[0] if known else evaluate(base, data["test"], limit=limit, progress=False).value
    every = {
        "output": (model.recipe, True, None),
        "weights": (model.ablation, True, model.recipe),
        "output-raw": (model.recipe, False, model.recipe),
        "weights-raw": (model.ablation, False, model.recipe),
    }
    plans = [every[v] for v in args.variants.split(",")]
    rows = []
    for name, finetune, ablation_of in plans:
        fresh = base if not rows else baseline(model, args)[0]
        row = run_row(model, variant(name, finetune, args.quick), fresh, identity, data, limit, workdir)
        rows.append(
            {
                **row,
                "objective": "weights" if "weights" in name else "output",
                "fine_tuned": finetune,
                "ablation_of": ablation_of,
                "baseline": source,
                "top1_before": before,
                "drop_pp": 100 * (before - row["top1_after"]),
                "note": model.note if not ablation_of else "",
            }
        )
        publish({"rows": rows, "speed": {}})  # a long run keeps every row it finished
    if rows[0]["ablation_of"]:
        return {"rows": rows, "speed": {}}
    speed = inference_speed(base, rows[0]["file"], zoo.model_info(model.name).input_shape, model.batch, args.repeats)
    return {"rows": rows, "speed": {model.name: speed}}


def markdown(result: dict[str, Any]) -> str:
    meta = result["meta"]
    lines = [
        "# Output-aware product quantization (Stock et al. 2020)",
        "",
        f"Loaded .nsk files scored on the full held-out split (CIFAR-10 JPEG test; Imagenette val, 1000-way top-1). "
        f"ratio = fp32 bytes of all parameters and buffers / file bytes on disk; {WEIGHTS_RATIO_LABEL}. "
        f"Machine: {meta['machine']}; load average at start {meta['loadavg_start']}.",
        "",
        "| model | recipe | objective | fine-tuned | ratio | weights_ratio | file bytes | top-1 before % | "
        "top-1 after % | drop pp | minutes | note |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['model']} | {r['recipe']} | {r['objective']} | {'yes' if r['fine_tuned'] else 'no'} | "
            f"{r['ratio']:.1f}x | {r['weights_ratio']:.1f}x | {r['file_bytes']:,} | {100 * r['top1_before']:.2f} | "
            f"{100 * r['top1_after']:.2f} | {r['drop_pp']:.2f} | {r['seconds'] / 60:.1f} | {r['note']} |"
        )
    lines += [
        "",
        "## Inference speed of the loaded file (decoded once at load) vs the dense model",
        "",
        "| model | batch | dense ms | loaded .nsk ms | loaded / dense | load s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in result["speed"].items():
        lines.append(
            f"| {name} | {s['batch']} | {s['dense_ms']:.1f} | {s['loaded_ms']:.1f} | {s['slowdown']:.2f} | "
            f"{s['load_seconds']:.2f} |"
        )
    lines += [
        "",
        "## The paper's reported numbers (Stock et al. 2020, ICLR; other models and data, for reference only)",
        "",
        "| model / data | reported by the paper |",
        "|---|---|",
    ]
    lines += [f"| {p['model']} | {p['reported']} |" for p in PAPER]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--resnet20", type=Path, help="ResNet-20 baseline checkpoint (.nsk), fine-tuned as long as the recipe"
    )
    parser.add_argument(
        "--efficientnet_lite0", type=Path, help="EfficientNet-Lite0 checkpoint (default: the zoo weights)"
    )
    parser.add_argument("--models", default="resnet20,efficientnet_lite0")
    parser.add_argument(
        "--variants",
        default="output,weights,output-raw,weights-raw",
        help="rows to run: the recipe (output), its weight-only ablation (weights), and both "
        "without fine-tuning (-raw); the speed is measured on the first when it is 'output'",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: tiny calibration and fine-tuning, 500 eval samples"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/pq.json")
    args = parser.parse_args(argv)
    out, result = Path(args.out), {"rows": [], "speed": {}}
    if out.exists():  # keep the rows this run does not redo: models and variants can be run separately
        previous = json.loads(out.read_text())
        result = {"rows": previous.get("rows", []), "speed": previous.get("speed", {})}
    started, loadavg = time.perf_counter(), [round(x, 1) for x in os.getloadavg()]

    def publish(part: dict[str, Any]) -> None:
        redone = {(r["model"], r["recipe"]) for r in part["rows"]}
        result["rows"] = [r for r in result["rows"] if (r["model"], r["recipe"]) not in redone] + part["rows"]
        result["speed"].update(part["speed"])
        result["meta"] = {
            "command": " ".join(sys.argv),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}",
            "loadavg_start": loadavg,
            "torch": torch.__version__,
            "wall_seconds": time.perf_counter() - started,
            "weights_ratio_label": WEIGHTS_RATIO_LABEL,
            "paper": PAPER,
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        out.with_suffix(".md").write_text(markdown(result))
        out.with_suffix(".png").write_bytes(plot(result))

    with tempfile.TemporaryDirectory(prefix="pq-") as tmp:
        for name in args.models.split(","):
            publish(run_model(MODELS[name], args, Path(tmp), result["rows"], publish))
    print(markdown(result))
    return 0


def plot(result: dict[str, Any]) -> bytes:
    """PNG: per model, top-1 of output-aware vs weight-only PQ before and after fine-tuning, with the
    uncompressed baseline as a line (the ablation at a glance)."""
    from matplotlib.figure import Figure

    models = list(dict.fromkeys(row["model"] for row in result["rows"]))
    fig = Figure(figsize=(3.2 * max(1, len(models)), 3.0), layout="constrained")
    for index, model in enumerate(models):
        ax = fig.add_subplot(1, len(models), index + 1)
        rows = [row for row in result["rows"] if row["model"] == model]
        for offset, objective, colour in ((-0.2, "output", "#4c72b0"), (0.2, "weights", "#dd8452")):
            for x, tuned in ((0, False), (1, True)):
                row = next((r for r in rows if r["objective"] == objective and r["fine_tuned"] == tuned), None)
                if row:
                    ax.bar(
                        x + offset,
                        100 * row["top1_after"],
                        0.38,
                        color=colour,
                        label=f"{objective}-aware"
                        if objective == "output" and x == 0
                        else ("weight-only" if objective == "weights" and x == 0 else None),
                    )
        if rows:
            ax.axhline(100 * rows[0]["top1_before"], color="black", linestyle="--", linewidth=1, label="uncompressed")
            ax.set_title(f"{model}, {min(r['ratio'] for r in rows):.1f}x", fontsize=9)
        ax.set_xticks([0, 1], ["before fine-tuning", "after"], fontsize=8)
        ax.set_ylabel("top-1 %", fontsize=8)
        ax.legend(fontsize=7, loc="lower right")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


if __name__ == "__main__":
    raise SystemExit(main())
