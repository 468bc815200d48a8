"""What an HTML report plots besides the .nsk file itself, read from JSON files people pass in.

- Benchmark runs (`--runs`): any JSON the benchmarks write (benchmarks/results/*.json). Their
  shapes differ (`recipes`, `sweep` with `ours` / `coremltools`, `rows`), so instead of one
  parser per script every object that holds a numeric `ratio` and an accuracy is one run. New
  benchmarks are then plotted without touching this module.
- Sensitivity curves (`--sensitivity`): the `netshrink sensitivity` JSON (netshrink.budget.sensitivity),
  per layer a list of points at each palette bit width and each pruning sparsity.

Every failure is a `NetshrinkError` naming the file and what was expected, so the CLI prints one line.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netshrink import metrics
from netshrink.budget.curves import AXES, SensitivityResult
from netshrink.errors import DataError
from netshrink.paths import read_json

#: Keys holding the accuracy after compression, most specific first (benchmark rows, compress --json).
ACCURACY_KEYS = ("top1_after", "accuracy_after", "after", "top1", "accuracy")


@dataclass(frozen=True)
class BenchmarkRun:
    """One compressed model of a benchmark: a point on the accuracy-vs-size plot."""

    label: str  # the recipe, or the settings of a tool without recipes
    series: str  # model and tool: points of one series share a colour
    ratio: float
    accuracy: float
    source: str  # the JSON file it came from


@dataclass(frozen=True)
class SensitivityCurve:
    """Calibration top-1 and KL of one layer as one setting axis (bits or sparsity) varies."""

    layer: str
    axis: str
    settings: tuple[float, ...]
    top1: tuple[float, ...]
    kl: tuple[float, ...]


@dataclass(frozen=True)
class Sensitivity:
    curves: tuple[SensitivityCurve, ...]
    baseline_top1: float | None
    description: str  # data set, split and sample count: what the curves were measured on


# --- benchmark runs ---------------------------------------------------------------------------------


def read_runs(path: str | Path) -> list[BenchmarkRun]:
    """Every run in a benchmark JSON; an error when it holds none."""
    runs = [_run_from(obj, Path(path).name) for obj in _run_objects(read_json(path, "benchmark runs"))]
    if not runs:
        raise DataError(
            f"{path}: no benchmark runs found (expected objects with a numeric 'ratio' and one of "
            f"{', '.join(ACCURACY_KEYS)}, as benchmarks/results/*.json hold)"
        )
    return runs


def _run_objects(node: Any) -> Iterator[dict[str, Any]]:
    """Depth-first, the objects that are runs; a run's own sub-objects (recipe, tensors) are not searched."""
    if isinstance(node, dict):
        if _number(node.get("ratio")) is not None and _accuracy(node) is not None:
            yield node
            return
        for value in node.values():
            yield from _run_objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from _run_objects(value)


def _run_from(obj: dict[str, Any], source: str) -> BenchmarkRun:
    tool = str(obj.get("tool") or "netshrink")
    model = str(obj.get("model") or "?")
    series = model if tool == "netshrink" else f"{model} ({tool})"
    return BenchmarkRun(_run_label(obj), series, float(obj["ratio"]), _accuracy(obj), source)


def _run_label(obj: dict[str, Any]) -> str:
    """The recipe; else the bit width (tools without recipes); else the run's short text fields
    (e.g. budget rows: 'uniform 3-bit, auto, one-shot')."""
    if isinstance(obj.get("recipe"), str):
        return obj["recipe"]
    if obj.get("bits") is not None:
        return f"{obj['bits']}b{' per-channel' if obj.get('per_channel') else ''}"
    words = [
        value
        for key, value in obj.items()
        if key not in ("model", "tool") and isinstance(value, str) and 0 < len(value) <= 24 and "/" not in value
    ]
    return ", ".join(words) or "run"


def _accuracy(obj: dict[str, Any]) -> float | None:
    """The run's accuracy; None for a run scored by another metric (`compress --json` names it)."""
    if obj.get("metric", metrics.ACCURACY) != metrics.ACCURACY:
        return None
    for key in ACCURACY_KEYS:
        value = _number(obj.get(key))
        if value is not None:
            return value
    return None


def _number(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


# --- sensitivity ------------------------------------------------------------------------------------


def read_sensitivity(path: str | Path) -> Sensitivity:
    """The per-layer curves of a `netshrink sensitivity` JSON (format netshrink-sensitivity/*)."""
    return sensitivity_curves(SensitivityResult.read(path))


def sensitivity_curves(result: SensitivityResult) -> Sensitivity:
    """What the sensitivity plot draws: per layer and axis, top-1 and KL against the setting."""
    curves = tuple(
        SensitivityCurve(
            layer.name,
            axis,
            tuple(float(t.setting) for t in trials),
            tuple(t.top1 for t in trials),
            tuple(t.kl for t in trials),
        )
        for layer in result.layers
        for axis in AXES
        if (trials := layer.curve(axis))
    )
    description = f"{result.samples} samples of {result.dataset} ({result.split})"
    return Sensitivity(curves, result.baseline.top1, description)
