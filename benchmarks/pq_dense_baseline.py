"""The baseline a pq recipe's fine-tuning must be compared with: the UNCOMPRESSED network given the
recipe's exact fine-tuning (its epochs, batch, optimiser, learning rate, weight decay and
distillation from the frozen original, on the same training split, every parameter trained),
scored on the held-out split.

Why: efficientnet-lite0-pq distils on Imagenette images only, and the student ends above the
ImageNet-trained original on Imagenette val (it adapts to the ten classes val contains). That
adaptation is fine-tuning, not compression; this script measures how much of it the dense net gets.

    NETSHRINK_DATA=/work/shared/data python benchmarks/pq_dense_baseline.py \
        [--recipe efficientnet-lite0-pq] [--model efficientnet_lite0] [--dataset imagenette]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netshrink import zoo  # noqa: E402
from netshrink.data import load_dataset  # noqa: E402
from netshrink.evaluate import evaluate  # noqa: E402
from netshrink.methods.pq import OutputAwarePQ  # noqa: E402
from netshrink.recipe import load_recipe  # noqa: E402
from netshrink.step import StepContext  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="efficientnet-lite0-pq")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--dataset", default="imagenette")
    parser.add_argument("--out", default="benchmarks/results/pq-dense-baseline.json")
    args = parser.parse_args(argv)
    step = next(s for s in load_recipe(args.recipe).steps if isinstance(s, OutputAwarePQ))
    if step.stage_epochs:
        raise SystemExit(
            f"{args.recipe} fine-tunes between stages too; give its dense baseline as a checkpoint instead"
        )
    original = zoo.get_model(args.model, pretrained=True).eval()
    train, test = load_dataset(args.dataset, "train"), load_dataset(args.dataset, "test")
    # The step's own retraining path (its TrainConfig, its distillation loss, the student's frozen
    # start as teacher), with no codebook hook: exactly what the compressed net gets, minus PQ.
    ctx = StepContext(data=train, dataset=args.dataset)
    started = time.perf_counter()
    student = copy.deepcopy(original)
    step.retrain(student, ctx, [], "dense, same fine-tuning")
    row = {
        "model": args.model,
        "recipe": args.recipe,
        "fine_tuning": step.train.train_config(ctx).__dict__,
        "distill": step.train.distill,
        "top1_original": evaluate(original, test, progress=False).value,
        "top1_dense_same_finetune": evaluate(student, test, progress=False).value,
        "seconds": time.perf_counter() - started,
    }
    Path(args.out).write_text(json.dumps(row, indent=1, default=str))
    print(json.dumps({k: v for k, v in row.items() if k != "fine_tuning"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
