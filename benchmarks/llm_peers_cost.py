"""What each peer quantizer of llm_peers.py costs on a model of SmolLM2-135M's shape, one thread.

A random Llama (vocab 49152, dim 576, 30 layers, 9 heads, 3 key/value heads, ffn 1536, tied head)
stands in for SmolLM2-135M: the time of every peer here depends on the shapes, not on the values.
Each peer quantizes the block Linear weights (106 M weights) of a fresh copy at `--bits`, with
torch and every library on one thread; the seconds are those of its quantize + dequantize calls.

Writes benchmarks/results/llm-peers-cost.json (after every peer) and llm-peers-cost.md.

    OMP_NUM_THREADS=1 python benchmarks/llm_peers_cost.py --bits 3
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

import torch
from llm_peers import PeerResult, run_peer

from netshrink.zoo.llama import Llama

REPO = Path(__file__).resolve().parents[1]
SMOLLM2_SHAPE = dict(vocab=49152, dim=576, layers=30, heads=9, kv_heads=3, ffn=1536)
#: (peer, group, options): coremltools' group counts output channels sharing one table.
RUNS: list[tuple[str, int | None, dict[str, Any]]] = [
    ("rtn", 64, {}),
    ("coreml", 16, {}),
    ("hqq", 64, {}),
    ("torchao", 64, {"kernel": "intx"}),
    ("torchao", 64, {"kernel": "int4"}),
]


def cost_row(name: str, group: int | None, opts: dict[str, Any], bits: int) -> dict[str, Any]:
    torch.manual_seed(0)
    model = Llama(**SMOLLM2_SHAPE).eval()
    peer_bits = 4 if opts.get("kernel") == "int4" else bits
    result = run_peer(name, model, peer_bits, group, **opts)
    if isinstance(result, PeerResult):
        return {"peer": name, "options": opts, **vars(result)}
    return {"peer": name, "options": opts, "bits": peer_bits, "group": group, "unavailable": result}


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Peer quantizer cost on a SmolLM2-135M-shaped model ({result['machine']}, 1 thread)",
        "",
        f"Random weights of SmolLM2-135M's shape, the {result['rows'][0]['weights'] if result['rows'] else 0:,} "
        "block Linear weights; seconds of the quantize + dequantize calls on one thread of a machine other "
        "jobs shared, so a guide to cost, not a speed benchmark. coremltools' group counts output channels "
        "per table; the others' group counts input weights per scale.",
        "",
        "| peer | bits | group | bits/weight | stored MB | seconds | library |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        if "unavailable" in row:
            lines.append(
                f"| {row['peer']} {row['options']} | {row['bits']} | {row['group']} | - | - | - | "
                f"{row['unavailable']} |"
            )
            continue
        lines.append(
            f"| {row['name']} | {row['bits']} | {row['group']} | {row['linear_bits_per_weight']:.3f} | "
            f"{row['stored_bytes'] / 1e6:.2f} | {row['seconds']:.1f} | {row['library']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, default=3)
    parser.add_argument("--peers", nargs="*", default=None, help="peer names to run (default: all)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "llm-peers-cost.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = {"machine": platform.processor() or platform.machine(), "shape": SMOLLM2_SHAPE, "rows": []}
    for name, group, opts in RUNS:
        if args.peers and name not in args.peers:
            continue
        result["rows"].append(cost_row(name, group, opts, args.bits))
        print(json.dumps(result["rows"][-1], default=str), flush=True)
        args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))


if __name__ == "__main__":
    main()
