"""Several processes vs one: the same recipe at 1 process x T threads and N processes x 1 thread.

Each row runs the command line a user would run, `netshrink compress MODEL --recipe R --nproc N
--json` (the --nproc launcher starts torchrun's processes; gloo on CPU), and records its wall time
(start to exit: loading, training, evaluation before and after, writing), the recipe's own time
(`compress_seconds`, rank 0), the held-out top-1 of the written file and its size on disk. Retraining
is data-parallel with the same global batch size, so both settings train with the same
hyper-parameters; the files differ only by the order of floating-point sums.

    NETSHRINK_DATA=/work/shared/data flock /tmp/cpu.lock python benchmarks/scale_ddp.py \
        --lenet5 runs/lenet5.nsk [--only lenet5-dc,resnet20-pq-4ep] [--out benchmarks/results/scale-ddp.json]

Baselines: `netshrink train lenet5 --dataset mnist --epochs 2 -o runs/lenet5.nsk`; ResNet-20 is the
pretrained zoo model (from $NETSHRINK_DATA). resnet20-pq-4ep is the packaged resnet20-pq recipe with
0.25 epoch of distillation after each of the first three stages and 3 at the end (4 epochs in all).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: (processes, threads per process): the two ways to use two cores.
SETTINGS = ((1, 2), (2, 1))


def resnet20_pq_4ep(folder: Path) -> Path:
    """The resnet20-pq recipe shortened to 4 epochs of distillation, as a YAML file."""
    import yaml

    from netshrink.recipe import load_recipe

    spec = load_recipe("resnet20-pq").to_dict()
    for step in spec["steps"]:
        ((kind, settings),) = step.items()
        if kind == "pq":
            settings.update(stage_epochs=0.25, epochs=3.0)
    spec["name"] = "resnet20-pq-4ep"
    path = folder / "resnet20-pq-4ep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_one(model: str, recipe: str, processes: int, threads: int, folder: Path) -> dict[str, Any]:
    """One `netshrink compress` run; its wall time and what its JSON says."""
    output = folder / f"{Path(recipe).stem}-{processes}x{threads}.nsk"
    command = [sys.executable, "-m", "netshrink", "compress", model, "--recipe", recipe]
    command += ["--nproc", str(processes), "-o", str(output), "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    result = json.loads(done.stdout)
    return {
        "model": Path(model).stem if model.endswith(".nsk") else model,
        "recipe": Path(recipe).stem,
        "processes": processes,
        "threads": threads,
        "wall_seconds": round(wall, 1),
        "compress_seconds": round(result["compress_seconds"], 1),
        "top1_before": result["before"],
        "top1_after": result["after"],
        "file_bytes": result["file_bytes"],
        "ratio": result["ratio"],
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# One process vs several (torch.distributed, gloo on CPU)",
        "",
        "Each row is `netshrink compress MODEL --recipe R --nproc N --json` at OMP_NUM_THREADS = threads. "
        "wall: start to exit (load, evaluation before and after, write); recipe: the recipe alone. "
        "top-1 on the full held-out test split, of the written file. "
        f"Machine: {result['machine']}. Speed-up = wall of 1 x 2 / wall of this row.",
        "",
        "| model | recipe | processes x threads | wall s | recipe s | speed-up | top-1 before % | top-1 after % "
        "| file bytes | ratio |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = {(r["model"], r["recipe"]): r["wall_seconds"] for r in result["rows"] if r["processes"] == 1}
    for r in result["rows"]:
        speed = base.get((r["model"], r["recipe"]), 0) / r["wall_seconds"]
        lines.append(
            f"| {r['model']} | {r['recipe']} | {r['processes']} x {r['threads']} | {r['wall_seconds']:.0f} | "
            f"{r['compress_seconds']:.0f} | {speed:.2f}x | {100 * r['top1_before']:.2f} | "
            f"{100 * r['top1_after']:.2f} | {r['file_bytes']:,} | {r['ratio']:.1f}x |"
        )
    lines += ["", f"Command: `{result['command']}`."]
    lines += ["", *(f"- {note}" for note in result.get("notes", []))] if result.get("notes") else []
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lenet5", type=Path, required=True, help="trained LeNet-5 checkpoint (.nsk, MNIST)")
    parser.add_argument("--only", default="lenet5-dc,resnet20-pq-4ep", help="comma-separated rows to run")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "scale-ddp.json")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.1f}",
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "rows": [],
    }
    with tempfile.TemporaryDirectory(prefix="scale-ddp-") as tmp:
        folder = Path(tmp)
        jobs = {"lenet5-dc": (str(args.lenet5), "lenet5-dc"), "resnet20-pq-4ep": ("resnet20", None)}
        for name in args.only.split(","):
            model, recipe = jobs[name]
            recipe = recipe or str(resnet20_pq_4ep(folder))
            for processes, threads in SETTINGS:
                row = run_one(model, recipe, processes, threads, folder)
                print(json.dumps(row), flush=True)
                result["rows"].append(row)
                args.out.write_text(json.dumps(result, indent=1) + "\n")
                args.out.with_suffix(".md").write_text(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
