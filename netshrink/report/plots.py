"""The figures of the HTML report, drawn with matplotlib's object API into PNG bytes.

`matplotlib.figure.Figure` is used directly rather than pyplot: no global figure state and no GUI
backend, so rendering works headless and in threads; PNG goes through the Agg canvas.
Every function takes report data (no file access) and returns the PNG bytes of one figure.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from netshrink.errors import NetshrinkError
from netshrink.report.inputs import BenchmarkRun, Sensitivity
from netshrink.report.sizes import FileReport, TensorReport

DPI = 110
SIZE_PARTS = (
    ("codebook", "codebooks", "#4c72b0"),
    ("indices", "indices", "#55a868"),
    ("positions", "positions (sparse)", "#c44e52"),
    ("values", "dense values", "#8172b2"),
)
REST_COLOUR = "#b0b0b0"
ENERGY_PARTS = (
    ("computation_pj", "computation", "#dd8452"),
    ("weights_pj", "weight movement", "#4c72b0"),
    ("activations_pj", "activation movement", "#55a868"),
)


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise NetshrinkError("the HTML report needs matplotlib: pip install 'matplotlib>=3.7'") from None
    return Figure(figsize=(width, height), layout="constrained")


def _png(fig: Any) -> bytes:
    """PNG bytes, reduced to a 256-colour palette: flat-coloured charts look the same at a third
    of the size, which keeps a report of a deep model small enough to mail."""
    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB").quantize(256)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _legend_outside(fig: Any) -> None:
    """Legend right of the axes, where it never hides a bar."""
    fig.legend(loc="outside right upper", fontsize=8)


def _layer_axes(names: Sequence[str], height: float = 3.2) -> tuple[Any, Any, list[int]]:
    """A figure whose width grows with the layer count, so 20 or 80 layer names stay readable."""
    fig = _figure(min(max(7.0, 0.28 * len(names) + 2.5), 18.0), height)
    ax = fig.subplots()
    xs = list(range(len(names)))
    ax.set_xticks(xs, names, rotation=70, ha="right", rotation_mode="anchor", fontsize=7)
    ax.set_xlim(-0.7, len(names) - 0.3)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return fig, ax, xs


def layer_label(tensor_name: str) -> str:
    return tensor_name.removesuffix(".weight")


def layer_weights(report: FileReport) -> list[TensorReport]:
    return [t for t in report.tensors if t.is_layer_weight]


def plot_bits(report: FileReport) -> bytes:
    """Stored bits per weight of each conv/linear layer, everything it costs in the file included."""
    weights = layer_weights(report)
    fig, ax, xs = _layer_axes([layer_label(t.name) for t in weights])
    ax.bar(xs, [t.bits_per_weight for t in weights], color="#4c72b0")
    numel = sum(t.numel for t in weights)
    mean = 8 * sum(t.total_bytes for t in weights) / numel if numel else 0.0
    ax.axhline(mean, color="black", linestyle="--", linewidth=1, label=f"all layers: {mean:.2f} bits/weight")
    ax.set_ylabel("bits per weight")
    ax.set_title("Stored bits per weight (codebook, indices and positions included; fp32 = 32)")
    ax.legend(fontsize=8, loc="upper right", framealpha=0.9)
    return _png(fig)


def plot_sparsity(report: FileReport) -> bytes:
    """Share of exact zeros in each decoded conv/linear weight."""
    weights = layer_weights(report)
    fig, ax, xs = _layer_axes([layer_label(t.name) for t in weights])
    ax.bar(xs, [100 * t.sparsity for t in weights], color="#c44e52")
    ax.set_ylim(0, 100)
    if not any(t.zeros for t in weights):
        ax.text(0.5, 0.5, "no zero weights in this file", transform=ax.transAxes, ha="center", color="#777")
    ax.set_ylabel("zero weights (%)")
    ax.set_title("Sparsity: zero weights per layer, counted on the decoded tensors")
    return _png(fig)


def plot_sizes(report: FileReport) -> bytes:
    """Bytes per layer split by stream kind, plus the rest of the file: the bars add up to its size."""
    weights = layer_weights(report)
    rest = sum(t.total_bytes for t in report.tensors if not t.is_layer_weight)
    names = [layer_label(t.name) for t in weights] + ["biases, norms", "header"]
    fig, ax, xs = _layer_axes(names, height=3.6)
    bottom = [0.0] * len(weights)
    for kind, label, colour in SIZE_PARTS:
        heights = [t.bytes[kind] / 1024 for t in weights]
        if any(heights):
            ax.bar(xs[: len(weights)], heights, bottom=bottom, label=label, color=colour)
            bottom = [b + h for b, h in zip(bottom, heights)]
    ax.bar(
        xs[len(weights) :],
        [rest / 1024, report.header_bytes / 1024],
        color=REST_COLOUR,
        label="other tensors and header",
    )
    ax.set_ylabel("KiB in the file")
    ax.set_title(f"Size breakdown: {report.file_bytes / 1024:,.1f} KiB on disk in all")
    _legend_outside(fig)
    return _png(fig)


def plot_energy(energy: Mapping[str, Any]) -> bytes:
    """Per-layer estimated energy (netshrink.energy JSON) as stacked parts, with each layer's original."""
    layers = energy["layers"]
    fig, ax, xs = _layer_axes([layer["name"] for layer in layers], height=3.6)
    bottom = [0.0] * len(layers)
    for key, label, colour in ENERGY_PARTS:
        heights = [layer[key] / 1e6 for layer in layers]
        ax.bar(xs, heights, bottom=bottom, label=label, color=colour, width=0.7)
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.scatter(
        xs,
        [layer["original_pj"] / 1e6 for layer in layers],
        marker="_",
        s=180,
        color="black",
        linewidths=2,
        zorder=3,
        label="original fp32 (total)",
    )
    ax.set_ylabel("µJ per inference")
    ax.set_title(
        f"Estimated energy per layer: {energy['total_pj'] / 1e6:.3g} µJ in all, "
        f"{energy['ratio']:.2f}x less than the original"
    )
    _legend_outside(fig)
    return _png(fig)


def plot_sensitivity(sens: Sensitivity) -> bytes:
    """Top-1 and KL on the calibration split when one layer at a time is palettized or pruned."""
    fig = _figure(11.0, 6.4)
    axes = fig.subplots(2, 2, sharex="col")
    layers = list(dict.fromkeys(curve.layer for curve in sens.curves))
    colours = _layer_colours(len(layers))
    for column, axis in enumerate(("bits", "sparsity")):
        top, bottom = axes[0][column], axes[1][column]
        for curve in (c for c in sens.curves if c.axis == axis):
            colour = colours[layers.index(curve.layer)]
            top.plot(curve.settings, [100 * v for v in curve.top1], marker=".", color=colour, label=curve.layer)
            bottom.plot(curve.settings, [max(v, 1e-6) for v in curve.kl], marker=".", color=colour)
        if sens.baseline_top1 is not None:
            top.axhline(100 * sens.baseline_top1, color="black", linestyle="--", linewidth=1)
        top.set_title(f"one layer {'palettized at b bits' if axis == 'bits' else 'pruned to sparsity s'}")
        top.set_ylabel("calibration top-1 (%)")
        bottom.set_yscale("log")
        bottom.set_ylabel("KL to uncompressed (nats)")
        bottom.set_xlabel("bits per weight (palette)" if axis == "bits" else "sparsity")
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=7, title="layer", title_fontsize=8)
    fig.suptitle(f"Sensitivity per layer on {sens.description}; dashed: uncompressed", fontsize=10)
    return _png(fig)


def _layer_colours(count: int) -> list[Any]:
    """Colours ordered by depth (viridis), so neighbouring layers look related and 50 layers stay distinct."""
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(i / max(count - 1, 1) * 0.9) for i in range(count)]


def plot_tradeoff(runs: Sequence[BenchmarkRun], ratio: float, accuracy: float | None) -> bytes:
    """Accuracy vs compression ratio of benchmark runs, with this file marked. Points carry their
    number in the run table under the plot: recipe names would overlap where runs cluster."""
    fig = _figure(9.0, 5.0)
    ax = fig.subplots()
    several_files = len({run.source for run in runs}) > 1
    key = (lambda run: f"{run.series}, {run.source}") if several_files else (lambda run: run.series)
    for index, name in enumerate(dict.fromkeys(map(key, runs))):
        colour = f"C{index % 10}"
        numbered = [(number, run) for number, run in enumerate(runs, 1) if key(run) == name]
        ax.scatter(
            [r.ratio for _, r in numbered],
            [100 * r.accuracy for _, r in numbered],
            color=colour,
            label=name,
            zorder=3,
            s=22,
        )
        for number, run in numbered:
            ax.annotate(
                str(number),
                (run.ratio, 100 * run.accuracy),
                textcoords="offset points",
                xytext=(3, 3),
                fontsize=7,
                color=colour,
            )
    ax.axvline(ratio, color="black", linestyle=":", linewidth=1, label=f"this file: {ratio:.2f}x")
    if accuracy is not None:
        ax.scatter([ratio], [100 * accuracy], marker="*", s=160, color="black", zorder=4, label="this file")
    if max(run.ratio for run in runs) / min(run.ratio for run in runs) > 8:
        ax.set_xscale("log")
    ax.set_xlabel("compression ratio (original fp32 bytes / file bytes)")
    ax.set_ylabel("top-1 after compression (%)")
    ax.set_title("Accuracy vs size of the benchmark runs")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")
    return _png(fig)
