"""One self-contained HTML page about a .nsk file: summary, plots and the per-tensor table.

`netshrink report FILE.nsk -o report.html` and `netshrink compress ... --report report.html`.
Self-contained means it opens offline and can be mailed: CSS is inline and every plot is a PNG
inlined as base64 (`report_plots`). Each plot is a `<figure class="plot" id="plot-...">`; a plot
whose input is absent (no --runs, no --sensitivity, energy unavailable for a model outside the
zoo) is a `<figure class="plot-missing">` that says why, never a crash. A small inline script
sets `data-images` on <body> to "ok" once every image has decoded, so a headless browser can
check the page renders (tests/test_html_report.py).
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from netshrink import metrics
from netshrink.errors import NetshrinkError
from netshrink.report import plots
from netshrink.report.inputs import BenchmarkRun, Sensitivity, read_runs, read_sensitivity
from netshrink.report.sizes import WEIGHTS_RATIO_LABEL, FileReport, TensorReport

PLOT_IDS = ("plot-bits", "plot-sparsity", "plot-sizes", "plot-energy", "plot-sensitivity", "plot-tradeoff")
STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;margin:0;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:20px 28px 40px;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.sub{color:#666;margin:0 0 14px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:10px}
.card{background:#f3f5f8;border-radius:6px;padding:8px 12px}.card b{display:block;font-size:19px}
.card span{color:#555;font-size:12px}
figure{margin:14px 0}figure img{max-width:100%;height:auto;display:block}
figcaption{color:#555;font-size:12.5px;margin-top:4px}
.plot-missing{background:#fff8e6;border-left:4px solid #e0a800;padding:8px 12px}
pre{background:#f3f5f8;padding:8px 12px;overflow-x:auto;font-size:12px}
table{border-collapse:collapse;font-size:12px;width:100%}table.runs{width:auto;margin-top:8px}th,td{padding:3px 6px;border-bottom:1px solid #e4e4e4}
th{background:#eef1f5;position:sticky;top:0;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
details{margin-top:10px}summary{cursor:pointer;color:#335}
"""
READY_SCRIPT = """<script>
window.addEventListener("load", function () {
  var ok = Array.prototype.every.call(document.images, function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute("data-images", ok ? "ok" : "broken");
});
</script>"""


@dataclass
class ReportExtras:
    """What the page shows beyond the file: benchmark runs, sensitivity, accuracy and energy."""

    runs: list[BenchmarkRun] = field(default_factory=list)
    sensitivity: Sensitivity | None = None
    evaluation: dict[str, Any] | None = None  # {"metric", "dataset", "before", "after"} when measured
    energy: dict[str, Any] | None = None  # netshrink.energy JSON ({"available": False, "reason"} when not)


def read_extras(runs: Sequence[str] = (), sensitivity: str | None = None) -> ReportExtras:
    """Read the user's JSON files up front, so a bad one fails before any compression is spent."""
    return ReportExtras(
        [run for path in runs for run in read_runs(path)], read_sensitivity(sensitivity) if sensitivity else None
    )


def write_html_report(report: FileReport, out: str | Path, extras: ReportExtras) -> Path:
    """Render the page and write it atomically (a half-written report never replaces a good one)."""
    out = Path(out)
    text = render_html(report, extras)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    except OSError as exc:
        raise NetshrinkError(f"{out}: cannot write the report ({exc.strerror or exc})") from None
    return out


def render_html(report: FileReport, extras: ReportExtras) -> str:
    """The whole page as one string: what a reader sees first (sizes) comes first, the detail last."""
    name = html.escape(Path(report.file).name)
    body = [
        f"<h1>netshrink report: {name}</h1>",
        f'<p class="sub">{html.escape(_model_line(report))}</p>',
        _summary(report, extras),
        _recipe(report),
        "<h2>Per layer</h2>",
        *_figures(report, extras),
        "<h2>Tensors</h2>",
        _tensor_tables(report),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>netshrink report: {name}</title><style>{STYLE}</style></head>\n"
        f'<body data-images="pending"><main>\n{chr(10).join(body)}\n</main>\n{READY_SCRIPT}</body></html>\n'
    )


def _model_line(report: FileReport) -> str:
    model = report.model
    parts = [f"model {model.name or model.class_name or 'unknown'}"]
    if model.dataset:
        parts.append(f"data set {model.dataset}")
    return ", ".join(parts) + f"; {len(report.tensors)} tensors"


# --- summary ----------------------------------------------------------------------------------------


def _summary(report: FileReport, extras: ReportExtras) -> str:
    cards = [
        (f"{report.file_bytes:,} B", "file on disk"),
        (f"{report.original_bytes:,} B", "original (fp32, every tensor)"),
        (f"{report.ratio:.2f}x", "ratio: original bytes / file bytes"),
        (f"{report.weights_ratio:.2f}x", WEIGHTS_RATIO_LABEL),
        (f"{report.header_bytes:,} B", "header"),
    ]
    evaluation = extras.evaluation
    if evaluation and evaluation.get("after") is not None:
        cards.append(_score_card(evaluation))
    energy = extras.energy
    if energy and energy.get("available"):
        cards.append(
            (
                f"{energy['ratio']:.2f}x",
                f"estimated energy ratio ({energy['total_pj'] / 1e6:.3g} µJ vs "
                f"{energy['original_total_pj'] / 1e6:.3g} µJ per inference, netshrink.energy)",
            )
        )
    items = "".join(f'<div class="card"><b>{html.escape(v)}</b><span>{html.escape(k)}</span></div>' for v, k in cards)
    return f'<h2>Summary</h2><div class="cards" id="summary">{items}</div>'


def _recipe(report: FileReport) -> str:
    if not report.recipe:
        return '<h2>Recipe</h2><p id="recipe">none recorded: every tensor is stored exactly (a checkpoint).</p>'
    recipe = dict(report.recipe)
    head = f"<b>{html.escape(str(recipe.pop('name', 'unnamed')))}</b>"
    description = html.escape(str(recipe.pop("description", "") or "").strip())
    steps = html.escape(yaml.safe_dump(recipe, sort_keys=False, default_flow_style=None, width=110))
    return f'<h2>Recipe</h2><div id="recipe"><p>{head}: {description}</p><pre>{steps}</pre></div>'


def _score_card(evaluation: dict[str, Any]) -> tuple[str, str]:
    """The held-out score after compression, and before with the change, in the metric's own form."""
    metric, after, before = evaluation.get("metric") or metrics.ACCURACY, evaluation["after"], evaluation.get("before")
    change = (
        ""
        if before is None
        else f"; before {metrics.show_value(metric, before)}, change {metrics.show_change(metric, after, before)}"
    )
    label = f"{evaluation.get('dataset', '')} held-out {metric} after compression{change}"
    return metrics.show_value(metric, after), label


# --- figures ----------------------------------------------------------------------------------------


def _figures(report: FileReport, extras: ReportExtras) -> list[str]:
    evaluation = extras.evaluation or {}
    # only an accuracy goes on the accuracy axis of the benchmark runs
    accuracy = evaluation.get("after") if evaluation.get("metric", metrics.ACCURACY) == metrics.ACCURACY else None
    energy = extras.energy or {}
    return [
        _figure("plot-bits", lambda: plots.plot_bits(report), "Bits each conv/linear weight costs in the file."),
        _figure("plot-sparsity", lambda: plots.plot_sparsity(report), "Zero weights per layer."),
        _figure(
            "plot-sizes",
            lambda: plots.plot_sizes(report),
            "Bytes per layer by stream kind; the bars add up to the file size.",
        ),
        _figure(
            "plot-energy",
            lambda: plots.plot_energy(energy),
            "Estimated inference energy per layer (batch 1; netshrink.energy: 45 nm costs, Eyeriss memory "
            "hierarchy), split into computation and data movement; black ticks: the same layer dense in fp32.",
            None if energy.get("available") else f"Energy unavailable: {energy.get('reason', 'not estimated')}",
        ),
        _figure(
            "plot-sensitivity",
            lambda: plots.plot_sensitivity(extras.sensitivity),
            "Accuracy and KL divergence when only that layer is compressed.",
            None
            if extras.sensitivity
            else "No sensitivity curves: pass --sensitivity FILE (written by `netshrink sensitivity`).",
        ),
        _figure(
            "plot-tradeoff",
            lambda: plots.plot_tradeoff(extras.runs, report.ratio, accuracy),
            "Each benchmark run at its ratio and accuracy; dotted line: this file's ratio"
            + (", star: its measured accuracy." if accuracy is not None else "."),
            None
            if extras.runs
            else "No benchmark runs: pass --runs BENCH.json (e.g. benchmarks/results/oneshot-resnet20.json).",
            _runs_table(extras.runs),
        ),
    ]


def _figure(plot_id: str, draw: Callable[[], bytes], caption: str, missing: str | None = None, below: str = "") -> str:
    if missing is not None:
        return f'<figure class="plot-missing" id="{plot_id}"><figcaption>{html.escape(missing)}</figcaption></figure>'
    data = base64.b64encode(draw()).decode("ascii")
    return (
        f'<figure class="plot" id="{plot_id}"><img alt="{plot_id}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption>{below}</figure>"
    )


def _runs_table(runs: Sequence[BenchmarkRun]) -> str:
    """The numbered runs of the trade-off plot."""
    rows = "".join(
        f'<tr><td class="n">{number}</td><td>{html.escape(run.series)}</td><td>{html.escape(run.label)}'
        f'</td><td class="n">{run.ratio:.2f}x</td><td class="n">{100 * run.accuracy:.2f}%</td>'
        f"<td>{html.escape(run.source)}</td></tr>"
        for number, run in enumerate(runs, 1)
    )
    head = "<tr><th>#</th><th>model (tool)</th><th>run</th><th>ratio</th><th>top-1</th><th>from</th></tr>"
    return f'<table class="runs" id="runs"><thead>{head}</thead><tbody>{rows}</tbody></table>'


# --- table ------------------------------------------------------------------------------------------


def _tensor_tables(report: FileReport) -> str:
    """Conv/linear weights in view; the many small tensors (biases, norms, buffers) folded away."""
    weights = [t for t in report.tensors if t.is_layer_weight]
    others = [t for t in report.tensors if not t.is_layer_weight]
    folded = (
        f"<details><summary>{len(others)} other tensors (biases, norm parameters, buffers): "
        f"{sum(t.total_bytes for t in others):,} B</summary>{_tensor_table(others, 'other-tensors')}</details>"
    )
    return _tensor_table(weights, "tensors") + (folded if others else "")


def _tensor_table(tensors: Sequence[TensorReport], table_id: str) -> str:
    heads = [
        "tensor",
        "module",
        "codec",
        "shape",
        "bits/w",
        "zeros",
        "codebook",
        "indices",
        "positions",
        "values",
        "total B",
    ]
    rows = []
    for t in tensors:
        cells = [t.name, t.module, t.codec, "x".join(map(str, t.shape))]
        numbers = [
            f"{t.bits_per_weight:.2f}",
            f"{100 * t.sparsity:.1f}%",
            *(f"{t.bytes[k]:,}" for k in ("codebook", "indices", "positions", "values")),
            f"{t.total_bytes:,}",
        ]
        rows.append(
            "<tr>"
            + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
            + "".join(f'<td class="n">{n}</td>' for n in numbers)
            + "</tr>"
        )
    head = "".join(f"<th>{h}</th>" for h in heads)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
