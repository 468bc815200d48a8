"""Speed of a Linear layer run from its codes (`netshrink.load(path, keep_compressed=True)`) against
the dense fp32 `nn.Linear`, at batch 1 (a token of generation) and at a larger batch.

Layers of SmolLM2-135M's shape: an MLP down projection (576 x 1536) and the tied LM head
(49152 x 576); codes as its recipes store them: a 3-bit palette per 2 output channels, an 8-bit
palette per tensor, PQ with 256 codewords of 4 and 8 weights. The codes are random (a kernel's time
does not depend on the values). Single thread unless --threads; the median of --repeats calls.

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/compressed_linear.py \
        [--repeats 25] [--out benchmarks/results/compressed_linear.json]

Writes JSON to --out and prints a markdown table. Never run by the test suite.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from netshrink.inference import CompressedLinear, kernels
from netshrink.inference.weights import PaletteWeights, PQWeights

SHAPES = {"mlp down 576x1536": (576, 1536), "lm head 49152x576": (49152, 576)}


def palette(rows: int, columns: int, k: int, rows_per_book: int) -> PaletteWeights:
    labels = torch.randint(0, k, (rows, columns))
    packed = kernels.pack_nibbles(labels) if k <= 16 else kernels.pack_bytes(labels)
    return PaletteWeights(packed, torch.randn(rows // rows_per_book, k), rows_per_book, columns)


def pq(rows: int, columns: int, k: int, d: int) -> PQWeights:
    return PQWeights(torch.randint(0, k, (rows, columns // d), dtype=torch.uint8), torch.randn(k, d))


CODES: dict[str, Callable[[int, int], PaletteWeights | PQWeights]] = {
    "palette 3 bits per 2 channels": lambda r, c: palette(r, c, 8, 2),
    "palette 8 bits per tensor": lambda r, c: palette(r, c, 256, r),
    "pq d=4 k=256": lambda r, c: pq(r, c, 256, 4),
    "pq d=8 k=256": lambda r, c: pq(r, c, 256, 8),
}


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # compiles (numba) and warms the caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def tensor_bytes(module: torch.nn.Module) -> int:
    """Bytes of the module's parameters and buffers, each storage counted once: a tied head, or two
    layers over one compressed storage, take the memory once."""
    storages = {
        t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in [*module.parameters(), *module.buffers()]
    }
    return sum(storages.values())


def measure(shape: tuple[int, int], codes: str, batch: int, repeats: int) -> dict:
    rows, columns = shape
    torch.manual_seed(0)
    dense = torch.nn.Linear(columns, rows, bias=False)
    kept = CompressedLinear(CODES[codes](rows, columns))
    x = torch.randn(batch, columns)
    with torch.no_grad():
        result = {"dense_ms": median_ms(lambda: dense(x), repeats), "kept_ms": median_ms(lambda: kept(x), repeats)}
        numba, kernels.NUMBA = kernels.NUMBA, False
        try:
            result["torch_fallback_ms"] = median_ms(lambda: kept(x), max(3, repeats // 5))
        finally:
            kernels.NUMBA = numba
    return {**result, "dense_bytes": tensor_bytes(dense), "kept_bytes": tensor_bytes(kept)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (numba: NUMBA_NUM_THREADS)")
    parser.add_argument("--out", default="benchmarks/results/compressed_linear.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    print("| layer | codes | batch | dense ms | kept ms | torch fallback ms | dense MB | kept MB |")
    print("|---|---|---|---|---|---|---|---|")
    for layer, shape in SHAPES.items():
        for codes in CODES:
            for batch in args.batches:
                row = {"layer": layer, "codes": codes, "batch": batch, **measure(shape, codes, batch, args.repeats)}
                rows.append(row)
                print(
                    f"| {layer} | {codes} | {batch} | {row['dense_ms']:.3f} | {row['kept_ms']:.3f} | "
                    f"{row['torch_fallback_ms']:.3f} | {row['dense_bytes'] / 1e6:.1f} | {row['kept_bytes'] / 1e6:.1f} |",
                    flush=True,
                )
    meta = {"threads": args.threads, "numba": kernels.NUMBA, "torch": torch.__version__, "cpu": platform.processor()}
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
