"""Benchmark of `netshrink.cluster.kmeans` (vector k-means for PQ) against faiss-cpu and scikit-learn.

N = 10^6 sub-vectors of d = 9 (3x3 kernels), K = 256, 20 Lloyd iterations, side by side in one run:

* ours: `kmeans(x, 256, iters=20, seed=0)` (k-means++ on a 32 K sample, then Lloyd on all points);
* faiss.Kmeans(d, 256, niter=20, seed=0) as shipped: it trains on a random 256 K = 65,536 points
  (max_points_per_centroid=256), then one search assigns all points;
* faiss.Kmeans with max_points_per_centroid = ceil(N / K): the same Lloyd as ours, on all points;
* scikit-learn KMeans(n_init=1, max_iter=20, tol=0, algorithm="lloyd"): k-means++ on all points.

Times include the final assignment of every point; SSE is always that of every point on its
nearest centroid, computed the same way for all (float64 sums of exact differences). Repeats of
ours and faiss are interleaved so that a change in the machine's load hits all of them alike.

Data: the 3x3 kernels of the pretrained CIFAR-10 ResNet-20 (`$NETSHRINK_DATA/cifar10-resnet`),
tiled to N with Gaussian noise of 10 % of their standard deviation, so that the clusters have the
shape of real kernels; without that file, a 64-mode Gaussian mixture (said in the output).

    python benchmarks/vector_kmeans.py [--n 1000000] [--repeats 3] [--sklearn-repeats 1]

Writes JSON to --out and markdown beside it (.md), and prints the markdown. Never run by the tests.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netshrink.cluster import assign_nearest, kmeans
from netshrink.errors import NetshrinkError

log = logging.getLogger("bench.vector_kmeans")

D = 9
NOISE = 0.1  # tiled kernels get N(0, (NOISE * std of all kernels)^2) added


def resnet20_kernels(n: int, seed: int, data_dir: str | None) -> torch.Tensor:
    """[n, 9]: ResNet-20's 3x3 kernels, tiled with noise (raises NetshrinkError without the file)."""
    from netshrink.zoo.pretrained import read_checkpoint, resnet20_checkpoint

    state = read_checkpoint(resnet20_checkpoint(data_dir))
    kernels = torch.cat([w.reshape(-1, D) for w in state.values() if w.dim() == 4 and w.shape[2:] == (3, 3)])
    gen = torch.Generator().manual_seed(seed)
    tiled = kernels.float()[torch.arange(n) % kernels.shape[0]]
    log.info("data: %d ResNet-20 3x3 kernels tiled to %d, noise %.0f %% of their std", kernels.shape[0], n, 100 * NOISE)
    return tiled + NOISE * float(kernels.std()) * torch.randn(n, D, generator=gen)


def gaussian_mixture(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(64, D, generator=gen)
    return means[torch.randint(64, (n,), generator=gen)] + 0.5 * torch.randn(n, D, generator=gen)


def benchmark_data(n: int, seed: int, data_dir: str | None) -> tuple[torch.Tensor, str]:
    try:
        return resnet20_kernels(n, seed, data_dir), f"ResNet-20 3x3 kernels tiled + {NOISE:.0%} noise"
    except NetshrinkError as exc:
        log.warning("no ResNet-20 weights (%s): using a Gaussian mixture", exc)
        return gaussian_mixture(n, seed), "64-mode Gaussian mixture (ResNet-20 weights not found)"


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def nearest_sse(x: torch.Tensor, centroids: Any) -> float:
    """SSE of every point on its nearest centroid: what a PQ codec would store."""
    return assign_nearest(x, torch.as_tensor(np.asarray(centroids), dtype=torch.float32))[1]


def run_ours(x: torch.Tensor, k: int, iters: int) -> dict:
    result, t = timed(lambda: kmeans(x, k, iters=iters, seed=0))
    return {"time_s": t, "sse": nearest_sse(x, result.centroids), "iterations": result.iterations}


def run_faiss(x: torch.Tensor, k: int, iters: int, all_points: bool) -> dict:
    import faiss

    xf = np.ascontiguousarray(x.numpy())
    per_centroid = math.ceil(x.shape[0] / k) if all_points else 256  # 256 is faiss's default
    km = faiss.Kmeans(D, k, niter=iters, seed=0, max_points_per_centroid=per_centroid)

    def train_and_assign() -> None:
        km.train(xf)
        km.index.search(xf, 1)

    _, t = timed(train_and_assign)
    return {"time_s": t, "sse": nearest_sse(x, km.centroids), "train_points": min(x.shape[0], per_centroid * k)}


def run_sklearn(x: torch.Tensor, k: int, iters: int) -> dict:
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=1, max_iter=iters, tol=0.0, algorithm="lloyd", random_state=0)
    _, t = timed(lambda: km.fit(x.numpy()))
    return {"time_s": t, "sse": nearest_sse(x, km.cluster_centers_), "iterations": int(km.n_iter_)}


def repeated(runs: dict[str, Callable[[], dict]], repeats: int) -> dict[str, dict]:
    """Run every method `repeats` times, interleaved; keep the median time and the first SSE."""
    trials: dict[str, list[dict]] = {name: [] for name in runs}
    for r in range(repeats):
        for name, run in runs.items():
            trials[name].append(run())
            log.info(
                "%s repeat %d/%d: %.2f s, SSE %.6g",
                name,
                r + 1,
                repeats,
                trials[name][-1]["time_s"],
                trials[name][-1]["sse"],
            )
    return {name: summary(results) for name, results in trials.items()}


def summary(trials: list[dict]) -> dict:
    times = [trial["time_s"] for trial in trials]
    return {**trials[0], "time_s": statistics.median(times), "times_s": times}


def markdown(report: dict) -> str:
    s = report["settings"]
    lines = [
        f"### Vector k-means: N={s['n']:,}, d={D}, K={s['k']}, {s['iters']} iterations",
        "",
        f"Data: {report['data']}. Machine: {report['machine']['cpus']} CPUs, torch threads "
        f"{report['machine']['torch_threads']}, faiss threads {report['machine']['faiss_threads']}, "
        f"load average {report['load_before']} before, {report['load_after']} after. faiss "
        f"{report['machine']['faiss']} ({report['machine']['faiss_compile_options'].strip()}) trains on at "
        "most 256 points per centroid by default; every time includes assigning all points, every SSE is "
        "over all points on their nearest centroid.",
        "",
        "| method | points trained on | time (s) | SSE (all points) | time / ours | SSE / ours |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    ours = report["results"]["ours"]
    for name, r in report["results"].items():
        runs = len(r["times_s"])
        lines.append(
            f"| {LABELS[name]} ({'median of ' + str(runs) if runs > 1 else 'run once'}) "
            f"| {r.get('train_points', s['n']):,} | {r['time_s']:.2f} | {r['sse']:.6g} "
            f"| {r['time_s'] / ours['time_s']:.2f} | {r['sse'] / ours['sse']:.4f} |"
        )
    lines += [
        "",
        "ours / faiss time: "
        + ", ".join(f"{LABELS[name]}: {ratio:.2f}x" for name, ratio in report["ours_over_faiss_time"].items()),
    ]
    return "\n".join(lines)


LABELS = {
    "ours": "netshrink kmeans",
    "faiss_default": "faiss.Kmeans, default subsample",
    "faiss_all": "faiss.Kmeans, all points",
    "sklearn": "scikit-learn KMeans lloyd",
}


def machine_info() -> dict:
    import faiss

    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "faiss": faiss.__version__,
        "faiss_compile_options": faiss.get_compile_options(),
        "torch_threads": torch.get_num_threads(),
        "faiss_threads": faiss.omp_get_max_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000, help="sub-vectors to cluster")
    p.add_argument("--k", type=int, default=256)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3, help="timed runs of ours and faiss (median)")
    p.add_argument("--sklearn-repeats", type=int, default=1, help="scikit-learn is slow; 0 skips it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="folder holding cifar10-resnet/ (default $NETSHRINK_DATA)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/vector_kmeans.json"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    x, data = benchmark_data(args.n, args.seed, args.data_dir)
    load_before = [round(v, 2) for v in os.getloadavg()]
    results = repeated(
        {
            "ours": lambda: run_ours(x, args.k, args.iters),
            "faiss_default": lambda: run_faiss(x, args.k, args.iters, all_points=False),
            "faiss_all": lambda: run_faiss(x, args.k, args.iters, all_points=True),
        },
        args.repeats,
    )
    if args.sklearn_repeats:
        results.update(repeated({"sklearn": lambda: run_sklearn(x, args.k, args.iters)}, args.sklearn_repeats))
    report = {
        "machine": machine_info(),
        "data": data,
        "settings": {"n": args.n, "k": args.k, "iters": args.iters, "seed": args.seed},
        "load_before": load_before,
        "load_after": [round(v, 2) for v in os.getloadavg()],
        "results": results,
        "ours_over_faiss_time": {
            name: results["ours"]["time_s"] / results[name]["time_s"] for name in ("faiss_default", "faiss_all")
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    table = markdown(report)
    args.out.with_suffix(".md").write_text(table + "\n")
    log.info("wrote %s and %s", args.out, args.out.with_suffix(".md"))
    print(table)


if __name__ == "__main__":
    main()
