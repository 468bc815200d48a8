"""Models run from their compressed form (`netshrink.load(path, keep_compressed=True)`) against their
dense decode: generation speed, latency, memory, and the same perplexity.

One run, side by side:
- language models (`--lm-files`: the zoo reference and .nsk files), each file dense and kept
  compressed (a .nsk file only), each in a fresh process with `--threads` torch and numba threads:
  load, warm up, then greedy generation of `--tokens` new tokens at batch 1, `--repeats` times; the
  median decoding speed (tokens per second after the prompt), the process's peak RSS (VmHWM), the
  bytes of the module's tensors and the file's size;
- the model's own memory: that peak minus the peak of a process that imported the same runtime
  (torch, netshrink's API, `netshrink.inference` and its numba kernels) and loaded no model,
  measured once in the same run; for kept layers also without the compiled kernels (the peak of a
  process that ran each kernel once on a small layer, above that baseline);
- perplexity of each .nsk language model on `--windows` held-out-play windows, dense and kept
  compressed: the kept layers compute the dense product up to float rounding;
- CNNs (`--cnn-files`, or `--make-cnn` to write them): batch-1 latency on a random input and peak
  RSS, dense and kept compressed. Only Linear and Embedding layers stay compressed (convolutions are
  decoded), so each row says how many of the file's coded weights stayed compressed.

Writes the JSON and the Markdown table after every row (a killed run keeps what it measured), a bar plot at the end:

    python benchmarks/inference.py --lm-files smollm2-135m a.nsk b.nsk [--cnn-files c.nsk] \
        [--make-cnn resnet20 efficientnet_lite0] [--threads 2] [--repeats 3] \
        [--out benchmarks/results/inference.json]

`--make-cnn` writes a CNN's file with its packaged weight-only PQ recipe, fine-tuning left out (no
data needed, seconds): the layers and codes of a PQ file, whose accuracy does not matter here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from compressed_linear import CODES, median_ms, tensor_bytes
from inference_report import MB, plot, write_table

import netshrink
import netshrink.api.language  # noqa: F401  (the runtime every measuring process imports before loading)
from netshrink.inference import CompressedLinear, PaletteWeights, PQWeights, kernels

REFERENCE = "smollm2-135m"
PROMPT = "ROMEO: But soft, what light through yonder window breaks?\n"
CNN_PASSES = 50  # forward passes per repeat
SAME_PERPLEXITY = 1e-4  # relative: kept and dense sum the same products in another order
CODED = ("palette", "pq")  # codecs whose Linear and Embedding weights can stay compressed


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    windows = None
    if any(Path(m).suffix == ".nsk" for m in args.lm_files):
        from netshrink.data import load_dataset

        windows = load_dataset("shakespeare", "test").sample(args.windows, seed=0)
    run(args, windows, argv if argv is not None else sys.argv[1:])


def run(args: argparse.Namespace, windows: Any, argv: list[str]) -> dict[str, Any]:
    """Every row of the benchmark, the JSON and the table rewritten after each; then the plot.
    `windows`: the token windows the .nsk language models are scored on (None: no perplexity)."""
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    results: dict[str, Any] = {"setup": setup(args, argv), "lm": [], "perplexity": [], "cnn": []}
    results["baseline"] = baselines(args.threads)
    _save(results, out)
    for model in args.lm_files:
        for keep in (False, True) if Path(model).suffix == ".nsk" else (False,):
            _add(results, out, "lm", lm_row(model, keep, args, results["baseline"]))
    for model in args.lm_files:
        if windows is not None and Path(model).suffix == ".nsk":
            _add(results, out, "perplexity", perplexity_row(model, windows))
    cnn_files = [*args.cnn_files, *(make_cnn(name, Path(args.work_dir), args.data_dir) for name in args.make_cnn)]
    for path in cnn_files:
        for keep in (False, True):
            _add(results, out, "cnn", cnn_row(path, keep, args, results["baseline"]))
    plot(results, out.with_suffix(".png"))
    return results


def setup(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    try:
        import numba

        numba_version = numba.__version__
    except ImportError:
        numba_version = "not installed (torch fallback)"
    return {
        "command": " ".join(["python benchmarks/inference.py", *argv]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "numba": numba_version,
        "numba_kernels": kernels.NUMBA,
        "threads": args.threads,
        "repeats": args.repeats,
        "tokens": args.tokens,
        "windows": args.windows,
        "cnn_passes": CNN_PASSES,
    }


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    names = [
        line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
    ]
    return names[0] if names else platform.processor()


# -- rows (in this process), each measured by a fresh one --------------------------------------


def measure_generation(model: str, keep: bool, threads: int, tokens: int, repeats: int) -> dict[str, Any]:
    """Greedy generation from `model` (zoo name or file) in a fresh process: tokens per second after
    the prompt (median of `repeats`) and the process's peak RSS (loading included)."""
    job = {"kind": "lm", "model": model, "keep": keep, "tokens": tokens, "repeats": repeats}
    row = {"model": model, "mode": "kept compressed" if keep else "dense", **run_child(job, threads)}
    print(json.dumps({k: row[k] for k in ("model", "mode", "tokens_per_second", "peak_rss_mb")}), flush=True)
    return row


def lm_row(model: str, keep: bool, args: argparse.Namespace, baseline: dict[str, Any]) -> dict[str, Any]:
    row = measure_generation(model, keep, args.threads, args.tokens, args.repeats)
    return {**row, **_file_facts(model), **own_memory(row, baseline)}


def perplexity_row(path: str, windows: Any) -> dict[str, Any]:
    """Perplexity of the file dense and kept compressed on the same windows, and how far apart."""
    from llm import window_scores

    scored = {"windows": windows}
    dense = window_scores(netshrink.load(path), scored)["ppl_windows"]
    kept = window_scores(netshrink.load(path, keep_compressed=True), scored)["ppl_windows"]
    difference = abs(kept / dense - 1)
    return {
        "model": path,
        "windows": len(windows),
        "window_tokens": windows.length,
        "ppl_dense": dense,
        "ppl_kept": kept,
        "relative_difference": difference,
        "tolerance": SAME_PERPLEXITY,
        "same": difference <= SAME_PERPLEXITY,
    }


def cnn_row(path: str, keep: bool, args: argparse.Namespace, baseline: dict[str, Any]) -> dict[str, Any]:
    from netshrink import zoo

    facts = _file_facts(path)
    job = {"kind": "cnn", "model": path, "keep": keep, "repeats": args.repeats}
    job["input_shape"] = list(zoo.model_info(facts["zoo_name"]).input_shape)
    row = {"model": path, "mode": "kept compressed" if keep else "dense", **run_child(job, args.threads), **facts}
    row.update(own_memory(row, baseline))
    print(json.dumps({k: row[k] for k in ("model", "mode", "latency_ms", "peak_rss_mb")}), flush=True)
    return row


def baselines(threads: int) -> dict[str, float]:
    """Peak RSS of a process that imported the runtime and loaded no model, and of one that also ran
    each numba kernel once on a small layer: the compiled code a kept model's process holds too."""
    run_child({"kind": "kernels"}, threads)  # fills numba's cache: compiling takes more than loading
    return {
        "peak_rss_mb": run_child({"kind": "baseline"}, threads)["peak_rss_mb"],
        "kernels_peak_rss_mb": run_child({"kind": "kernels"}, threads)["peak_rss_mb"],
    }


def own_memory(row: dict[str, Any], baseline: dict[str, float]) -> dict[str, float]:
    """The model's share of its process's peak, with and without the kernels' compiled code."""
    own = row["peak_rss_mb"] - baseline["peak_rss_mb"]
    kernels_mb = baseline["kernels_peak_rss_mb"] - baseline["peak_rss_mb"] if row["kept_weights"] else 0.0
    return {"model_memory_mb": own, "model_memory_less_kernels_mb": own - kernels_mb}


def _file_facts(model: str) -> dict[str, Any]:
    """Size on disk and the weights a palette or PQ codes (a .nsk file; nothing for a zoo name)."""
    if Path(model).suffix != ".nsk":
        return {"file_bytes": Path(model).stat().st_size if Path(model).is_file() else None}
    report = netshrink.inspect(model)
    coded = [t for t in report.tensors if not t.tied_to and t.codec.startswith(CODED)]
    return {
        "file_bytes": report.file_bytes,
        "zoo_name": report.model.name,
        "coded_weights": sum(t.numel for t in coded),
    }


def make_cnn(name: str, work_dir: Path, data_dir: str | None) -> str:
    """`name` compressed by its packaged weight-only PQ recipe without the fine-tuning (data-free,
    seconds to minutes): the layers and codes of a PQ file, whose accuracy does not matter here."""
    import yaml

    from netshrink.recipe import parse_recipe, recipe_dir

    path = work_dir / f"{name}-pq-untuned.nsk"
    if path.is_file():
        return str(path)
    data = yaml.safe_load((recipe_dir() / f"{name.replace('_', '-')}-pq-weights.yaml").read_text())
    for step in data["steps"]:
        if "pq" in step:
            step["pq"].update(epochs=0, stage_epochs=0)
    data["name"] = f"{data['name']}-untuned"
    work_dir.mkdir(parents=True, exist_ok=True)
    netshrink.compress(name, parse_recipe(data), output=path, data_dir=data_dir, progress=False)
    return str(path)


# -- the fresh processes -----------------------------------------------------------------------


def run_child(job: dict[str, Any], threads: int) -> dict[str, Any]:
    """`job` run by this script in a fresh process with `threads` torch and numba threads, importing
    the netshrink this process imported."""
    root = str(Path(netshrink.__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "NUMBA_NUM_THREADS": str(threads)}
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    command = [sys.executable, __file__, "--child", json.dumps({**job, "threads": threads})]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"{job['kind']} {job.get('model', '')} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def child(job: dict[str, Any]) -> dict[str, Any]:
    """In the fresh process: the job's measurement, then the process's peak RSS."""
    torch.set_num_threads(job["threads"])
    measure = {
        "baseline": lambda job: {},
        "kernels": kernels_in_child,
        "lm": generate_in_child,
        "cnn": forward_in_child,
    }
    row = measure[job["kind"]](job)
    return {**row, "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """VmHWM: this process's own peak (ru_maxrss would carry the parent's peak over fork and exec)."""
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) * 1024 / MB


def kernels_in_child(job: dict[str, Any]) -> dict[str, Any]:
    """Every kernel compiled (or read from numba's cache) and run on a 64 x 64 layer of each code."""
    for make in CODES.values():
        layer = CompressedLinear(make(64, 64))
        for rows in (1, kernels.SMALL_BATCH + 1):  # the few-rows kernels, then the row decoders
            layer(torch.randn(rows, 64))
    return {}


def generate_in_child(job: dict[str, Any]) -> dict[str, Any]:
    from netshrink.api.language import find_tokenizer
    from netshrink.api.models import resolve

    started = time.perf_counter()
    source = resolve(job["model"], progress=False, keep_compressed=job["keep"])
    module, tokenizer = source.module.eval(), find_tokenizer(source)
    load_seconds = time.perf_counter() - started
    netshrink.generate(module, PROMPT, max_new_tokens=2, tokenizer=tokenizer)  # numba compiles or reads its cache
    runs = [
        netshrink.generate(module, PROMPT, max_new_tokens=job["tokens"], tokenizer=tokenizer)
        for _ in range(job["repeats"])
    ]
    return {
        "load_seconds": load_seconds,
        "tokens_per_second": statistics.median(r.tokens_per_second for r in runs),
        "runs_tokens_per_second": [r.tokens_per_second for r in runs],
        "prompt_tokens": runs[0].prompt_tokens,
        "new_tokens": runs[0].new_tokens,
        "text": runs[0].text,
        **footprint(module),
    }


def forward_in_child(job: dict[str, Any]) -> dict[str, Any]:
    model = netshrink.load(job["model"], keep_compressed=job["keep"])
    x = torch.randn(1, *job["input_shape"], generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        latency = median_ms(lambda: model(x), job["repeats"] * CNN_PASSES)
    return {"latency_ms": latency, **footprint(model)}


def footprint(module: torch.nn.Module) -> dict[str, int]:
    """The bytes of the module's tensors, and how many weights it holds as codes (each storage once:
    a tied head shares its embedding's)."""
    storages = [m for m in module.modules() if isinstance(m, (PaletteWeights, PQWeights))]
    return {"tensor_bytes": tensor_bytes(module), "kept_weights": sum(s.rows * s.columns for s in storages)}


# -- output ------------------------------------------------------------------------------------


def _add(results: dict[str, Any], out: Path, table: str, row: dict[str, Any]) -> None:
    results[table].append(row)
    _save(results, out)


def _save(results: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    write_table(results, out.with_suffix(".md"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lm-files", nargs="*", default=[REFERENCE], help="zoo names, .nsk or .gguf files")
    parser.add_argument("--cnn-files", nargs="*", default=[], help=".nsk files of zoo CNNs")
    parser.add_argument(
        "--make-cnn", nargs="*", default=[], choices=["resnet20", "efficientnet_lite0"], help="write PQ files first"
    )
    parser.add_argument("--work-dir", default="inference-runs", help="where --make-cnn writes (and reuses) files")
    parser.add_argument("--data-dir", help="the zoo's pretrained weights for --make-cnn (default: $NETSHRINK_DATA)")
    parser.add_argument("--threads", type=int, default=2, help="torch and numba threads of every process")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per generation")
    parser.add_argument("--windows", type=int, default=8, help="held-out-play windows for perplexity")
    parser.add_argument("--out", default="benchmarks/results/inference.json")
    return parser.parse_args(argv)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child(json.loads(sys.argv[2]))), flush=True)
    else:
        main()
