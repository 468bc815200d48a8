"""The per-layer estimate: computation, weight and activation energy of each conv/linear call."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from netshrink.energy.costs import LEVELS, EnergyConfig
from netshrink.energy.formats import WeightFormat
from netshrink.flops import LayerShape


@dataclass
class LayerEnergy:
    """Energy of one conv/linear call, in pJ, with the same layer's dense-original energy."""

    name: str
    module_type: str
    macs: int
    effective_macs: float
    value_bits: int
    stored_bits_per_weight: float
    density: float
    shared: bool
    computation_pj: float
    weights_pj: float
    activations_pj: float
    original_pj: float
    levels_pj: dict[str, float] = field(default_factory=dict)

    @property
    def total_pj(self) -> float:
        return self.computation_pj + self.weights_pj + self.activations_pj


@dataclass
class ModelEnergy:
    """Per-layer and total energy of one inference (batch 1) and its ratio to the original."""

    layers: list[LayerEnergy]
    config: EnergyConfig
    input_shape: tuple[int, ...]

    def total(self, part: str = "total") -> float:
        return sum(getattr(layer, f"{part}_pj") for layer in self.layers)

    @property
    def ratio(self) -> float:
        """Original (dense, fp32 weights) energy over this estimate: > 1 means compression saved energy."""
        total = self.total()
        return self.total("original") / total if total else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {
            "available": True,
            "unit": "pJ",
            "input_shape": list(self.input_shape),
            "total_pj": self.total(),
            "original_total_pj": self.total("original"),
            "ratio": self.ratio,
            "computation_pj": self.total("computation"),
            "weights_pj": self.total("weights"),
            "activations_pj": self.total("activations"),
            "config": asdict(self.config),
            "layers": [{**asdict(layer), "total_pj": layer.total_pj} for layer in self.layers],
        }

    def summary(self) -> str:
        return (
            f"estimated energy {self.total() / 1e6:.4g} uJ per inference (computation "
            f"{self.total('computation') / 1e6:.3g}, weights {self.total('weights') / 1e6:.3g}, "
            f"activations {self.total('activations') / 1e6:.3g}); original fp32 "
            f"{self.total('original') / 1e6:.4g} uJ; energy ratio {self.ratio:.2f}x "
            f"(45 nm model, activations {self.config.activation_bits} b; netshrink.energy)"
        )

    def table(self) -> str:
        width = max([len(layer.name) for layer in self.layers] + [5])
        lines = [
            f"{'layer':<{width}}  {'MACs':>12} {'density':>7} {'bits/w':>7} {'comp uJ':>9} "
            f"{'weights uJ':>10} {'act uJ':>9} {'total uJ':>9} {'vs orig':>7}"
        ]
        for layer in self.layers:
            ratio = layer.original_pj / layer.total_pj if layer.total_pj else float("nan")
            lines.append(
                f"{layer.name:<{width}}  {layer.macs:>12,} {layer.density:>7.3f} "
                f"{layer.stored_bits_per_weight:>7.2f} {layer.computation_pj / 1e6:>9.4f} "
                f"{layer.weights_pj / 1e6:>10.4f} {layer.activations_pj / 1e6:>9.4f} "
                f"{layer.total_pj / 1e6:>9.4f} {ratio:>6.2f}x"
            )
        lines.append(self.summary())
        return "\n".join(lines)


def estimate(
    shapes: Sequence[LayerShape],
    formats: Mapping[str, WeightFormat],
    config: EnergyConfig = EnergyConfig(),
    input_shape: Sequence[int] = (),
) -> ModelEnergy:
    """Energy of the layer calls `shapes` with weights stored as `formats` (by state-dict name;
    a layer missing from it is dense at the original bit width)."""
    layers = []
    for shape in shapes:
        original = WeightFormat.dense(shape.weight_numel, config.original_weight_bits)
        fmt = formats.get(shape.weight_name, original)
        parts = _layer_parts(shape, fmt, config)
        reference = _layer_parts(shape, original, config)
        layers.append(
            LayerEnergy(
                shape.name,
                shape.module_type,
                shape.macs,
                shape.macs * fmt.density,
                fmt.value_bits,
                fmt.stored_bits / shape.weight_numel if shape.weight_numel else 0.0,
                fmt.density,
                fmt.shared,
                parts["computation"],
                parts["weights"],
                parts["activations"],
                sum(reference[k] for k in ("computation", "weights", "activations")),
                {level: parts[level] for level in LEVELS},
            )
        )
    return ModelEnergy(layers, config, tuple(input_shape))


def _layer_parts(shape: LayerShape, fmt: WeightFormat, config: EnergyConfig) -> dict[str, float]:
    """Computation, weight and activation energy of one layer call, and the same split by level."""
    macs = shape.macs * fmt.density
    act = config.activation_bits
    parts = {
        "computation": macs * config.mac_pj(fmt.value_bits, act),
        "weights": 0.0,
        "activations": 0.0,
        **{level: 0.0 for level in LEVELS},
    }
    for kind, level, bits in movement(shape, fmt, config):
        energy = config.access_pj(level, bits)
        parts[kind] += energy
        parts[level] += energy
    return parts


def movement(shape: LayerShape, fmt: WeightFormat, config: EnergyConfig) -> list[tuple[str, str, float]]:
    """(data kind, level, bits moved) of one layer call under row-stationary reuse (Chen et al. 2016).

    - Weights come from DRAM once and through the buffer once, in their stored form. Inside the array a
      weight is delivered once per output row it serves (it then stays in the RF while the row of F
      outputs slides past: row stationary) and read from the RF at every MAC, as index + position,
      plus a codeword read when the format is weight-shared.
    - Inputs come from DRAM once and are re-read from the buffer once per weight tile (the layer's
      weights cut into what the PEs' filter spads hold); delivered to PEs once per S/stride uses.
    - Partial sums are read and written in the RF at every MAC, passed between PEs after each kernel
      row of S taps, re-read and re-written in the buffer once per pass over the input channels
      (`_channel_passes`), written to DRAM once.
    """
    macs = shape.macs * fmt.density
    act = config.activation_bits
    width = shape.kernel[-1] if shape.kernel else 1
    stride = shape.stride[-1] if shape.stride else 1
    rf_bits = fmt.rf_bits(shape.weight_numel)
    deliveries = macs / shape.output_width  # weights brought into PEs
    spad_bits = config.pes * config.filter_spad_bits
    weight_tiles = math.ceil(shape.weight_numel * fmt.density * rf_bits / spad_bits) or 1
    passes = _channel_passes(shape, config)
    moves = [
        ("weights", "dram", fmt.stored_bits),
        ("weights", "buffer", fmt.stored_bits),
        ("weights", "array", deliveries * rf_bits),
        ("weights", "rf", macs * rf_bits),
        ("inputs", "dram", shape.input_numel * act),
        ("inputs", "buffer", shape.input_numel * act * weight_tiles),
        ("inputs", "array", macs * min(1.0, stride / width) * act),
        ("inputs", "rf", macs * act),
        ("outputs", "rf", 2 * macs * act),
        ("outputs", "array", macs / width * act),
        ("outputs", "buffer", shape.output_numel * act * (2 * passes - 1)),
        ("outputs", "dram", shape.output_numel * act),
    ]
    if fmt.shared:
        moves.append(("weights", "rf", macs * fmt.value_bits))  # codebook look-up per MAC
    return [("weights" if kind == "weights" else "activations", level, bits) for kind, level, bits in moves]


def _channel_passes(shape: LayerShape, config: EnergyConfig) -> int:
    """Passes over a layer's input channels, each ending with a buffer round trip of the partial sums.

    Row stationary (Chen et al. 2016): a PE interleaves the rows of as many channels as its
    ifmap spad holds windows of S inputs; a PE set R rows high and E columns wide reduces the R
    kernel rows, and the sets that fit in the array take further channels of the same pass.
    """
    height = shape.kernel[0] if shape.kernel else 1
    width = shape.kernel[-1] if shape.kernel else 1
    out_rows = shape.output_shape[-2] if len(shape.kernel) == 2 else 1
    per_pe = max(1, config.ifmap_spad_bits // (width * config.activation_bits))
    sets = max(1, config.pes // (height * min(out_rows, config.array_columns)))
    channels = shape.input_shape[0] // shape.groups if shape.kernel else shape.input_shape[-1]  # Linear: features
    return math.ceil(channels / (per_pe * sets))
