"""Automatic per-layer budgets: the bits and sparsity of each layer that meet a whole-file size
target with the least predicted damage, chosen from measured sensitivity curves.

Each layer may take any (sparsity s, bits b) pair the sensitivity run measured (s = 0: palette
only). Its cost in bytes is exact (the codec's `nbits`, `sensitivity.combined` for s > 0); its
predicted damage is the KL divergence from the uncompressed model measured when ONLY that layer
was compressed, assumed additive across layers and, for s > 0, across pruning and palettization
(the usual separable approximation of HAWQ / HAQ-style allocators; it is a ranking device, the
reported accuracy is always measured on the real file).

The allocation is a multiple-choice knapsack solved by Lagrangian relaxation (Shoham & Gersho
1988, the rate-distortion allocation of "Efficient bit allocation for an arbitrary set of
quantizers"): for a multiplier lam every layer independently picks the option minimising
damage + lam * bytes; lam is bisected to the smallest value whose total fits the byte budget, and
the bytes the bisection leaves unused are spent greedily on the upgrades with the best
damage-saved-per-byte. The byte budget is the target file size minus everything that is not a
selected layer weight (biases, norm parameters, buffers in fp16, and the file header).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from torch import nn

from netshrink.budget.curves import LayerSensitivity, Score, SensitivityResult, Trial
from netshrink.errors import NetshrinkError
from netshrink.format.codecs import Dense
from netshrink.identity import ModelIdentity
from netshrink.plan import EXACT
from netshrink.recipe import parse_recipe
from netshrink.step import Recipe

NON_WEIGHT_CODEC = Dense("fp16")  # what the generated recipe's `cast: fp16` stores the rest in


class BudgetError(NetshrinkError):
    """A size target that no combination of the measured settings can meet."""


def check_target(value: float, what: str) -> None:
    """A ratio target (original / compressed) must be a finite number above 1; checked before any
    division by it, so 0 or NaN is a one-line error rather than a ZeroDivisionError or a silent NaN budget."""
    if not math.isfinite(value) or value <= 1:
        raise BudgetError(f"{what} must be > 1 and finite (original / compressed), got {value:g}")


@dataclass(frozen=True)
class LayerOption:
    """One way to store one layer: palette `bits` after pruning to `sparsity` (0: no pruning);
    `energy_pj` is filled in only for energy targets (see `choose_for_energy`)."""

    bits: int
    sparsity: float
    bytes: int
    damage: float
    codebook_bytes: int = 0
    energy_pj: float = 0.0


def _curve(trials: tuple[Trial, ...], metric: str, baseline: Score) -> dict[float, float]:
    """setting -> predicted damage (>= 0): KL as measured, or loss above the uncompressed model's."""
    base = 0.0 if metric == "kl" else getattr(baseline, metric)
    return {t.setting: max(0.0, getattr(t, metric) - base) for t in trials}


def layer_options(
    layer: LayerSensitivity, baseline: Score, metric: str = "kl", prune: bool = True
) -> list[LayerOption]:
    """Every measured (sparsity, bits) pair of one layer of a sensitivity result."""
    bits = _curve(layer.bits, metric, baseline)
    options = [LayerOption(t.setting, 0.0, t.bytes, bits[t.setting], t.codebook_bytes) for t in layer.bits]
    if prune:
        sparse = _curve(layer.sparsity, metric, baseline)
        options += [
            LayerOption(c.bits, c.sparsity, c.bytes, bits[c.bits] + sparse[c.sparsity], c.codebook_bytes)
            for c in layer.combined
        ]
    return options


def _pick(options: list[LayerOption], lam: float, cost: str) -> LayerOption:
    return min(options, key=lambda o: (o.damage + lam * getattr(o, cost), getattr(o, cost)))


def _total(choice: dict[str, LayerOption], cost: str = "bytes") -> float:
    return sum(getattr(o, cost) for o in choice.values())


def allocate(options: dict[str, list[LayerOption]], budget: float, cost: str = "bytes") -> dict[str, LayerOption]:
    """The option per layer with the least total damage whose `cost` (bytes or energy_pj) fits `budget`
    (Lagrangian bisection, then a greedy fill)."""

    def pick_all(lam: float) -> dict[str, LayerOption]:
        return {n: _pick(o, lam, cost) for n, o in options.items()}

    smallest = {name: min(opts, key=lambda o: (getattr(o, cost), o.damage)) for name, opts in options.items()}
    if _total(smallest, cost) > budget:
        raise BudgetError(
            f"the cheapest settings cost {_total(smallest, cost):,.0f} ({cost}), over the "
            f"{budget:,.0f} the target leaves"
        )
    low, high = 0.0, 1.0
    while _total(pick_all(high), cost) > budget:
        high *= 10
    for _ in range(80):  # bisect on the multiplier: damage + lam * cost
        mid = (low + high) / 2
        low, high = (mid, high) if _total(pick_all(mid), cost) > budget else (low, mid)
    return _spend_leftover(options, pick_all(high), budget, cost)


def _spend_leftover(
    options: dict[str, list[LayerOption]], choice: dict[str, LayerOption], budget: float, cost: str
) -> dict[str, LayerOption]:
    """Greedily take the affordable upgrade with the most damage saved per extra cost, until none fits."""

    def extra(name: str, option: LayerOption) -> float:
        return getattr(option, cost) - getattr(choice[name], cost)

    while True:
        room = budget - _total(choice, cost)
        upgrades = [
            ((choice[n].damage - o.damage) / max(extra(n, o), 1e-12), n, o)
            for n, opts in options.items()
            for o in opts
            if o.damage < choice[n].damage and extra(n, o) <= room
        ]
        if not upgrades:
            return choice
        _, name, option = max(upgrades, key=lambda u: u[0])
        choice[name] = option


# --- the byte budget of a model and the recipe that realises a choice -------------------------------


def non_weight_bytes(model: nn.Module, layer_tensors: list[str]) -> int:
    """Bytes of every tensor the budget does not choose for: floating ones in fp16, others exact."""
    total = 0
    for name, tensor in model.state_dict().items():
        if name not in layer_tensors:
            codec = NON_WEIGHT_CODEC if tensor.is_floating_point() else EXACT
            total += codec.encode(tensor.detach()).nbits() // 8
    return total


def best_ratio(options: dict[str, list[LayerOption]], original_bytes: int, fixed_bytes: int) -> float:
    """The highest whole-file ratio the measured settings can reach."""
    smallest = sum(min(o.bytes for o in opts) for opts in options.values())
    return original_bytes / (smallest + fixed_bytes)


def choose_for_ratio(
    sens: SensitivityResult,
    model: nn.Module,
    ratio: float,
    original_bytes: int,
    header_bytes: int,
    metric: str = "kl",
    prune: bool = True,
) -> dict[str, LayerOption]:
    """Per-layer settings whose file (original_bytes / ratio bytes in all) has the least predicted damage."""
    check_target(ratio, "--target-ratio")
    options = {layer.name: layer_options(layer, sens.baseline, metric, prune) for layer in sens.layers}
    fixed = non_weight_bytes(model, layer_tensors(sens)) + header_bytes
    budget = int(original_bytes / ratio) - fixed
    reachable = best_ratio(options, original_bytes, fixed)
    if reachable < ratio:
        raise BudgetError(
            f"target ratio {ratio:g}x cannot be met: the smallest measured settings reach "
            f"{reachable:.2f}x (add lower --bits or higher --sparsity to the sensitivity run)"
        )
    return allocate(options, budget)


def budget_recipe(choice: dict[str, LayerOption], name: str, description: str) -> Recipe:
    """A recipe of ordinary steps: one `prune` per sparsity and one `palette` per bit width, each on
    the layers that chose it (literal names in `include`), then `cast: fp16` for the rest."""
    steps: list[dict[str, Any]] = []
    for sparsity in sorted({o.sparsity for o in choice.values()} - {0.0}):
        layers = [n for n, o in choice.items() if o.sparsity == sparsity]
        steps.append({"prune": {"sparsity": sparsity, "include": layers}})
    for bits in sorted({o.bits for o in choice.values()}):
        layers = [n for n, o in choice.items() if o.bits == bits]
        steps.append({"palette": {"bits": bits, "per_channel": "auto", "include": layers}})
    steps.append({"cast": {"dtype": "fp16"}})
    return parse_recipe({"name": name, "description": description, "steps": steps}, source=name)


def predicted_damage(choice: dict[str, LayerOption]) -> float:
    return sum(o.damage for o in choice.values())


def choice_table(choice: dict[str, LayerOption]) -> str:
    """The chosen per-layer settings, one line each."""
    width = max([len(n) for n in choice] + [5])
    lines = [f"{'layer':<{width}}  {'bits':>4} {'sparsity':>8} {'bytes':>10} {'pred. KL':>10}"]
    lines += [
        f"{n:<{width}}  {o.bits:>4} {o.sparsity:>8.2f} {o.bytes:>10,} {o.damage:>10.5f}" for n, o in choice.items()
    ]
    lines.append(f"{'total':<{width}}  {'':>4} {'':>8} {_total(choice):>10,} {predicted_damage(choice):>10.5f}")
    return "\n".join(lines)


def uniform_choice(sens: SensitivityResult, bits: int) -> dict[str, LayerOption]:
    """Every layer at `bits` (palette only): the allocation a fixed rule would make, for comparison."""
    out = {}
    for layer in sens.layers:
        (option,) = [o for o in layer_options(layer, sens.baseline, prune=False) if o.bits == bits]
        out[layer.name] = option
    return out


def layer_tensors(sens: SensitivityResult) -> list[str]:
    """The weights a budget chooses settings for: those the sensitivity run measured."""
    return [layer.tensor for layer in sens.layers]


# --- what a choice came to -------------------------------------------------------------------------


@dataclass
class Budget:
    """The per-layer settings chosen for a target and what they came to: the exact size of the file
    they give and, for an energy target, its estimated energy ratio (original / compressed)."""

    choice: dict[str, LayerOption]
    file_bytes: int
    target_bytes: int | None = None
    energy_ratio: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {name: asdict(option) for name, option in self.choice.items()}

    def to_text(self) -> str:
        return choice_table(self.choice)


def original_bytes_of(model: nn.Module, identity: ModelIdentity | None) -> int:
    """fp32 bytes of the original model: the header's record (a re-compressed checkpoint) or this model's."""
    from netshrink.report.sizes import original_size

    recorded = identity.original.fp32_bytes if identity is not None and identity.original else 0
    return recorded or original_size(model).fp32_bytes


def budget_description(sens: SensitivityResult, target: str, metric: str, prune: bool) -> str:
    """What a generated recipe says it is: the target, and the sensitivity run it was chosen from."""
    what = "bits and sparsity" if prune else "bits"
    return (
        f"automatic per-layer {what} for {target}: least summed single-layer "
        f"{metric} on {sens.samples} held-out training samples of {sens.dataset} "
        f"(sensitivity {sens.key})"
    )


# --- energy targets: the same knapsack with each option's estimated energy as its cost ----------------


def option_energy(shapes: list[Any], tensor: str, numel: int, option: LayerOption, config: Any) -> float:
    """pJ of every call of the layer holding `tensor` when stored as `option` (netshrink.energy)."""
    from netshrink.energy import WeightFormat, estimate

    present = numel - int(round(option.sparsity * numel))  # magnitude pruning removes exactly this many
    fmt = WeightFormat(16, 8 * option.bytes, 8 * option.codebook_bytes, present / numel, shared=True)
    return estimate([s for s in shapes if s.weight_name == tensor], {tensor: fmt}, config).total()


def choose_for_energy(
    sens: SensitivityResult,
    model: nn.Module,
    energy_ratio: float,
    input_shape: tuple[int, ...],
    metric: str = "kl",
    prune: bool = True,
) -> dict[str, LayerOption]:
    """Per-layer settings whose estimated energy is at most original / energy_ratio, least predicted damage."""
    from netshrink.energy import EnergyConfig, WeightFormat, estimate
    from netshrink.flops import layer_shapes

    check_target(energy_ratio, "--target-energy")
    config, shapes = EnergyConfig(), layer_shapes(model, input_shape)
    options = {
        layer.name: [
            replace(o, energy_pj=option_energy(shapes, layer.tensor, layer.numel, o, config))
            for o in layer_options(layer, sens.baseline, metric, prune)
        ]
        for layer in sens.layers
    }
    chosen = set(layer_tensors(sens))
    others = [s for s in shapes if s.weight_name not in chosen]  # stored fp16 by the recipe's cast step
    fixed = estimate(others, {s.weight_name: WeightFormat.dense(s.weight_numel, 16) for s in others}, config).total()
    original = estimate(shapes, {}, config).total("original")
    reachable = original / (fixed + sum(min(o.energy_pj for o in opts) for opts in options.values()))
    if reachable < energy_ratio:
        raise BudgetError(
            f"target energy ratio {energy_ratio:g}x cannot be met: the smallest measured settings "
            f"reach {reachable:.2f}x (add lower --bits or higher --sparsity to the sensitivity run)"
        )
    return allocate(options, original / energy_ratio - fixed, cost="energy_pj")
