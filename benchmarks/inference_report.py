"""The Markdown table and bar plot of `benchmarks/inference.py`'s results (its JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MB = 1e6
MEMORY_COLUMNS = "| kept compressed | file MB | tensors MB | peak RSS MB | own MB | own less kernels MB |"


def write_table(results: dict[str, Any], path: Path) -> None:
    setup, lines = results["setup"], _header(results)
    if results["lm"]:
        lines += ["", f"Generation: {setup['tokens']} new tokens, greedy, batch 1, from one fixed prompt.", ""]
        lines += _lm_table(results["lm"])
    if results["perplexity"]:
        lines += ["", "Perplexity on held-out-play windows, the same file dense and kept compressed.", ""]
        lines += _perplexity_table(results["perplexity"])
    if results["cnn"]:
        lines += [
            "",
            f"CNNs: batch-1 latency on a random input, median of {setup['repeats']} x {setup['cnn_passes']} passes. "
            "Kept compressed, only Linear and Embedding layers run from their codes; convolutions are decoded to "
            "dense. 'kept compressed' counts the file's palette- and PQ-coded weights that stayed codes.",
            "",
        ]
        lines += _cnn_table(results["cnn"])
    path.write_text("\n".join(lines) + "\n")


def _header(results: dict[str, Any]) -> list[str]:
    s, baseline = results["setup"], results["baseline"]
    kernels_note = "" if s["numba_kernels"] else " (its kernels off: the torch fallback ran)"
    kernels_mb = baseline["kernels_peak_rss_mb"] - baseline["peak_rss_mb"]
    return [
        "# Running from the compressed form: speed, memory, perplexity",
        "",
        f"    {s['command']}",
        "",
        f"Measured {s['date']} on {s['cpu']} ({s['cores']} cores; {s['platform']}), torch {s['torch']}, "
        f"numba {s['numba']}{kernels_note}; {s['threads']} torch and numba threads; every speed and memory row "
        f"in a fresh process, median of {s['repeats']} repeats after a warm-up.",
        "",
        f"Model's own memory (own MB): the process's peak RSS (VmHWM) minus {baseline['peak_rss_mb']:.0f} MB, the "
        "peak of a process that imported the same runtime (torch, netshrink's API, netshrink.inference and its "
        "numba kernels module) and loaded no model: the weights as loaded, loading's temporaries, activations, "
        f"the key/value cache, and for kept layers the compiled kernels, which alone take {kernels_mb:.0f} MB "
        "(a process that ran each kernel once on a small layer); 'own less kernels' takes them off. Tensors MB: "
        "the loaded module's parameters and buffers, each storage once. MB = 10^6 bytes.",
    ]


def _memory_cells(r: dict[str, Any]) -> str:
    return (
        f"| {_kept(r)} | {_mb(r['file_bytes'])} | {_mb(r['tensor_bytes'])} | {r['peak_rss_mb']:.0f} | "
        f"{r['model_memory_mb']:.0f} | {r['model_memory_less_kernels_mb']:.0f} |"
    )


def _lm_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [f"| model | mode {MEMORY_COLUMNS} tokens/s | each run |", "|---|---" + "|---:" * 7 + "|---|"]
    for r in rows:
        runs = ", ".join(f"{t:.1f}" for t in r["runs_tokens_per_second"])
        lines.append(
            f"| {Path(r['model']).name} | {r['mode']} {_memory_cells(r)} {r['tokens_per_second']:.1f} | "
            f"{runs} ({r['new_tokens']} tokens) |"
        )
    return lines


def _perplexity_table(rows: list[dict[str, Any]]) -> list[str]:
    tolerance = 100 * rows[0]["tolerance"]
    lines = [
        f"| file | windows x tokens | dense | kept compressed | relative difference | within {tolerance:g} % |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {Path(r['model']).name} | {r['windows']} x {r['window_tokens']} | {r['ppl_dense']:.4f} | "
            f"{r['ppl_kept']:.4f} | {100 * r['relative_difference']:.2g} % | {'yes' if r['same'] else 'NO'} |"
        )
    return lines


def _cnn_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [f"| file | mode {MEMORY_COLUMNS} latency ms |", "|---|---" + "|---:" * 7 + "|"]
    for r in rows:
        lines.append(f"| {Path(r['model']).name} | {r['mode']} {_memory_cells(r)} {r['latency_ms']:.2f} |")
    return lines


def _kept(row: dict[str, Any]) -> str:
    """Weights held as codes, of the weights the file codes by a palette or PQ."""
    coded = row.get("coded_weights")
    if not coded:
        return "-"
    return f"{row['kept_weights']:,} of {coded:,} ({100 * row['kept_weights'] / coded:.0f} %)"


def _mb(count: int | None) -> str:
    return "-" if count is None else f"{count / MB:.1f}"


def plot(results: dict[str, Any], path: Path) -> None:
    """Bars per model and mode: tokens per second, the model's own memory, CNN latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("tokens/s (generation)", results["lm"], "tokens_per_second"),
        ("model's own memory, MB", results["lm"] + results["cnn"], "model_memory_mb"),
        ("batch-1 latency, ms", results["cnn"], "latency_ms"),
    ]
    panels = [p for p in panels if p[1]]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.5), squeeze=False)
    for ax, (title, rows, key) in zip(axes[0], panels):
        colors = ["tab:blue" if r["mode"] == "dense" else "tab:orange" for r in rows]
        ax.bar(range(len(rows)), [r[key] for r in rows], color=colors, alpha=0.4 if key == "model_memory_mb" else 1)
        if key == "model_memory_mb":  # the solid part: without the compiled kernels
            ax.bar(range(len(rows)), [r["model_memory_less_kernels_mb"] for r in rows], color=colors)
        labels = [f"{Path(r['model']).stem} {r['mode']}" for r in rows]
        ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right", fontsize=7)
        ax.set_title(title)
    fig.suptitle(
        f"dense (blue), kept compressed (orange; pale: its compiled kernels), {results['setup']['threads']} threads"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
