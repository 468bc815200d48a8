"""Validation of netshrink.energy on AlexNet and GoogLeNet (shapes only, no weights).

What is compared, and why only this (see docs/energy.md for the search):

1. Layer shapes against published numbers: AlexNet's CONV MACs and weights (Chen et al., ISSCC 2016:
   "2.3 million weights ... 666 million MACs per 227x227 image"; JSSC 2017 Table V totals 2.66 G MACs
   per batch of 4) and GoogLeNet's per-module "ops" (Szegedy et al., CVPR 2015, Table 1), as R^2.
2. Per-layer energy against an independent Eyeriss-style model: the systolic-array energy model of
   H. Yang, Y. Zhu, J. Liu, "Energy-constrained compression for DNNs via weighted sparse projection
   and layer input masking", ICLR 2019 (constants and formulas of `energy_eval2` in
   github.com/hyang1990/model_based_energy_constrained_compression, sa_energy_model.py, commit
   9998038), evaluated here for dense layers. Its numbers are computed by this script; they are a
   second model, not a published measurement. The per-layer energies of Yang, Chen, Sze (CVPR 2017)
   that Deep k-Means correlates against (R^2 0.9931 AlexNet, 0.9675 GoogLeNet) are published only
   as bar charts, so they are not compared here.

Both models run at the Eyeriss setting: 16-bit weights and activations, batch 1, dense.

    python benchmarks/energy_validation.py [--out benchmarks/results/energy_validation]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reference_archs import ALEXNET_INPUT, GOOGLENET_INPUT, AlexNet, GoogLeNet

from netshrink.energy import EnergyConfig, WeightFormat, estimate, movement
from netshrink.flops import LayerShape, layer_shapes

BITS = 16
#: Szegedy et al. 2015, Table 1, column "ops" (MACs), per row.
GOOGLENET_TABLE1_OPS = {
    "conv1": 34e6,
    "conv2": 360e6,
    "inception3a": 128e6,
    "inception3b": 304e6,
    "inception4a": 73e6,
    "inception4b": 88e6,
    "inception4c": 100e6,
    "inception4d": 119e6,
    "inception4e": 170e6,
    "inception5a": 54e6,
    "inception5b": 71e6,
    "fc": 1e6,
}
SOURCES = {
    "alexnet_macs": "Chen, Krishna, Emer, Sze, ISSCC 2016 (Eyeriss), abstract: 666 M MACs, 2.3 M weights (CONV)",
    "googlenet_ops": "Szegedy et al., Going deeper with convolutions, CVPR 2015, Table 1 (ops column)",
    "eyeriss_traffic": "Chen, Krishna, Emer, Sze, JSSC 2017, Table V totals for AlexNet CONV1-5, batch 4: "
    "2.66 G MACs, 208.5 MB global-buffer and 15.4 MB DRAM accesses (16-bit words; DRAM also "
    "in Sec. VI-A; fmaps run-length compressed on the DRAM link)",
    "reference_model": "H. Yang, Zhu, Liu, ICLR 2019, energy model of github.com/hyang1990/"
    "model_based_energy_constrained_compression sa_energy_model.py@9998038 (energy_eval2, "
    "dense): e_mac 3, DRAM 200, cache 6, RF 1; 12x14 array; caches 100 kB input, 8 kB kernel",
}

# --- the reference model (H. Yang et al. 2019), dense layers, in units of one MAC ------------------------
E_MAC, E_MEM, E_CACHE, E_RF = 3.0, 200.0, 6.0, 1.0
ARRAY_M, ARRAY_N = 12, 14
INPUT_CACHE, KERNEL_CACHE = 100 * 1024 // 2, 8 * 1024 // 2  # 16-bit values


def _taps(size: int, kernel: int, stride: int, pad: int) -> int:
    """Sum over output positions of the kernel taps that land inside the (unpadded) input."""
    out = (size + 2 * pad - kernel) // stride + 1
    return sum(min(kernel, size + pad - o * stride) - max(0, pad - o * stride) for o in range(out))


def _cache_overlap(rows: list[int], kernel: int, stride: int, capacity: int) -> int:
    """Input values read from DRAM a second time because the input cache holds only some rows at once."""
    extra, begin, end = 0, 0, None
    while begin + kernel - 1 < len(rows):
        if end is not None and begin < end:
            extra += sum(rows[begin:end])
        held, end = 0, len(rows)
        for i in range(begin, len(rows)):
            if held + rows[i] > capacity:
                end = i
                break
            held += rows[i]
        begin += ((end - begin - kernel) // stride + 1) * stride
    return extra


def reference_energy(shape: LayerShape, module: nn.Module, kernel_cache: int = KERNEL_CACHE) -> float:
    """Energy of one dense layer in the ICLR 2019 model (weights + inputs/outputs + computation).
    `kernel_cache` past which conv weights are re-fetched from DRAM per tile of outputs."""
    if isinstance(module, nn.Linear):
        c, d = module.in_features, module.out_features
        x = (
            math.ceil(d / ARRAY_N) * E_CACHE * c
            + d * E_RF * c
            + E_MEM * (math.ceil(d / ARRAY_N) * max(0, c - INPUT_CACHE) + min(c, INPUT_CACHE))
            + E_MEM * d
        )
        return x + (E_MEM + E_CACHE + E_RF) * c * d + E_MAC * c * d
    c, h, w = shape.input_shape
    d, r, g = module.out_channels, module.kernel_size[0], module.groups
    xi, p = module.stride[0], module.padding[0]
    out_hw = shape.output_shape[1] * shape.output_shape[2]
    unfolded = c * _taps(h, r, xi, p) * _taps(w, r, xi, p)
    overlap = _cache_overlap([0] * p + [c * w] * h + [0] * p, r, xi, INPUT_CACHE)
    x = (
        unfolded * math.ceil(d / g / ARRAY_N) * E_CACHE
        + unfolded * math.ceil(d / g) * E_RF
        + (c * h * w + overlap + out_hw * d) * E_MEM
    )
    weights = shape.weight_numel
    tiles = math.ceil(out_hw / ARRAY_M)
    wt = (
        tiles * weights * E_CACHE
        + out_hw * weights * E_RF
        + (tiles * max(0, weights - kernel_cache) + min(kernel_cache, weights)) * E_MEM
    )
    macs = d * (c // g) * _taps(h, r, xi, p) * _taps(w, r, xi, p)  # in-bounds taps only
    return x + wt + E_MAC * macs


# --- comparison -----------------------------------------------------------------------------------------


def r_squared(xs: list[float], ys: list[float]) -> float:
    """Squared Pearson correlation (the R^2 of a least-squares line), as Deep k-Means reports it."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx, syy = sum((x - mx) ** 2 for x in xs), sum((y - my) ** 2 for y in ys)
    return sxy * sxy / (sxx * syy)


def group_of(name: str) -> str:
    """GoogLeNet row of Szegedy's Table 1 a layer belongs to (conv2 includes its 1x1 reduce)."""
    if name.startswith("inceptions."):
        return name.split(".")[1]
    return "conv2" if name.startswith("conv2") else name


def network_rows(model: nn.Module, input_shape: tuple[int, ...]) -> list[dict]:
    shapes = layer_shapes(model, input_shape)
    modules = dict(model.named_modules())
    formats = {s.weight_name: WeightFormat.dense(s.weight_numel, BITS) for s in shapes}
    ours = estimate(shapes, formats, EnergyConfig(activation_bits=BITS, original_weight_bits=BITS), input_shape)
    unit = EnergyConfig().mac_pj(BITS, BITS)  # report ours in units of a 16-bit MAC too
    return [
        {
            "layer": s.name,
            "macs": s.macs,
            "weights": s.weight_numel,
            "ours": e.total_pj / unit,
            "ours_computation": e.computation_pj / unit,
            "ours_weights": e.weights_pj / unit,
            "ours_activations": e.activations_pj / unit,
            "reference": reference_energy(s, modules[s.name]),
            "reference_weights_once": reference_energy(s, modules[s.name], kernel_cache=10**12),
        }
        for s, e in zip(shapes, ours.layers)
    ]


def grouped(rows: list[dict]) -> list[dict]:
    sums: dict[str, dict] = defaultdict(lambda: defaultdict(float))
    for row in rows:
        for key in (
            "macs",
            "weights",
            "ours",
            "ours_computation",
            "ours_weights",
            "ours_activations",
            "reference",
            "reference_weights_once",
        ):
            sums[group_of(row["layer"])][key] += row[key]
    return [{"layer": name, **values} for name, values in sums.items()]


def summarize(rows: list[dict]) -> dict:
    ours, ref = [r["ours"] for r in rows], [r["reference"] for r in rows]
    for row in rows:
        row["ours_share"], row["reference_share"] = row["ours"] / sum(ours), row["reference"] / sum(ref)
    once = [r["reference_weights_once"] for r in rows]
    return {
        "r2": r_squared(ours, ref),
        "r2_weights_fetched_once": r_squared(ours, once),
        "layers": len(rows),
        "rows": rows,
    }


def eyeriss_traffic(model: nn.Module, batch: int = 4) -> dict:
    """Our model's DRAM and buffer traffic (MB of 16-bit words) for AlexNet CONV1-5 and a batch of 4,
    next to the Eyeriss chip's measured totals. Our estimate is per inference, so weights are charged
    once per frame (upper bound) and, in the second figure, once per batch as the chip does."""
    config = EnergyConfig(activation_bits=BITS, original_weight_bits=BITS)
    totals: dict[tuple[str, str], float] = defaultdict(float)
    for shape in layer_shapes(model, ALEXNET_INPUT):
        if shape.kernel:
            for kind, level, bits in movement(shape, WeightFormat.dense(shape.weight_numel, BITS), config):
                totals[kind, level] += bits / 8 / 1e6
    return {
        level: {
            "ours_weights_every_frame": batch * (totals["weights", level] + totals["activations", level]),
            "ours_weights_once": totals["weights", level] + batch * totals["activations", level],
            "measured": measured,
        }
        for level, measured in (("dram", 15.4), ("buffer", 208.5))
    }


def run() -> dict:
    with torch.device("meta"):
        alexnet, googlenet = AlexNet(), GoogLeNet()
    alex_rows = network_rows(alexnet, ALEXNET_INPUT)
    goog_rows = network_rows(googlenet, GOOGLENET_INPUT)
    goog_modules = grouped(goog_rows)
    conv = [r for r in alex_rows if r["layer"].startswith("conv")]
    table = [(r["macs"], GOOGLENET_TABLE1_OPS[r["layer"]]) for r in goog_modules]
    checked = [(m, t) for (m, t), r in zip(table, goog_modules) if r["layer"] != "conv1"]
    return {
        "setting": f"{BITS}-bit weights and activations, batch 1, dense; energies in units of one {BITS}-bit MAC",
        "sources": SOURCES,
        "shapes": {
            "alexnet_conv_macs": sum(r["macs"] for r in conv),
            "alexnet_conv_weights": sum(r["weights"] for r in conv),
            "published_alexnet_conv": {"macs": 666e6, "weights": 2.3e6},
            "googlenet_table1": [
                {"row": r["layer"], "macs": m, "table_ops": t} for (m, t), r in zip(table, goog_modules)
            ],
            "googlenet_r2_without_conv1": r_squared(*zip(*checked)),
            "googlenet_r2_all_rows": r_squared(*zip(*table)),
        },
        "eyeriss_alexnet_traffic_mb": eyeriss_traffic(alexnet),
        "energy": {
            "alexnet": summarize(alex_rows),
            "googlenet_layers": summarize(goog_rows),
            "googlenet_modules": summarize(goog_modules),
        },
    }


def markdown(result: dict) -> str:
    shapes, energy = result["shapes"], result["energy"]
    lines = [
        "# Energy model validation (benchmarks/energy_validation.py)",
        "",
        f"Setting: {result['setting']}.",
        "",
        "## Layer shapes against published counts",
        "",
        f"AlexNet CONV: {shapes['alexnet_conv_macs']:,} MACs, {shapes['alexnet_conv_weights']:,} weights "
        f"(published: 666 M MACs, 2.3 M weights; {SOURCES['alexnet_macs']}).",
        "",
        f"GoogLeNet per Table 1 row ({SOURCES['googlenet_ops']}): R^2 = "
        f"{shapes['googlenet_r2_without_conv1']:.4f} without conv1, {shapes['googlenet_r2_all_rows']:.4f} with it "
        "(the table's conv1 row, 2.7K params / 34M ops, does not fit the 7x7x3x64 convolution it describes).",
        "",
        "| row | our MACs | Table 1 ops | ratio |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r['row']} | {r['macs'] / 1e6:.1f} M | {r['table_ops'] / 1e6:.0f} M | {r['macs'] / r['table_ops']:.3f} |"
        for r in shapes["googlenet_table1"]
    ]
    traffic = result["eyeriss_alexnet_traffic_mb"]
    lines += [
        "",
        "## Memory traffic against the Eyeriss chip (AlexNet CONV1-5, batch 4)",
        "",
        f"Measured: {SOURCES['eyeriss_traffic']}.",
        "",
        "| level | ours, weights fetched every frame | ours, weights once per batch | measured |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {level} | {t['ours_weights_every_frame']:.1f} MB | {t['ours_weights_once']:.1f} MB | "
        f"{t['measured']:.1f} MB |"
        for level, t in traffic.items()
    ]
    lines += [
        "",
        "## Per-layer energy against an independent Eyeriss-style model",
        "",
        f"Reference: {SOURCES['reference_model']}. Computed by this script, not a published figure.",
        "",
    ]
    for key, title in (("alexnet", "AlexNet"), ("googlenet_modules", "GoogLeNet (per Table 1 row)")):
        block = energy[key]
        lines += [
            f"### {title}: R^2 = {block['r2']:.4f} over {block['layers']} layers",
            "",
            f"With that model's conv weights fetched from DRAM once (its 8 kB kernel cache made unbounded, "
            f"as in our model): R^2 = {block['r2_weights_fetched_once']:.4f}.",
            "",
            "| layer | MACs | ours (MAC units) | share | of it: comp / weights / act | reference | share |",
            "|---|---:|---:|---:|---|---:|---:|",
        ]
        lines += [
            f"| {r['layer']} | {r['macs'] / 1e6:.1f} M | {r['ours']:.3g} | {r['ours_share']:.1%} | "
            f"{r['ours_computation'] / r['ours']:.0%} / {r['ours_weights'] / r['ours']:.0%} / "
            f"{r['ours_activations'] / r['ours']:.0%} | {r['reference']:.3g} | {r['reference_share']:.1%} |"
            for r in block["rows"]
        ]
        lines.append("")
    layers = energy["googlenet_layers"]
    lines.append(
        f"GoogLeNet per conv layer ({layers['layers']} layers): R^2 = {layers['r2']:.4f} "
        f"({layers['r2_weights_fetched_once']:.4f} with weights fetched once)."
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/energy_validation", help="output path without suffix")
    args = parser.parse_args()
    result = run()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(result, indent=1) + "\n")
    Path(f"{args.out}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
