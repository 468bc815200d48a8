"""Benchmark of `netshrink.cluster.kmeans_1d` for palette quantization of heavy-tailed weights.

(a) speed and SSE on 10^7 Student-t(3) float32 weights, K=256, against scikit-learn's KMeans
    (n_init=1, the Lloyd + k-means++ that most compression code uses) and faiss.Kmeans (niter=20);
(b) the gap to the exact optimum (`kmeans_1d_exact`) on 10^5 weights, K=256 and 16;
(c) Deep Compression's init ablation (Han et al. 2016, fig. 5: linear / density / random + Lloyd).

    python benchmarks/kmeans1d.py [--n 10000000] [--repeats 3] [--out benchmarks/results/kmeans1d.json]

Writes JSON to --out and prints a markdown table. Never run by the test suite.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from netshrink.cluster import assign_nearest_1d, kmeans_1d, kmeans_1d_exact, kmeans_sse

log = logging.getLogger("bench.kmeans1d")

#: Weights of trained networks are heavy-tailed; Student-t with 3 degrees of freedom is a stand-in.
DF = 3


def heavy_tailed_weights(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_t(DF, n).astype(np.float32)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def sse_of_centroids(x: np.ndarray, centroids: np.ndarray) -> float:
    """SSE with every weight on its nearest centroid: the error a palette codec would store."""
    c = np.sort(np.asarray(centroids, dtype=np.float64).ravel())
    return kmeans_sse(x, c, assign_nearest_1d(x, c))


def run_ours(x: np.ndarray, k: int, repeats: int) -> dict:
    times, sse = [], None
    for r in range(repeats):
        (c, labels), t = timed(lambda k=k: kmeans_1d(x, k))
        times.append(t)
        sse = kmeans_sse(x, c, labels)
        log.info("ours K=%d repeat %d/%d: %.2f s", k, r + 1, repeats, t)
    return {"time_s": statistics.median(times), "times_s": times, "sse": sse}


def run_sklearn(x: np.ndarray, k: int) -> dict | None:
    try:
        from sklearn.cluster import KMeans
    except ImportError:
        log.warning("scikit-learn not installed: skipping it")
        return None
    log.info("sklearn KMeans(n_clusters=%d, n_init=1) on %d points: this can take minutes", k, x.size)
    km = KMeans(n_clusters=k, n_init=1, random_state=0)
    _, t = timed(lambda: km.fit(x.reshape(-1, 1)))
    log.info("sklearn: %.1f s, %d iterations", t, km.n_iter_)
    return {
        "time_s": t,
        "sse": sse_of_centroids(x, km.cluster_centers_),
        "n_iter": int(km.n_iter_),
        "runs": 1,
        "note": "run once" + (" (took > 60 s)" if t > 60 else ""),
    }


def run_faiss(x: np.ndarray, k: int) -> dict | None:
    try:
        import faiss
    except ImportError:
        log.warning("faiss not installed: skipping it")
        return None
    log.info("faiss.Kmeans(d=1, k=%d, niter=20, seed=0), default settings (subsamples %d points)", k, 256 * k)
    xf = np.ascontiguousarray(x.reshape(-1, 1), dtype=np.float32)
    km = faiss.Kmeans(1, k, niter=20, seed=0)
    _, t_train = timed(lambda: km.train(xf))
    _, t_assign = timed(lambda: km.index.search(xf, 1))
    return {
        "time_s": t_train + t_assign,
        "train_s": t_train,
        "assign_s": t_assign,
        "sse": sse_of_centroids(x, km.centroids),
    }


def speed_section(x: np.ndarray, k: int, repeats: int) -> dict:
    """(a) ours vs scikit-learn (and faiss) on the full data."""
    ours = run_ours(x, k, repeats)
    result = {"n": int(x.size), "k": k, "ours": ours, "sklearn": run_sklearn(x, k), "faiss": run_faiss(x, k)}
    for name in ("sklearn", "faiss"):
        other = result[name]
        if other:
            other["speedup_ours"] = other["time_s"] / ours["time_s"]
            other["sse_ratio_ours_over_it"] = ours["sse"] / other["sse"]
    return result


def gap_section(x: np.ndarray, ks: list[int]) -> list[dict]:
    """(b) relative SSE gap to the exact DP optimum, ours and scikit-learn's."""
    rows = []
    for k in ks:
        log.info("gap: exact DP on %d points, K=%d", x.size, k)
        (ce, le), t_exact = timed(lambda k=k: kmeans_1d_exact(x, k))
        exact = kmeans_sse(x, ce, le)
        (c, labels), t_ours = timed(lambda k=k: kmeans_1d(x, k))
        ours = kmeans_sse(x, c, labels)
        row = {
            "n": int(x.size),
            "k": k,
            "exact_sse": exact,
            "exact_s": t_exact,
            "ours_sse": ours,
            "ours_s": t_ours,
            "ours_gap": ours / exact - 1,
        }
        sk = run_sklearn(x, k)
        if sk:
            row.update(sklearn_sse=sk["sse"], sklearn_s=sk["time_s"], sklearn_gap=sk["sse"] / exact - 1)
        rows.append(row)
    return rows


def ablation_section(x: np.ndarray, k: int, optimal_sse: float) -> list[dict]:
    """(c) Deep Compression's initialisations + Lloyd (max_iter=300) against the optimal init."""
    rows = []
    for init in ("optimal", "linear", "density", "random"):
        log.info("ablation: init=%s", init)
        (c, labels), t = timed(lambda init=init: kmeans_1d(x, k, init=init, seed=0))
        sse = kmeans_sse(x, c, labels)
        rows.append(
            {
                "init": init,
                "sse": sse,
                "time_s": t,
                "sse_over_optimal": sse / optimal_sse,
                "used_centroids": int(np.unique(labels).size),
            }
        )
    return rows


def markdown(report: dict) -> str:
    a = report["speed"]
    lines = [
        f"### (a) n={a['n']:,} Student-t({DF}) float32 weights, K={a['k']}",
        "",
        "| method | time (s) | SSE | ours faster by | SSE ours / theirs |",
        "|---|---:|---:|---:|---:|",
        f"| netshrink kmeans_1d (median of {len(a['ours']['times_s'])}) | {a['ours']['time_s']:.2f} "
        f"| {a['ours']['sse']:.6g} | | |",
    ]
    for name, label in (("sklearn", "scikit-learn KMeans n_init=1"), ("faiss", "faiss Kmeans niter=20")):
        o = a[name]
        if o:
            note = f" ({o['note']})" if o.get("note") else ""
            lines.append(
                f"| {label}{note} | {o['time_s']:.2f} | {o['sse']:.6g} | {o['speedup_ours']:.1f}x "
                f"| {o['sse_ratio_ours_over_it']:.6f} |"
            )
    lines += [
        "",
        "### (b) gap to the exact optimum (kmeans_1d_exact)",
        "",
        "| n | K | exact SSE | exact (s) | ours gap | ours (s) | sklearn gap | sklearn (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["gap"]:
        sk = (f"{r['sklearn_gap']:.3e} | {r['sklearn_s']:.2f}") if "sklearn_gap" in r else "n/a | n/a"
        lines.append(
            f"| {r['n']:,} | {r['k']} | {r['exact_sse']:.6g} | {r['exact_s']:.2f} | {r['ours_gap']:.3e} "
            f"| {r['ours_s']:.2f} | {sk} |"
        )
    lines += [
        "",
        f"### (c) init ablation (Han et al. 2016), n={a['n']:,}, K={a['k']}, Lloyd max_iter=300",
        "",
        "| init | SSE | SSE / optimal | centroids used | time (s) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in report["ablation"]:
        lines.append(
            f"| {r['init']} | {r['sse']:.6g} | {r['sse_over_optimal']:.4f} | {r['used_centroids']} "
            f"| {r['time_s']:.2f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=10_000_000, help="weights in the speed test (a) and ablation (c)")
    p.add_argument("--k", type=int, default=256)
    p.add_argument("--gap-n", type=int, default=100_000, help="weights in the optimality-gap test (b)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/kmeans1d.json"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    x = heavy_tailed_weights(args.n, args.seed)
    speed = speed_section(x, args.k, args.repeats)
    report = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "numpy": np.__version__},
        "data": f"Student-t(df={DF}) float32, seed {args.seed}",
        "speed": speed,
        "gap": gap_section(heavy_tailed_weights(args.gap_n, args.seed + 1), sorted({args.k, 16}, reverse=True)),
        "ablation": ablation_section(x, args.k, speed["ours"]["sse"]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    log.info("wrote %s", args.out)
    print(markdown(report))


if __name__ == "__main__":
    main()
