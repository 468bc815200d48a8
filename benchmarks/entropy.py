"""Benchmark the shared entropy coder against Huffman, bit packing and general-purpose compressors.

Streams are the ones a .nsk file holds: 5-bit palette indices of Laplace weights (linear and
quantile bins), gap indices of a 90 %-sparse mask, 8-bit PQ codes with uneven cluster sizes, and a
uniform control. Every size is in bytes and compared with the empirical entropy n*H/8, the floor
for any coder with one static model per stream.

Huffman is constriction's `symbol.huffman` tree built from the same counts, and is charged the same
count table as our rANS mode (a decoder needs the counts, or code lengths, to rebuild the tree).
constriction's symbol codes have no batch call, so Huffman times include a Python loop per symbol.

    python benchmarks/entropy.py [--out benchmarks/results/entropy.json] [--n 1000000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import lzma
import platform
import statistics
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import constriction
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netshrink.format import entropy  # noqa: E402
from netshrink.format.codecs.sparse import gaps_from_positions  # noqa: E402


def laplace_palette(n: int, rng: np.random.Generator, bins: str) -> np.ndarray:
    """Indices of Laplace weights clustered into 32 bins, linear in value or by quantile."""
    weights = rng.laplace(0.0, 1.0, n)
    if bins == "linear":
        edges = np.linspace(weights.min(), weights.max(), 33)[1:-1]
    else:
        edges = np.quantile(weights, np.linspace(0, 1, 33)[1:-1])
    return np.searchsorted(edges, weights)


def sparse_gaps(n: int, rng: np.random.Generator) -> np.ndarray:
    """Gap symbols (alphabet 2**16) of a random mask with 10 % nonzeros: about n symbols."""
    positions = np.flatnonzero(rng.random(10 * n) < 0.1)
    return gaps_from_positions(positions, 65536)


def pq_codes(n: int, rng: np.random.Generator) -> np.ndarray:
    """8-bit PQ codes whose 256 clusters have log-normal sizes, as k-means leaves them."""
    sizes = rng.lognormal(0.0, 1.0, 256)
    return rng.choice(256, n, p=sizes / sizes.sum())


def build_streams(n: int, seed: int) -> dict[str, tuple[np.ndarray, int]]:
    rng = np.random.default_rng(seed)
    return {
        "palette32_linear": (laplace_palette(n, rng, "linear"), 32),
        "palette32_quantile": (laplace_palette(n, rng, "quantile"), 32),
        "sparse_gaps_90pct": (sparse_gaps(n, rng), 65536),
        "pq_codes_256": (pq_codes(n, rng), 256),
        "uniform_256": (rng.integers(0, 256, n), 256),
    }


def median_seconds(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def huffman_codec(symbols: np.ndarray, freqs_dense: np.ndarray) -> tuple[Callable, Callable]:
    """Encode/decode closures for a Huffman code over the dense range [0, max symbol]."""
    probabilities = freqs_dense.astype(np.float64)
    values = symbols.tolist()

    def encode() -> np.ndarray:
        coder = constriction.symbol.QueueEncoder()
        tree = constriction.symbol.huffman.EncoderHuffmanTree(probabilities)
        for value in values:
            coder.encode_symbol(value, tree)
        return coder.get_compressed_and_bitrate()

    def decode(words: np.ndarray) -> np.ndarray:
        decoder = constriction.symbol.QueueDecoder(words)
        tree = constriction.symbol.huffman.DecoderHuffmanTree(probabilities)
        return np.array([decoder.decode_symbol(tree) for _ in range(len(values))])

    return encode, decode


def measure(symbols: np.ndarray, alphabet: int, repeats: int) -> dict[str, dict]:
    """Size and median encode/decode time of every method on one stream."""
    n = symbols.size
    used, freqs, ranks = entropy.symbol_histogram(symbols)
    table_bytes = len(entropy.encode_count_table(used, freqs))
    width = max(1, (alphabet - 1).bit_length())
    raw_dtype = np.uint8 if alphabet <= 256 else np.uint16
    raw = symbols.astype(raw_dtype).tobytes()
    results: dict[str, dict] = {}

    def record(name: str, encode: Callable, decode: Callable, size: Callable, check: Callable, note: str) -> None:
        enc_s, encoded = median_seconds(encode, repeats)
        dec_s, decoded = median_seconds(lambda: decode(encoded), repeats)
        assert check(decoded), f"{name} did not round-trip"
        results[name] = {"bytes": size(encoded), "encode_s": enc_s, "decode_s": dec_s, "note": note}

    exact = lambda out: np.array_equal(out, symbols)  # noqa: E731
    record(
        "ours (auto)",
        lambda: entropy.encode_symbols(symbols, alphabet),
        lambda b: entropy.decode_symbols(b, n, alphabet),
        len,
        exact,
        "mode chosen by encode_symbols",
    )
    results["ours (auto)"]["note"] = entropy.stream_mode(entropy.encode_symbols(symbols, alphabet))
    record(
        "ours rANS",
        lambda: entropy.encode_rans(used, freqs, ranks),
        lambda b: entropy.decode_symbols(b, n, alphabet),
        len,
        exact,
        "rANS mode forced; incl. table",
    )
    dense_freqs = np.bincount(symbols)
    huff_enc, huff_dec = huffman_codec(symbols, dense_freqs)
    record(
        "huffman",
        huff_enc,
        lambda wb: huff_dec(wb[0]),
        lambda wb: -(-wb[1] // 8) + table_bytes,
        exact,
        f"incl. our {table_bytes}-byte count table; per-symbol Python loop (no batch API)",
    )
    record(
        "bit packing",
        lambda: entropy.pack_bits(symbols, width),
        lambda b: entropy.unpack_bits(b, width, n),
        len,
        exact,
        f"{width} bits/symbol",
    )
    same_raw = lambda out: out == raw  # noqa: E731
    raw_name = np.dtype(raw_dtype).name
    record("zlib -9", lambda: zlib.compress(raw, 9), zlib.decompress, len, same_raw, f"level 9 on raw {raw_name}")
    record("lzma", lambda: lzma.compress(raw), lzma.decompress, len, same_raw, f"preset 6 on raw {raw_name}")
    return results


def run(n: int, repeats: int, seed: int) -> dict:
    report = {
        "n": n,
        "repeats": repeats,
        "seed": seed,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "streams": {},
    }
    for name, (symbols, alphabet) in build_streams(n, seed).items():
        entropy_bytes = entropy.empirical_entropy_bits(symbols) / 8
        methods = measure(symbols, alphabet, repeats)
        for row in methods.values():
            row["overhead_pct"] = 100.0 * (row["bytes"] / entropy_bytes - 1.0)
        report["streams"][name] = {
            "count": int(symbols.size),
            "alphabet": alphabet,
            "entropy_bytes": entropy_bytes,
            "methods": methods,
        }
    return report


def markdown_table(report: dict) -> str:
    lines = [
        "| stream | n | entropy B | method | bytes | vs entropy | enc ms | dec ms | note |",
        "|---|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for name, stream in report["streams"].items():
        for method, row in stream["methods"].items():
            timing = f"{1e3 * row['encode_s']:.1f} | {1e3 * row['decode_s']:.1f}"
            lines.append(
                f"| {name} | {stream['count']} | {stream['entropy_bytes']:.0f} | {method} | "
                f"{row['bytes']} | {row['overhead_pct']:+.3f} % | {timing} | {row['note']} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/entropy.json"))
    parser.add_argument("--n", type=int, default=1_000_000, help="symbols per stream")
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats (median reported)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    report = run(args.n, args.repeats, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(markdown_table(report))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
