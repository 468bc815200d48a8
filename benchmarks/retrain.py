"""Retraining benchmark: every retraining recipe from a baseline checkpoint, beside the published
numbers, plus the ablations (Deep k-Means regulariser on/off; ADMM vs iterative magnitude pruning).

Each row is a real file: compress with the recipe (training data = the train split), save the .nsk,
load it back (the zoo rebuilds the module from the header) and score the LOADED model on the
held-out test split. ratio = fp32 bytes of every parameter and buffer / file bytes on disk;
weights_ratio is the papers' convention (conv/linear weights only), labelled as such.

    NETSHRINK_DATA=/work/shared/data python benchmarks/retrain.py \
        --lenet5 runs/lenet5.nsk --lenet300 runs/lenet300.nsk [--resnet20 runs/resnet20-ft.nsk] \
        [--only lenet5-dc,lenet5-admm] [--ablations] [--out benchmarks/results/retrain.json]

Baselines: `netshrink train lenet5 --dataset mnist -o runs/lenet5.nsk` (same for lenet300); ResNet-20:
`netshrink train resnet20 --dataset cifar10 --from-pretrained --epochs E -o runs/resnet20-ft.nsk`
with E the epochs the ResNet recipes retrain, so the JPEG shift is never counted as compression gain.
Rows whose baseline is not given are skipped (and listed as skipped).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import netshrink  # noqa: E402
from netshrink.data import load_dataset  # noqa: E402
from netshrink.evaluate import evaluate  # noqa: E402
from netshrink.flops import flops  # noqa: E402
from netshrink.recipe import load_recipe, parse_recipe  # noqa: E402
from netshrink.report.sizes import WEIGHTS_RATIO_LABEL  # noqa: E402
from netshrink.step import Recipe  # noqa: E402
from netshrink.zoo import model_info  # noqa: E402

log = logging.getLogger("retrain")


@dataclass(frozen=True)
class Job:
    """One recipe on one baseline, with what the paper reports for it (never used in any computation)."""

    model: str
    recipe: str
    published: str = ""
    note: str = ""
    ablation_of: str | None = None
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # step name -> settings to replace

    @property
    def name(self) -> str:
        return self.recipe if not self.overrides else f"{self.recipe} [{self.label}]"

    @property
    def label(self) -> str:
        return ", ".join(f"{s}: {', '.join(f'{k}={v}' for k, v in o.items())}" for s, o in self.overrides.items())


JOBS = [
    Job("lenet300", "lenet300-dc", "Deep Compression: 40x at 1.58 % error"),
    Job("lenet5", "lenet5-dc", "Deep Compression: 39x at 0.74 % error"),
    Job("lenet5", "lenet5-admm", "Ye et al.: 1,910x weights only, 623x with indices, 0.74 % error"),
    Job(
        "lenet5",
        "lenet5-deepkmeans",
        "Wu et al. report LeNet-5 only for the energy metrics",
        "the ablations below: plain k-means + fine-tune at the same size",
    ),
    Job("lenet5", "lenet5-compound"),
    Job("resnet20", "resnet20-deepkmeans", "", "vs the shipped weights fine-tuned 4 epochs (the same budget)"),
    Job("resnet20", "resnet20-admm", "", "vs the shipped weights fine-tuned 4 epochs (the same budget)"),
    Job("resnet20", "resnet20-compound", "", "vs the shipped weights fine-tuned 20 epochs (the same budget)"),
]
ABLATIONS = [
    Job("lenet5", "lenet5-deepkmeans", ablation_of="lenet5-deepkmeans", overrides={"deep_kmeans": {"lam": 0.0}}),
    Job(
        "lenet5",
        "lenet5-deepkmeans",
        ablation_of="lenet5-deepkmeans",
        overrides={"deep_kmeans": {"finetune_epochs": 0.0}},
    ),
    Job(
        "lenet5",
        "lenet5-deepkmeans",
        ablation_of="lenet5-deepkmeans",
        overrides={"deep_kmeans": {"lam": 0.0, "finetune_epochs": 0.0}},
    ),
    Job("resnet20", "resnet20-deepkmeans", ablation_of="resnet20-deepkmeans", overrides={"deep_kmeans": {"lam": 0.0}}),
    Job("lenet5", "lenet5-iterative-like-admm", ablation_of="lenet5-admm"),
]


def recipe_for(job: Job) -> Recipe:
    """The packaged recipe with `job.overrides` applied to its steps (the ablations)."""
    if job.recipe == "lenet5-iterative-like-admm":
        return iterative_like_admm()
    recipe = load_recipe(job.recipe)
    spec = recipe.to_dict()
    for step in spec["steps"]:
        ((kind, settings),) = step.items()
        settings.update(job.overrides.get(kind, {}))
    return parse_recipe({**spec, "name": job.name})


def iterative_like_admm() -> Recipe:
    """Iterative magnitude pruning to exactly the per-layer sparsities of lenet5-admm, then the same
    quantization, for the same total epochs: ADMM vs magnitude pruning at equal sparsity."""
    admm = load_recipe("lenet5-admm").to_dict()
    prune = next(s["admm_prune"] for s in admm["steps"] if "admm_prune" in s)
    quant = next(s["admm_quantize"] for s in admm["steps"] if "admm_quantize" in s)
    prune_epochs = sum(float(prune.get(k, 0) or 0) for k in ("epochs", "retrain_epochs"))
    bits = {pattern: {"bits": o["bits"]} for pattern, o in quant.get("overrides", {}).items() if "bits" in o}
    steps = [
        {
            "iterative_prune": {
                "sparsity": prune["sparsity"],
                "overrides": prune.get("overrides", {}),
                "rounds": 4,
                "epochs": prune_epochs / 4,
                "lr": prune.get("lr", 0.01),
            }
        },
        {
            "trained_quantization": {
                "bits": quant["bits"],
                "overrides": bits,
                "epochs": sum(float(quant.get(k, 0) or 0) for k in ("epochs", "retrain_epochs")),
                "lr": 1e-4,
            }
        },
        {"cast": {"dtype": "fp16"}},
    ]
    return parse_recipe({"name": "lenet5-iterative-like-admm", "steps": steps})


def run_job(job: Job, baseline: Path, workdir: Path) -> dict[str, Any]:
    identity = netshrink.api.read_identity(baseline).to_json()
    dataset = identity.get("dataset") or {"resnet20": "cifar10"}.get(job.model, "mnist")
    model = netshrink.load(baseline)
    test, train = load_dataset(dataset, "test"), load_dataset(dataset, "train")
    before = evaluate(model, test, progress=False).value
    model_before = netshrink.load(baseline)  # compress() may change `model` in place
    recipe = recipe_for(job)
    started = time.perf_counter()
    compressed = netshrink.compress(
        model,
        recipe,
        train,
        name=job.model,
        dataset=dataset,
        identity={**identity, "name": job.model, "dataset": dataset},
    )
    path = workdir / f"{job.model}-{recipe.name.replace(' ', '_')}.nsk"
    report = compressed.save(path)
    seconds = time.perf_counter() - started
    loaded = netshrink.load(path)
    after = evaluate(loaded, test, progress=False).value
    input_shape = model_info(job.model).input_shape
    row = {
        "model": job.model,
        "recipe": recipe.name,
        "ablation_of": job.ablation_of,
        "baseline": str(baseline),
        "file_bytes": report.file_bytes,
        "original_bytes": report.original_bytes,
        "ratio": report.ratio,
        "weights_ratio": report.weights_ratio,
        "top1_before": before,
        "top1_after": after,
        "error_before": 1 - before,
        "error_after": 1 - after,
        "drop_pp": 100 * (before - after),
        "seconds": seconds,
        "macs_before": flops(model_before, input_shape),
        "macs_after": flops(loaded, input_shape),
        "published": job.published,
        "note": job.note,
        "recipe_spec": recipe.to_dict(),
        "tensors": report.to_json()["tensors"],
    }
    log.info(
        "%s %s: ratio %.1fx (weights %.1fx), error %.2f -> %.2f %%, %.0f s",
        job.model,
        recipe.name,
        row["ratio"],
        row["weights_ratio"],
        100 * row["error_before"],
        100 * row["error_after"],
        seconds,
    )
    return row


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| model | recipe | ratio | weights_ratio | file bytes | error before % | error after % | drop pp | "
        "fewer MACs | minutes | published | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['recipe']} | {r['ratio']:.1f}x | {r['weights_ratio']:.1f}x | {r['file_bytes']:,} | "
            f"{100 * r['error_before']:.2f} | {100 * r['error_after']:.2f} | {r['drop_pp']:.2f} | {_mac_ratio(r)} | "
            f"{r['seconds'] / 60:.1f} | {r['published']} | {r['note']} |"
        )
    return lines


def _mac_ratio(row: dict[str, Any]) -> str:
    """MACs of the baseline over MACs of the compressed model (rows written before this was recorded: '')"""
    if not row.get("macs_after"):
        return ""
    return f"{row['macs_before'] / row['macs_after']:.2f}x"


def markdown(result: dict[str, Any]) -> str:
    meta = result["meta"]
    main = [r for r in result["rows"] if not r["ablation_of"]]
    ablations = [r for r in result["rows"] if r["ablation_of"]]
    lines = [
        "# Retraining benchmark",
        "",
        f"Loaded .nsk files scored on the full held-out test split. ratio = fp32 bytes of all parameters and "
        f"buffers / file bytes on disk; {WEIGHTS_RATIO_LABEL}. Published numbers are the papers' own, on their "
        f"baselines, for reference only. Machine: {meta['machine']}; load average at start {meta['loadavg_start']}.",
        "",
        *table(main),
        "",
    ]
    if ablations:
        lines += [
            "## Ablations",
            "",
            "Each ablation row changes one thing in the recipe named in `ablation_of` "
            "(same bits, same retraining budget).",
            "",
            *table(ablations),
            "",
        ]
    if meta["skipped"]:
        lines += [f"Skipped (no baseline given): {', '.join(meta['skipped'])}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for model in ("lenet5", "lenet300", "resnet20"):
        parser.add_argument(f"--{model}", type=Path, help=f"{model} baseline checkpoint (.nsk from `netshrink train`)")
    parser.add_argument("--only", help="comma-separated recipe names to run (default: all with a baseline)")
    parser.add_argument("--ablations", action="store_true", help="also run the ablation rows")
    parser.add_argument("--out", default="benchmarks/results/retrain.json")
    args = parser.parse_args(argv)
    baselines = {m: getattr(args, m) for m in ("lenet5", "lenet300", "resnet20") if getattr(args, m)}
    only = set(args.only.split(",")) if args.only else None
    jobs = [
        j
        for j in JOBS + (ABLATIONS if args.ablations else [])
        if (only is None or j.recipe in only or (j.ablation_of or "") in only)
    ]
    runnable = [j for j in jobs if j.model in baselines]
    skipped = [j.name for j in jobs if j.model not in baselines]
    started, loadavg = time.perf_counter(), [round(x, 1) for x in os.getloadavg()]
    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="retrain-") as tmp:
        for job in runnable:  # results are written after every job: a long run keeps what it finished
            row = run_job(job, baselines[job.model], Path(tmp))
            meta = {
                "command": " ".join(sys.argv),
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}",
                "loadavg_start": loadavg,
                "wall_seconds": time.perf_counter() - started,
                "skipped": skipped,
                "torch": torch.__version__,
                "weights_ratio_label": WEIGHTS_RATIO_LABEL,
            }
            result = write_results(out, meta, row)
    print(markdown(result) if runnable else "nothing to run: give the baselines (see --help)")
    return 0


def write_results(out: Path, meta: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """Add (or replace) `row` in the JSON at `out`, keeping rows of recipes not rerun, and rewrite the table."""
    rows = json.loads(out.read_text()).get("rows", []) if out.exists() else []
    rows = [r for r in rows if (r["model"], r["recipe"]) != (row["model"], row["recipe"])] + [row]
    result = {"meta": meta, "rows": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    return result


if __name__ == "__main__":
    sys.exit(main())
