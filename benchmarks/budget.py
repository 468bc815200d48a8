"""Automatic per-layer budget vs a uniform setting of the same file size, one-shot and fine-tuned.

For each model and each uniform bit width b: the uniform file is `palette: {bits: b, per_channel:
auto}` + `cast: fp16` (what `oneshot-palette5` does at 5 bits); its whole-file ratio R is the
target of `netshrink.compress_to_target` (per-layer bits and sparsity chosen from the
model's sensitivity, measured on a held-out slice of the TRAINING split), so the automatic file
is never larger than the uniform one. Both files are saved, loaded back and scored on the full
held-out split (CIFAR-10 test / Imagenette val, 1000-way). Then both get the same short
fine-tune: the training loop with shared values tied (trained quantization, Han et al. 2016 sec.
3.3: `SharedValueHook`) and pruned weights held at zero (`MaskHook`), after which every tensor is
re-encoded with its codec, saved, loaded and scored again. A row is written as soon as it is done.

    NETSHRINK_DATA=/work/shared/data flock /tmp/cpu.lock python benchmarks/budget.py \
        --model /work/runs/resnet20-ft4.ckpt.nsk --bits 3,4 --samples 512 --finetune-epochs 0.25
    ... --model efficientnet_lite0 --bits 4,5 --samples 128 --sens-sparsity 0.3,0.5 --finetune-epochs 0.05
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netshrink import api  # noqa: E402
from netshrink.api.models import Source, resolve  # noqa: E402
from netshrink.budget.allocation import LayerOption, budget_recipe, original_bytes_of, predicted_damage, uniform_choice  # noqa: E402
from netshrink.budget.sensitivity import SensitivityConfig, sensitivity  # noqa: E402
from netshrink.data import DEFAULT_AUGMENTATION, load_dataset  # noqa: E402
from netshrink.evaluate import evaluate  # noqa: E402
from netshrink.training.loop import TrainConfig, fit  # noqa: E402
from netshrink.training.retraining import MaskHook, SharedValueHook, nonzero_masks, value_labels  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def finetune(compressed: api.CompressedModel, train, dataset: str, epochs: float, lr: float) -> None:
    """Trained quantization of whatever the one-shot file holds: values tied, zeros held; then re-encode."""
    model, plan = compressed.model, compressed.plan
    weights = [n for n in plan.entries if n.endswith(".weight") and plan.codec_for(n).name in ("palette", "sparse")]
    state = model.state_dict()
    hooks = [
        SharedValueHook({n: value_labels(state[n]) for n in weights}),
        MaskHook(nonzero_masks(model, [n for n in weights if plan.codec_for(n).name == "sparse"])),
    ]
    config = TrainConfig(
        epochs=epochs, batch_size=64, lr=lr, weight_decay=1e-4, augment=DEFAULT_AUGMENTATION.get(dataset)
    )
    fit(model, train, config, hooks, desc="fine-tune")
    for name, entry in list(plan.entries.items()):  # the file holds exactly what the model is scored with
        plan.assign(model, name, entry.codec)


def score(
    compressed: api.CompressedModel, resolved: Source, dataset: str, data_dir: str | None, limit: int | None
) -> tuple[float, int, float]:
    """(top-1 of the loaded file on the held-out split, file bytes on disk, ratio)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = compressed.save(Path(tmp) / "m.nsk")
        zoo_model = resolved.identity is not None and resolved.identity.name
        loaded = api.load(report.file, model=None) if zoo_model else api.load(report.file, model=resolved.module)
        top1 = evaluate(loaded, dataset, data_dir, limit=limit).value
    return top1, report.file_bytes, report.ratio


def bits_summary(choice: dict[str, LayerOption]) -> str:
    """e.g. '2b x3, 3b x10, 4b x7; pruned 0.5 x2'."""
    counts: dict[int, int] = {}
    pruned: dict[float, int] = {}
    for option in choice.values():
        counts[option.bits] = counts.get(option.bits, 0) + 1
        if option.sparsity:
            pruned[option.sparsity] = pruned.get(option.sparsity, 0) + 1
    text = ", ".join(f"{b}b x{n}" for b, n in sorted(counts.items()))
    return text + ("; pruned " + ", ".join(f"{s:g} x{n}" for s, n in sorted(pruned.items())) if pruned else "")


def run_model(args: argparse.Namespace, out: Path, result: dict[str, Any]) -> None:
    resolved = resolve(args.model, dataset=args.dataset, data_dir=args.data_dir)
    dataset, identity = resolved.require_dataset(), resolved.identity
    label = identity.name or Path(args.model).stem
    result["rows"] = [r for r in result["rows"] if r["model"] != label]  # a re-run replaces this model's rows
    train = load_dataset(dataset, "train", args.data_dir)
    config = SensitivityConfig(bits=tuple(args.sens_bits), sparsity=tuple(args.sens_sparsity), samples=args.samples)
    started = time.perf_counter()
    sens = sensitivity(
        resolved.module,
        train,
        config,
        dataset=dataset,
        identity=identity,
        path=RESULTS / f"budget-sensitivity-{label}.json",
    )
    base = evaluate(resolved.module, dataset, args.data_dir, limit=args.limit).value
    result["models"][label] = {
        "model": args.model,
        "dataset": dataset,
        "top1_original": base,
        "sensitivity_seconds": time.perf_counter() - started,
        "sensitivity_cached": sens.cached,
        "calibration_samples": sens.samples,
        "settings": sens.settings,
    }
    original = original_bytes_of(resolved.module, identity)
    for bits in args.bits:
        choice = uniform_choice(sens, bits)
        uniform = api.compress(
            resolved.module, budget_recipe(choice, f"uniform-{bits}b", "uniform palette"), identity=identity
        )
        ratio = original / uniform.nbytes()
        auto = api.compress_to_target(resolved.module, ratio=ratio, sensitivity=sens, identity=identity)
        pair = {"uniform": (uniform, choice), "auto": (auto, auto.budget.choice)}
        for kind, (compressed, chosen) in pair.items():
            record(out, result, label, bits, kind, "one-shot", compressed, chosen, resolved, dataset, args, base)
        if args.finetune_epochs > 0:
            for kind, (compressed, chosen) in pair.items():
                finetune(compressed, train, dataset, args.finetune_epochs, args.lr)
                record(
                    out,
                    result,
                    label,
                    bits,
                    kind,
                    f"fine-tuned {args.finetune_epochs:g} ep",
                    compressed,
                    chosen,
                    resolved,
                    dataset,
                    args,
                    base,
                )


def record(
    out: Path,
    result: dict[str, Any],
    label: str,
    bits: int,
    kind: str,
    stage: str,
    compressed: api.CompressedModel,
    choice: dict[str, LayerOption],
    resolved: Source,
    dataset: str,
    args: argparse.Namespace,
    base: float,
) -> None:
    top1, nbytes, ratio = score(compressed, resolved, dataset, args.data_dir, args.limit)
    row = {
        "model": label,
        "size_of": f"uniform {bits}-bit",
        "allocation": kind,
        "stage": stage,
        "ratio": ratio,
        "file_bytes": nbytes,
        "top1": top1,
        "drop_pp": 100 * (base - top1),
        "predicted_kl": predicted_damage(choice),
        "layers": bits_summary(choice),
        "per_layer": {n: [o.bits, o.sparsity] for n, o in choice.items()},
    }
    result["rows"].append(row)
    write(out, result)
    print(f"{label} {row['size_of']} {kind:<7} {stage:<16} ratio {ratio:6.2f}x top1 {100 * top1:6.2f} %", flush=True)


def write(out: Path, result: dict[str, Any]) -> None:
    out.write_text(json.dumps(result, indent=1))
    out.with_suffix(".md").write_text(markdown(result))


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Automatic per-layer budget vs uniform palette of the same file size",
        "",
        result["note"],
        "",
        f"Machine: {result['machine']}.",
        "",
        "| model | file size of | allocation | stage | ratio | file bytes | top-1 % | drop pp | pred. KL | layers |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['model']} | {r['size_of']} | {r['allocation']} | {r['stage']} | {r['ratio']:.2f}x | "
            f"{r['file_bytes']:,} | {100 * r['top1']:.2f} | {r['drop_pp']:.2f} | {r['predicted_kl']:.4f} | "
            f"{r['layers']} |"
        )
    for name, m in result["models"].items():
        lines.append(
            f"\n{name}: original top-1 {100 * m['top1_original']:.2f} % on {m['dataset']}; sensitivity on "
            f"{m['calibration_samples']} held-out training samples, {m['settings']['bits']} bits, "
            f"{m['settings']['sparsity']} sparsity, {m['sensitivity_seconds']:.0f} s"
            + (" (cached)" if m["sensitivity_cached"] else "")
        )
    return "\n".join(lines) + "\n"


def numbers(kind):
    return lambda text: [kind(v) for v in text.split(",") if v]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="zoo name or .nsk checkpoint")
    parser.add_argument("--dataset")
    parser.add_argument("--data-dir", default=os.environ.get("NETSHRINK_DATA"))
    parser.add_argument("--bits", type=numbers(int), default=[3, 4], help="uniform bit widths to match in size")
    parser.add_argument("--sens-bits", type=numbers(int), default=[2, 3, 4, 5, 6])
    parser.add_argument("--sens-sparsity", type=numbers(float), default=[0.3, 0.5, 0.7, 0.9])
    parser.add_argument("--samples", type=int, default=512, help="calibration samples (held-out training slice)")
    parser.add_argument("--finetune-epochs", type=float, default=0.25)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--limit", type=int, help="score on N held-out samples only (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS / "budget.json")
    args = parser.parse_args(argv)
    result = json.loads(args.out.read_text()) if args.out.exists() else {"rows": [], "models": {}}
    result["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}"
    result["note"] = (
        __doc__.split("\n\n")[1].replace("\n", " ") + " pred. KL = summed single-layer KL the budget "
        "minimised (nats; of the one-shot choice, also on its fine-tuned rows). Sizes: ratio = fp32 bytes of every parameter and buffer / file bytes on disk."
    )
    run_model(args, args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
