"""GPU check: the device-marked tests, then a short ResNet-20 PQ run timed on each device.

For a machine with a GPU (nothing here needs one: `--devices cpu` runs the CPU half anywhere).

1. `python -m pytest -q -m device`: the tests that compare results computed on CUDA with CPU.
2. Per device (a child process each, so the time budget is enforced): the training loop's speed on
   ResNet-20 (steps/s at batch 128, float32 and bf16 autocast), then the packaged `resnet20-pq`
   recipe with its distillation cut to `--fraction` of an epoch per phase on `--train-samples`
   training images, timed, with held-out top-1 before and after and the file's size.

Data: CIFAR-10 from $NETSHRINK_DATA (or --data-dir) when it is there, else a synthetic CIFAR-shaped
set (random images, labels by their brightest channel); the output says which, and top-1 on
synthetic data only shows that the pipeline runs. The model is the pretrained ResNet-20 when its
weights are there, else a random one (also said). JSON and a Markdown table are written to --out
(default $OUT, else benchmarks/results) after every stage, so a run cut short still leaves a record.

    python benchmarks/gpu_check.py                      # cpu and cuda, 8 minutes in all
    python benchmarks/gpu_check.py --devices cpu --skip-tests --train-samples 512 --budget 120
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from netshrink.data import ArrayDataset  # noqa: E402
from netshrink.devices import device_name, resolve_device  # noqa: E402

#: Seconds kept back from each stage's share for starting and reading back a child process.
MARGIN = 10.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_devices = "cpu,cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--devices", default=default_devices, help=f"comma-separated (default {default_devices})")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for everything (default 480)")
    parser.add_argument("--test-budget", type=float, default=150.0, help="at most this for the tests (default 150)")
    parser.add_argument("--skip-tests", action="store_true", help="skip the device-marked tests")
    parser.add_argument("--train-samples", type=int, default=10000, help="training images used (default 10000)")
    parser.add_argument("--test-samples", type=int, default=2000, help="held-out images scored (default 2000)")
    parser.add_argument("--calibration", type=int, default=1024, help="pq calibration images (recipe: 1024)")
    parser.add_argument("--fraction", type=float, default=0.1, help="distillation epochs per phase (default 0.1)")
    parser.add_argument("--train-steps", type=int, default=30, help="steps timed per precision (default 30)")
    parser.add_argument("--cpu-bf16", action="store_true", help="also time bf16 autocast on CPU (slow on most CPUs)")
    parser.add_argument("--data-dir", default=os.environ.get("NETSHRINK_DATA"), help="default: $NETSHRINK_DATA")
    parser.add_argument("--out", default=os.environ.get("OUT") or str(REPO / "benchmarks" / "results"))
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one device's run, written to --child-json
    parser.add_argument("--child-json", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def machine() -> dict[str, Any]:
    """What ran: the GPUs by name, the CPU count, the library versions."""
    gpus = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    )
    return {
        "gpus": gpus,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "bf16_on_gpu": bool(gpus) and torch.cuda.is_bf16_supported(),
    }


# ----------------------------------------------------------------------------------- the tests


def run_tests(budget: float) -> dict[str, Any]:
    """`pytest -m device` in a child process, cut at `budget` seconds."""
    command = [sys.executable, "-m", "pytest", "-q", "-m", "device", "-p", "no:cacheprovider"]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=budget)
        output, status = (
            done.stdout + done.stderr,
            "passed" if done.returncode == 0 else f"failed (rc {done.returncode})",
        )
    except subprocess.TimeoutExpired as exc:
        output, status = _text(exc.stdout) + _text(exc.stderr), f"timed out after {budget:.0f} s"
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return {
        "command": "python " + " ".join(command[1:]),
        "status": status,
        "summary": lines[-1] if lines else "",
        "seconds": round(time.perf_counter() - started, 1),
        "tail": lines[-15:],
    }


def _text(data: bytes | str | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else data or ""


# ------------------------------------------------------------------------------- one device


def synthetic_cifar(n: int, seed: int) -> ArrayDataset:
    """Random 3x32x32 images labelled by their brightest channel (of 10 class names): CIFAR's shape."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    return ArrayDataset(images, images.float().mean((2, 3)).argmax(1), classes)


def cifar_or_synthetic(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """(train subset, test subset, what they are)."""
    from netshrink.data import load_dataset
    from netshrink.errors import DataError

    try:
        train, test = load_dataset("cifar10", "train", args.data_dir), load_dataset("cifar10", "test", args.data_dir)
        return train.sample(args.train_samples, seed=0), test.sample(args.test_samples, seed=0), "cifar10"
    except DataError:
        return synthetic_cifar(args.train_samples, 0), synthetic_cifar(args.test_samples, 1), "synthetic"


def resnet20(data_dir: str | None) -> tuple[torch.nn.Module, str]:
    from netshrink import zoo
    from netshrink.errors import NetshrinkError

    try:
        return zoo.get_model("resnet20", pretrained=True, data_dir=data_dir), "pretrained"
    except NetshrinkError:
        torch.manual_seed(0)
        return zoo.get_model("resnet20", pretrained=False), "random init"


def steps_per_second(model: torch.nn.Module, data: Any, device: torch.device, steps: int, autocast: Any) -> float:
    """Training-loop throughput: `steps` SGD steps at batch 128 (the first, warm-up step not counted)."""
    from netshrink.training.loop import TrainConfig, fit

    per_epoch = max(1, len(data) // 128)
    config = TrainConfig(epochs=1 / per_epoch, batch_size=128, lr=0.01, autocast=autocast)
    fit(model, data, config, progress=False, device=device)  # warm-up: kernels chosen, memory allocated
    config = TrainConfig(epochs=steps / per_epoch, batch_size=128, lr=0.01, autocast=autocast)
    started = time.perf_counter()
    fit(model, data, config, progress=False, device=device)  # every step reads its loss: synchronised
    return steps / (time.perf_counter() - started)


def short_pq_recipe(args: argparse.Namespace):
    """The packaged resnet20-pq with distillation cut to `fraction` of an epoch per phase."""
    from netshrink.recipe import load_recipe, parse_recipe

    spelled = load_recipe("resnet20-pq").to_dict()
    settings = spelled["steps"][0]["pq"]
    settings.update(epochs=args.fraction, stage_epochs=args.fraction, calibration=args.calibration)
    spelled["name"] = f"resnet20-pq (distillation {args.fraction:g} epoch per phase)"
    return parse_recipe(spelled)


def run_device(args: argparse.Namespace) -> dict[str, Any]:
    """One device: training throughput, then the short resnet20-pq run with accuracy and size."""
    import netshrink
    from netshrink.evaluate import evaluate

    device = resolve_device(args.child)
    started = time.perf_counter()
    train, test, data = cifar_or_synthetic(args)
    model, weights = resnet20(args.data_dir)
    out: dict[str, Any] = {"device": device_name(device), "data": data, "weights": weights}
    out["load_seconds"] = round(time.perf_counter() - started, 1)
    out["steps_per_s_fp32"] = round(steps_per_second(copy.deepcopy(model), train, device, args.train_steps, None), 2)
    if device.type != "cpu" or args.cpu_bf16:  # bf16 autocast on CPUs without bf16 units: ~14x slower than fp32
        bf16 = steps_per_second(copy.deepcopy(model), train, device, args.train_steps, "bf16")
        out["steps_per_s_bf16"] = round(bf16, 2)
    out["top1_before"] = evaluate(model, test, progress=False, device=device).value
    compressed = netshrink.compress(
        model,
        short_pq_recipe(args),
        data=train,
        dataset=data if data == "cifar10" else None,
        progress=False,
        device=device,
    )
    out["compress_seconds"] = round(compressed.seconds, 1)
    out["top1_after"] = evaluate(compressed.model, test, progress=False, device=device).value
    out["file_bytes"] = compressed.nbytes()
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def run_child(device: str, args: argparse.Namespace, budget: float) -> dict[str, Any]:
    """`run_device` in a child process, cut at `budget` seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        command = [sys.executable, __file__, "--child", device, "--child-json", str(result), *_forwarded(args)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=max(budget, 1.0))
        except subprocess.TimeoutExpired:
            return {"device": device, "status": f"timed out after {budget:.0f} s (raise --budget or lower the sizes)"}
        if done.returncode != 0 or not result.is_file():
            tail = (done.stdout + done.stderr).strip().splitlines()[-8:]
            return {"device": device, "status": f"failed (rc {done.returncode})", "tail": tail}
        return {**json.loads(result.read_text()), "status": "done"}


def _forwarded(args: argparse.Namespace) -> list[str]:
    names = ("train_samples", "test_samples", "calibration", "fraction", "train_steps")
    forwarded = [item for name in names for item in (f"--{name.replace('_', '-')}", str(getattr(args, name)))]
    return (
        forwarded + (["--data-dir", args.data_dir] if args.data_dir else []) + (["--cpu-bf16"] if args.cpu_bf16 else [])
    )


# ----------------------------------------------------------------------------------- output


def markdown(results: dict[str, Any]) -> str:
    m, s = results["machine"], results["settings"]
    lines = [
        "# GPU check",
        "",
        f"Machine: {', '.join(m['gpus']) or 'no GPU'}; {m['cpu_count']} CPUs ({m['torch_threads']} torch threads); "
        f"torch {m['torch']}, CUDA {m['cuda']}.",
        "",
    ]
    tests = results.get("tests")
    if tests:
        lines += [
            f"Device tests (`{tests['command']}`): {tests['status']}, {tests['summary']} ({tests['seconds']} s).",
            "",
        ]
    lines += [
        f"resnet20-pq, distillation {s['fraction']:g} epoch per phase, {s['train_samples']} training images, "
        f"calibration {s['calibration']}, top-1 on {s['test_samples']} held-out images:",
        "",
        "| device | data | weights | steps/s fp32 | steps/s bf16 | compress s | top-1 before | top-1 after | file bytes |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in results["runs"]:
        if run.get("status") != "done":
            lines.append(f"| {run['device']} | {run['status']} | | | | | | | |")
            continue
        lines.append(
            f"| {run['device']} | {run['data']} | {run['weights']} | {run['steps_per_s_fp32']} | "
            f"{run.get('steps_per_s_bf16', '-')} | {run['compress_seconds']} | {run['top1_before']:.2%} | "
            f"{run['top1_after']:.2%} | {run['file_bytes']:,} |"
        )
    if any(run.get("data") == "synthetic" for run in results["runs"]):
        lines += ["", "Synthetic data: top-1 shows only that the pipeline runs, not what compression costs."]
    return "\n".join(lines) + "\n"


def write(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "gpu_check.md").write_text(markdown(results))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        Path(args.child_json).write_text(json.dumps(run_device(args)))
        return 0
    started, out = time.perf_counter(), Path(args.out)
    named = [d.strip() for d in args.devices.split(",") if d.strip()]
    devices = [d for d in named if d != "cpu"] + [d for d in named if d == "cpu"]  # the CPU gets what is left
    for device in devices:
        resolve_device(device)  # a missing device fails now, not after the tests
    settings = {k: getattr(args, k) for k in ("budget", "train_samples", "test_samples", "calibration", "fraction")}
    results: dict[str, Any] = {"machine": machine(), "settings": settings, "tests": None, "runs": []}
    write(results, out)
    if not args.skip_tests:
        results["tests"] = run_tests(min(args.test_budget, args.budget - MARGIN))
        write(results, out)
    for index, device in enumerate(devices):
        left = args.budget - (time.perf_counter() - started) - MARGIN
        results["runs"].append(run_child(device, args, left / (len(devices) - index)))
        write(results, out)
    results["seconds"] = round(time.perf_counter() - started, 1)
    write(results, out)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
