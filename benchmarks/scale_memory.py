"""Peak memory and time of compressing and loading llama-shaped checkpoints of 1 to 8 GB.

Synthetic fp32 checkpoints (random weights, N(0, 0.02^2); 1B-class blocks) are written tensor by
tensor as .safetensors, with metadata naming the zoo model and its arch, under --work-dir (never in
the repository). Each measured command then runs in a fresh process under `/usr/bin/time -v`
("Maximum resident set size"), inside a cgroup v1 memory group when one can be made (root; else
under `prlimit --as`, an address-space limit, which the results then name):

- streaming compression (`netshrink compress CKPT --stream`) with a one-shot palette recipe, and
  with output-aware PQ calibrated on the activations each block receives (sizes that fit the time);
- loading the largest model's compressed file (`netshrink.load`): the model plus one tensor;
- the non-streaming path (`netshrink compress CKPT`) on the largest checkpoint under the same limit
  the streaming runs have: one error line.

    flock /tmp/cpu.lock env OMP_NUM_THREADS=1 python benchmarks/scale_memory.py \\
        [--sizes 1,2,4,8] [--pq-sizes 1,2] [--limit-gib 3] [--work-dir /work/runs/scale]

Writes benchmarks/results/scale-memory.json (after every run), scale-memory.md and scale-memory.png.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from netshrink import zoo  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
CGROUP = Path("/sys/fs/cgroup/memory")
GB = 1e9
#: Blocks of a 1B-class model (TinyLlama's width: d 2048, grouped-query attention with 4 key/value
#: heads, MLP 5632), as many as the size needs: the block is the unit of streaming memory.
WIDTH = dict(vocab=8192, dim=2048, heads=16, kv_heads=4, ffn=5632, max_seq=64, tied=True)
#: Blocks per nominal checkpoint size (GB): 0.07 GB of embedding + 0.18 GB per block.
LAYERS = {1: 5, 2: 11, 4: 22, 8: 44}
PALETTE_RECIPE = "oneshot-palette5"
PQ_RECIPE = """name: scale-pq
description: Output-aware PQ of every block's linear layers (sub-vectors of 8, 256 codewords,
  codebooks fitted on the block's activations for 8 calibration rows of 64 tokens); the rest in fp16.
steps:
  - pq: {include: ["model.layers.*"], pointwise_d: 8, k: 256, objective: output, calibration: 8,
         calibration_batch: 64, kmeans_iters: 8, epochs: 0}
  - cast: {dtype: fp16}
"""


# --- synthetic checkpoints -----------------------------------------------------------------------


def write_checkpoint(path: Path, arch: dict[str, Any], seed: int = 0) -> int:
    """A .safetensors file of the zoo llama with `arch` and random weights, written one tensor at a
    time (the tied head left out, as checkpoints of tied models do); returns its size."""
    skeleton = zoo.build_skeleton("llama", **arch)
    shapes = {name: tuple(t.shape) for name, t in skeleton.state_dict().items() if name != "lm_head.weight"}
    header: dict[str, Any] = {"__metadata__": {"netshrink_model": "llama", "arch": json.dumps(arch)}}
    offset = 0
    for name, shape in shapes.items():
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + 4 * math.prod(shape)]}
        offset += 4 * math.prod(shape)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    generator = torch.Generator().manual_seed(seed)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as file:
        file.write(len(text).to_bytes(8, "little") + text)
        for name, shape in shapes.items():
            values = (
                torch.ones(shape) if name.endswith("norm.weight") else torch.randn(shape, generator=generator) * 0.02
            )
            file.write(values.numpy().tobytes())
    tmp.replace(path)
    return path.stat().st_size


def checkpoint(work: Path, size: int) -> Path:
    path = work / f"llama-{size}gb.safetensors"
    if not path.is_file():
        started = time.perf_counter()
        nbytes = write_checkpoint(path, {**WIDTH, "layers": LAYERS[size]})
        print(f"wrote {path} ({nbytes / GB:.2f} GB) in {time.perf_counter() - started:.0f} s", flush=True)
    return path


# --- measured runs -------------------------------------------------------------------------------


def limited(command: list[str], limit_bytes: int | None, name: str) -> tuple[list[str], str]:
    """`command` under a memory limit: a cgroup v1 group when we may make one, else prlimit --as."""
    if limit_bytes is None:
        return command, "none"
    group = CGROUP / name
    try:
        group.mkdir(exist_ok=True)
        (group / "memory.limit_in_bytes").write_text(str(limit_bytes))
    except OSError:
        return ["prlimit", f"--as={limit_bytes}", *command], f"prlimit --as={limit_bytes}"
    enter = f'echo $$ > {group / "cgroup.procs"} && exec "$@"'
    return ["sh", "-c", enter, "sh", *command], f"cgroup v1 memory.limit_in_bytes={limit_bytes}"


def measure(command: list[str], limit_bytes: int | None, name: str, timeout: float) -> dict[str, Any]:
    """Run `command` in a fresh process under /usr/bin/time -v: peak RSS, wall time, exit, last lines."""
    wrapped, how = limited(["/usr/bin/time", "-v", *command], limit_bytes, name)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    started = time.perf_counter()
    try:
        done = subprocess.run(wrapped, capture_output=True, text=True, env=env, timeout=timeout)
        code, err, out = done.returncode, done.stderr, done.stdout
    except subprocess.TimeoutExpired as exc:
        code, err, out = "timeout", _text(exc.stderr), _text(exc.stdout)
    wall = time.perf_counter() - started
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("\t")]
    errors = [line for line in lines if line.startswith("netshrink: error")]
    return {
        "command": " ".join(command),
        "limit": how,
        "exit": code,
        "wall_s": round(wall, 1),
        "peak_rss_bytes": int(peak.group(1)) * 1024 if peak else None,
        "error_line": errors[-1] if errors else None,
        "stdout_tail": out.strip().splitlines()[-3:],
        "stderr_tail": [line for line in lines if "Command being timed" not in line][-3:],
    }


def _size_if_ok(path: Path, row: dict[str, Any]) -> int | None:
    """The output's size, for a run that succeeded (a failed run may leave an earlier run's file)."""
    return path.stat().st_size if row["exit"] == 0 and path.is_file() else None


def _text(data: bytes | str | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "netshrink.cli", *args]


LOAD_SCRIPT = "import sys, netshrink; m = netshrink.load(sys.argv[1]); print(sum(p.numel() for p in m.parameters()))"


def decoded_bytes(arch: dict[str, Any]) -> tuple[int, int]:
    """fp32 bytes of the model (tied tensors once) and of its largest block."""
    skeleton = zoo.build_skeleton("llama", **arch)
    model = sum(p.numel() * 4 for p in skeleton.parameters())
    block = sum(p.numel() * 4 for p in skeleton.model.layers[0].parameters())
    return model, block


# --- the benchmark -------------------------------------------------------------------------------


class Results:
    """The JSON results file, rewritten after every run so that an interrupted benchmark keeps its rows."""

    def __init__(self, path: Path, settings: dict[str, Any]) -> None:
        self.path, self.data = path, {"settings": settings, "runs": []}
        path.parent.mkdir(parents=True, exist_ok=True)

    def add(self, row: dict[str, Any]) -> None:
        self.data["runs"].append(row)
        print(json.dumps({k: row.get(k) for k in ("run", "size_gb", "exit", "wall_s", "peak_rss_bytes")}), flush=True)
        self.path.write_text(json.dumps(self.data, indent=2) + "\n")


def run_size(size: int, args: argparse.Namespace, results: Results, limit: int) -> None:
    """Every run on the checkpoint of `size` GB (generated first when missing)."""
    arch = {**WIDTH, "layers": LAYERS[size]}
    path = checkpoint(args.work_dir, size)
    model, block = decoded_bytes(arch)
    common = {"size_gb": size, "checkpoint_bytes": path.stat().st_size, "model_bytes": model, "block_bytes": block}
    recipes = [("stream palette", PALETTE_RECIPE, limit)] if "palette" in args.runs else []
    if size in args.pq_sizes and "pq" in args.runs:
        pq_limit = int(args.pq_limit_gib * (1 << 30)) if args.pq_limit_gib else None
        recipes.append(("stream pq", str(args.work_dir / "scale-pq.yaml"), pq_limit))
    for run, recipe, run_limit in recipes:
        out = args.work_dir / f"llama-{size}gb-{run.split()[-1]}.nsk"
        command = cli("compress", str(path), "--stream", "--recipe", recipe, "-o", str(out))
        row = measure(command, run_limit, args.cgroup, args.timeout)
        results.add({"run": run, **common, **row, "file_bytes": _size_if_ok(out, row)})
    if size in args.whole_sizes and "whole" in args.runs:
        out = args.work_dir / f"llama-{size}gb-whole.nsk"
        command = cli("compress", str(path), "--recipe", PALETTE_RECIPE, "--no-eval", "-o", str(out))
        for run, run_limit in (("whole palette, no limit", None), ("whole palette, same limit", limit)):
            if run_limit is None and model * 3 > args.unlimited_max_gb * GB:
                continue  # would not fit the machine: only the limited run
            row = measure(command, run_limit, args.cgroup, args.timeout)
            results.add({"run": run, **common, **row, "file_bytes": _size_if_ok(out, row)})
    if size == max(args.sizes) and "load" in args.runs:
        compressed = args.work_dir / f"llama-{size}gb-palette.nsk"
        row = measure([sys.executable, "-c", LOAD_SCRIPT, str(compressed)], None, args.cgroup, args.timeout)
        results.add({"run": "load (netshrink.load)", **common, **row, "file_bytes": compressed.stat().st_size})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,2,4,8", help="nominal checkpoint sizes in GB (of 1, 2, 4, 8)")
    parser.add_argument("--pq-sizes", default="1,2", help="sizes also compressed with calibration-based PQ")
    parser.add_argument("--whole-sizes", default="1,8", help="sizes also compressed without --stream")
    parser.add_argument("--runs", default="palette,pq,whole,load", help="which runs (palette, pq, whole, load)")
    parser.add_argument("--limit-gib", type=float, default=4.0, help="memory limit of the palette and whole runs")
    parser.add_argument("--pq-limit-gib", type=float, default=0.0, help="memory limit of the PQ runs (0: none)")
    parser.add_argument("--append", action="store_true", help="add the runs to an existing --out file")
    parser.add_argument("--unlimited-max-gb", type=float, default=12.0, help="largest unlimited whole-model run")
    parser.add_argument("--work-dir", type=Path, default=Path("/work/runs/scale"))
    parser.add_argument("--timeout", type=float, default=1500.0, help="seconds per run")
    parser.add_argument("--out", type=Path, default=RESULTS / "scale-memory.json")
    parser.add_argument("--cgroup", default="nsk_scale", help="memory cgroup name (one per concurrent benchmark)")
    parser.add_argument("--tables-only", action="store_true", help="rewrite the .md and .png of --out; run nothing")
    args = parser.parse_args()
    if args.tables_only:
        data = json.loads(args.out.read_text())
        write_table(data, args.out.with_suffix(".md"))
        plot(data, args.out.with_suffix(".png"))
        return
    for key in ("sizes", "pq_sizes", "whole_sizes"):
        setattr(args, key, [int(v) for v in getattr(args, key).split(",") if v])
    args.runs = args.runs.split(",")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    (args.work_dir / "scale-pq.yaml").write_text(PQ_RECIPE)
    limit = int(args.limit_gib * (1 << 30))
    settings = {
        "widths": WIDTH,
        "layers_by_size": {str(k): LAYERS[k] for k in args.sizes},
        "recipes": {"palette": PALETTE_RECIPE, "pq": PQ_RECIPE},
        "limit_bytes": limit,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "threads": os.environ.get("OMP_NUM_THREADS", "1"),
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d"),
    }
    results = Results(args.out, settings)
    if args.append and args.out.exists():
        earlier = json.loads(args.out.read_text())
        settings["command"] = f"{earlier['settings']['command']}; then {settings['command']}"
        results.data["runs"] = earlier["runs"]
    else:
        baseline = measure([sys.executable, "-c", "import torch, netshrink.cli, netshrink.streaming"], None, "x", 120)
        results.add({"run": "import torch + netshrink", **baseline})
    for size in args.sizes:
        run_size(size, args, results, limit)
    write_table(results.data, args.out.with_suffix(".md"))
    plot(results.data, args.out.with_suffix(".png"))


def write_table(data: dict[str, Any], path: Path) -> None:
    limit = data["settings"]["limit_bytes"]
    lines = [
        "# Peak memory of compressing and loading llama-shaped checkpoints",
        "",
        f"Command: `{data['settings']['command']}` ({data['settings']['date']}; {data['settings']['machine']}; "
        f"{data['settings']['threads']} thread). Synthetic fp32 llama checkpoints (random weights), blocks of "
        f"{data['settings']['widths']['dim']} x {data['settings']['widths']['ffn']}; each run a fresh process, "
        "peak RSS from `/usr/bin/time -v`. Limited runs: "
        f"{next((r['limit'] for r in data['runs'] if r.get('limit', 'none') != 'none'), 'none')} "
        f"({limit / (1 << 30):.1f} GiB).",
        "",
        "| run | checkpoint | model fp32 | one block | limit | peak RSS | wall | file | result |",
        "|---|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for row in by_run(data["runs"][1:]):
        result = "ok" if row["exit"] == 0 else (row.get("note") or row.get("error_line") or f"exit {row['exit']}")
        if row["exit"] == 137 and row["limit"] != "none":
            result = "killed by the kernel at the memory limit (exit 137)"
        lines.append(
            f"| {row['run']} | {_gb(row.get('checkpoint_bytes'))} | {_gb(row.get('model_bytes'))} | "
            f"{_gb(row.get('block_bytes'))} | {'yes' if row['limit'] != 'none' else 'no'} | "
            f"{_gb(row['peak_rss_bytes'])} | {row['wall_s']:.0f} s | {_gb(row.get('file_bytes'))} | {result} |"
        )
    base = data["runs"][0]["peak_rss_bytes"]
    lines += ["", f"Importing torch and netshrink alone takes {_gb(base)} of RSS (included in every peak).", ""]
    path.write_text("\n".join(lines))


def by_run(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows grouped by run (in order of first appearance), each run's by size: runs appended by
    later invocations join their kind."""
    order = {name: index for index, name in enumerate(dict.fromkeys(row["run"] for row in rows))}
    return sorted(rows, key=lambda row: (order[row["run"]], row.get("size_gb") or 0))


def _gb(value: int | None) -> str:
    return "-" if value is None else f"{value / GB:.2f} GB"


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    runs = [r for r in data["runs"] if r.get("checkpoint_bytes") and r["peak_rss_bytes"]]
    for name, marker in (
        ("stream palette", "o-"),
        ("stream pq", "s-"),
        ("whole palette, no limit", "^"),
        ("load (netshrink.load)", "D"),
    ):
        rows = [r for r in runs if r["run"] == name and r["exit"] == 0]
        if rows:
            ax.plot(
                [r["checkpoint_bytes"] / GB for r in rows], [r["peak_rss_bytes"] / GB for r in rows], marker, label=name
            )
    sizes = [r["checkpoint_bytes"] / GB for r in runs]
    if sizes:
        ax.plot([0, max(sizes)], [0, max(sizes)], ":", color="grey", label="checkpoint size")
    ax.axhline(data["settings"]["limit_bytes"] / GB, color="red", lw=0.8, ls="--", label="memory limit (compression)")
    ax.set_xlabel("checkpoint size (GB, fp32)")
    ax.set_ylabel("peak RSS (GB)")
    width = data["settings"]["widths"]
    ax.set_title(f"Peak memory vs checkpoint size (llama, blocks {width['dim']} x {width['ffn']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
