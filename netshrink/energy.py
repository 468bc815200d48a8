"""Inference energy of a model, per conv/linear layer and in total, for the original and the
compressed network (the energy-aware metrics of Deep k-Means, Wu et al. ICML 2018, sec. 4, on the
Eyeriss methodology of Chen, Emer, Sze ISCA 2016 and Yang, Chen, Sze CVPR 2017).

Energy of a layer = computation + weight movement + activation movement, in pJ:

- computation: effective MACs x cost of one MAC. The cost is counted in full adders, as Deep
  k-Means does: a b_w x b_a array multiplier is b_w*b_a full adders (~b^2), the accumulating adder
  max(b_w, b_a) full adders (~b). Zero weights are skipped only where the format stores them as
  absent (the sparse codec): effective MACs = MACs x density.
- data movement: every value moved through the Eyeriss memory hierarchy -- DRAM, global buffer,
  array (inter-PE), register file -- costs (relative cost of the level) x (a 16-bit MAC) x bits/16.
  Weights move in their stored form (the bits the .nsk file holds: indices, codebooks, positions);
  weight-shared layers (palette, pq) pay a codebook look-up (an RF read of the codeword value) per
  MAC. How often each value crosses each level is the row-stationary reuse of `movement`.

Every constant below names its source. Only ratios between estimates are meaningful: the model is
a first-order, technology-scaled estimate, not a simulation of a particular chip.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from netshrink.codecs.base import Encoded
from netshrink.codecs.dense import DTYPES
from netshrink.errors import ModelError, NetshrinkError
from netshrink.flops import LayerShape, layer_shapes

# --- constants, with their sources -------------------------------------------------------------------

#: pJ per full adder at 45 nm: Horowitz, "Computing's energy problem", ISSCC 2014, Fig. 1.1.9 gives a
#: 32-bit integer multiply as 3.1 pJ; an array multiplier of 32x32 bits is 1024 full adders. The same
#: constant reproduces his other integer figures to within 20%: 8-bit multiply 64 FA = 0.19 pJ (0.2),
#: 8-bit add 0.024 pJ (0.03), 32-bit add 0.097 pJ (0.1) -- see tests/test_energy.py.
PJ_PER_FULL_ADDER = 3.1 / (32 * 32)

#: Access cost of one 16-bit value at each level, relative to one 16-bit MAC: Chen, Emer, Sze,
#: "Eyeriss: a spatial architecture for energy-efficient dataflow for CNNs", ISCA 2016, Table IV
#: (65 nm; the same figures are Fig. 22 of Sze et al., Proc. IEEE 2017).
RELATIVE_ACCESS_COST = {"dram": 200.0, "buffer": 6.0, "array": 2.0, "rf": 1.0}
REFERENCE_BITS = 16

#: Register-file words per PE and PE array of the Eyeriss chip (Chen et al., JSSC 2017, Sec. III):
#: 168 PEs in 12 rows x 14 columns, filter spad 224 x 16 b, ifmap spad 12 x 16 b. They set how many
#: tiles a layer is cut into.
EYERISS_PES = 168
ARRAY_COLUMNS = 14
FILTER_SPAD_BITS = 224 * 16
IFMAP_SPAD_BITS = 12 * 16

LEVELS = tuple(RELATIVE_ACCESS_COST)


@dataclass(frozen=True)
class EnergyConfig:
    """What the estimate assumes about the hardware; printed with every result so it can be redone.

    `activation_bits`: netshrink compresses weights only, so activations stay at the model's
    precision (fp32 by default); the Eyeriss papers use 16. `original_weight_bits`: the weights
    of the reference network the ratio is taken against (fp32).
    """

    activation_bits: int = 32
    original_weight_bits: int = 32
    pj_per_full_adder: float = PJ_PER_FULL_ADDER
    pes: int = EYERISS_PES
    array_columns: int = ARRAY_COLUMNS
    filter_spad_bits: int = FILTER_SPAD_BITS
    ifmap_spad_bits: int = IFMAP_SPAD_BITS

    def __post_init__(self) -> None:
        for key in ("activation_bits", "original_weight_bits", "pes", "array_columns", "filter_spad_bits",
                    "ifmap_spad_bits"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"energy {key} must be a positive integer, got {value!r}")
        if not self.pj_per_full_adder > 0:
            raise ValueError(f"energy pj_per_full_adder must be positive, got {self.pj_per_full_adder!r}")

    def mac_pj(self, weight_bits: int, activation_bits: int) -> float:
        """One multiply-accumulate in pJ: b_w*b_a full adders for the product, max(b_w, b_a) for the add."""
        return self.pj_per_full_adder * (weight_bits * activation_bits + max(weight_bits, activation_bits))

    def access_pj(self, level: str, bits: float) -> float:
        """Moving `bits` once through `level` (Eyeriss relative cost x a 16-bit MAC, linear in bits)."""
        return RELATIVE_ACCESS_COST[level] * self.mac_pj(REFERENCE_BITS, REFERENCE_BITS) * bits / REFERENCE_BITS


# --- how a layer's weight is stored ---------------------------------------------------------------------


@dataclass(frozen=True)
class WeightFormat:
    """What the hardware sees of one weight tensor.

    value_bits: width of a weight at the multiplier; stored_bits: every bit of the tensor in its
    stored form; codebook_bits: the part of it that is shared codebooks; density: fraction of
    weights present (only the sparse codec lets a MAC be skipped); shared: decoded by a look-up.
    """

    value_bits: int
    stored_bits: int
    codebook_bits: int = 0
    density: float = 1.0
    shared: bool = False

    @classmethod
    def dense(cls, numel: int, bits: int) -> "WeightFormat":
        return cls(value_bits=bits, stored_bits=numel * bits)

    def rf_bits(self, numel: int) -> float:
        """Bits per present weight as kept next to the multiplier (index + position, or the value)."""
        present = numel * self.density
        return (self.stored_bits - self.codebook_bits) / present if present else 0.0


def weight_format(enc: Encoded) -> WeightFormat:
    """The format of an encoded weight, read from its codec tree (as written in the .nsk file)."""
    kinds = enc.bytes_by_kind()
    density, node = 1.0, enc
    if enc.codec == "sparse" and "values" in enc.children:
        node = enc.children["values"]
        density = node.numel / enc.numel if enc.numel else 1.0
    value_bits, shared = _value_bits(node)
    return WeightFormat(value_bits, 8 * sum(kinds.values()), 8 * kinds["codebook"], density, shared)


def _value_bits(enc: Encoded) -> tuple[int, bool]:
    """(bits of a decoded weight value, whether decoding is a codebook look-up)."""
    if enc.codec in ("palette", "pq"):
        return 16, True  # both store fp16 codebooks (codecs/palette.py, codecs/pq.py)
    if enc.codec == "dense":
        dtype = DTYPES.get(enc.params.get("dtype"), torch.float32)
        return 8 * torch.empty((), dtype=dtype).element_size(), False
    children = list(enc.children.values())
    return _value_bits(children[0]) if children else (32, False)


# --- the estimate -----------------------------------------------------------------------------------------


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
            "available": True, "unit": "pJ", "input_shape": list(self.input_shape),
            "total_pj": self.total(), "original_total_pj": self.total("original"), "ratio": self.ratio,
            "computation_pj": self.total("computation"), "weights_pj": self.total("weights"),
            "activations_pj": self.total("activations"), "config": asdict(self.config),
            "layers": [{**asdict(layer), "total_pj": layer.total_pj} for layer in self.layers],
        }

    def summary(self) -> str:
        return (f"estimated energy {self.total() / 1e6:.4g} uJ per inference (computation "
                f"{self.total('computation') / 1e6:.3g}, weights {self.total('weights') / 1e6:.3g}, "
                f"activations {self.total('activations') / 1e6:.3g}); original fp32 "
                f"{self.total('original') / 1e6:.4g} uJ; energy ratio {self.ratio:.2f}x "
                f"(45 nm model, activations {self.config.activation_bits} b; netshrink.energy)")

    def table(self) -> str:
        width = max([len(layer.name) for layer in self.layers] + [5])
        lines = [f"{'layer':<{width}}  {'MACs':>12} {'density':>7} {'bits/w':>7} {'comp uJ':>9} "
                 f"{'weights uJ':>10} {'act uJ':>9} {'total uJ':>9} {'vs orig':>7}"]
        for layer in self.layers:
            ratio = layer.original_pj / layer.total_pj if layer.total_pj else float("nan")
            lines.append(f"{layer.name:<{width}}  {layer.macs:>12,} {layer.density:>7.3f} "
                         f"{layer.stored_bits_per_weight:>7.2f} {layer.computation_pj / 1e6:>9.4f} "
                         f"{layer.weights_pj / 1e6:>10.4f} {layer.activations_pj / 1e6:>9.4f} "
                         f"{layer.total_pj / 1e6:>9.4f} {ratio:>6.2f}x")
        lines.append(self.summary())
        return "\n".join(lines)


def estimate(shapes: Sequence[LayerShape], formats: Mapping[str, WeightFormat],
             config: EnergyConfig = EnergyConfig(), input_shape: Sequence[int] = ()) -> ModelEnergy:
    """Energy of the layer calls `shapes` with weights stored as `formats` (by state-dict name;
    a layer missing from it is dense at the original bit width)."""
    layers = []
    for shape in shapes:
        original = WeightFormat.dense(shape.weight_numel, config.original_weight_bits)
        fmt = formats.get(shape.weight_name, original)
        parts = _layer_parts(shape, fmt, config)
        reference = _layer_parts(shape, original, config)
        layers.append(LayerEnergy(
            shape.name, shape.module_type, shape.macs, shape.macs * fmt.density, fmt.value_bits,
            fmt.stored_bits / shape.weight_numel if shape.weight_numel else 0.0, fmt.density, fmt.shared,
            parts["computation"], parts["weights"], parts["activations"], sum(reference[k] for k in
            ("computation", "weights", "activations")), {level: parts[level] for level in LEVELS}))
    return ModelEnergy(layers, config, tuple(input_shape))


def _layer_parts(shape: LayerShape, fmt: WeightFormat, config: EnergyConfig) -> dict[str, float]:
    """Computation, weight and activation energy of one layer call, and the same split by level."""
    macs = shape.macs * fmt.density
    act = config.activation_bits
    parts = {"computation": macs * config.mac_pj(fmt.value_bits, act), "weights": 0.0, "activations": 0.0,
             **{level: 0.0 for level in LEVELS}}
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
    weight_tiles = math.ceil(shape.weight_numel * fmt.density * rf_bits / (config.pes * config.filter_spad_bits)) or 1
    passes = _channel_passes(shape, config)
    moves = [
        ("weights", "dram", fmt.stored_bits), ("weights", "buffer", fmt.stored_bits),
        ("weights", "array", deliveries * rf_bits),
        ("weights", "rf", macs * rf_bits),
        ("inputs", "dram", shape.input_numel * act), ("inputs", "buffer", shape.input_numel * act * weight_tiles),
        ("inputs", "array", macs * min(1.0, stride / width) * act), ("inputs", "rf", macs * act),
        ("outputs", "rf", 2 * macs * act), ("outputs", "array", macs / width * act),
        ("outputs", "buffer", shape.output_numel * act * (2 * passes - 1)),
        ("outputs", "dram", shape.output_numel * act),
    ]
    if fmt.shared:
        moves.append(("weights", "rf", macs * fmt.value_bits))  # codebook look-up per MAC
    return [("weights" if kind == "weights" else "activations", level, bits) for kind, level, bits in moves]


def _channel_passes(shape: LayerShape, config: EnergyConfig) -> int:
    """Passes over a layer's input channels, each ending with a buffer round trip of the partial sums.

    Row stationary (Chen et al. 2016, Sec. V): a PE interleaves the rows of as many channels as its
    ifmap spad holds windows of S inputs; a PE set R rows high and E columns wide reduces the R
    kernel rows, and the sets that fit in the array take further channels of the same pass.
    """
    height = shape.kernel[0] if shape.kernel else 1
    width = shape.kernel[-1] if shape.kernel else 1
    out_rows = shape.output_shape[-2] if len(shape.kernel) == 2 else 1
    per_pe = max(1, config.ifmap_spad_bits // (width * config.activation_bits))
    sets = max(1, config.pes // (height * min(out_rows, config.array_columns)))
    channels = shape.input_shape[0] // shape.groups if shape.kernel else shape.input_numel
    return math.ceil(channels / (per_pe * sets))


# --- entry points ---------------------------------------------------------------------------------------


def dense_formats(model: nn.Module) -> dict[str, WeightFormat]:
    """Formats of an in-memory model: every weight dense at its dtype (a dense tensor has no zeros to skip)."""
    return {name: WeightFormat.dense(tensor.numel(), 8 * tensor.element_size())
            for name, tensor in model.state_dict().items() if name.endswith("weight")}


def energy_of_model(model: nn.Module, input_shape: Sequence[int], formats: Mapping[str, WeightFormat] | None = None,
                    config: EnergyConfig = EnergyConfig()) -> ModelEnergy:
    """Energy of `model` on one input of `input_shape` (no batch dim); weights dense unless `formats`."""
    shapes = layer_shapes(model, input_shape)
    return estimate(shapes, dense_formats(model) if formats is None else formats, config, input_shape)


def energy_of_file(path: str | Path, input_shape: Sequence[int] | None = None,
                   config: EnergyConfig = EnergyConfig(), model: nn.Module | None = None) -> ModelEnergy:
    """Energy of the model in a .nsk file, weights as the file stores them. The input shape comes from
    the zoo entry the header names; for any other model pass `input_shape` (else ModelError) and,
    as for `api.load`, the module."""
    from netshrink import api
    from netshrink.fileformat import read_nsk

    nsk = read_nsk(path)
    shape = tuple(input_shape) if input_shape is not None else zoo_input_shape(nsk.model)
    if shape is None:
        raise ModelError(f"{path}: energy unavailable: the input shape of a {nsk.model.get('class', 'non-zoo')} "
                         "model is unknown; pass input_shape")
    formats = {rec.name: weight_format(rec.encoded) for rec in nsk.tensors}
    return energy_of_model(api.load(path, model), shape, formats, config)


def zoo_input_shape(identity: Mapping[str, Any]) -> tuple[int, ...] | None:
    """The input shape of a zoo model named in a header identity, or None for a model outside the zoo."""
    from netshrink import zoo

    name = identity.get("name")
    return tuple(zoo.model_info(name).input_shape) if isinstance(name, str) and name in zoo.MODEL_NAMES else None


def file_energy_summary(path: str | Path) -> tuple[str, dict[str, Any]]:
    """(one text line, JSON object) on the energy of a .nsk file for `inspect` and `compress`; says
    why when it cannot be estimated (model outside the zoo, input the zero-input forward cannot take)."""
    try:
        energy = energy_of_file(path)
    except NetshrinkError as exc:  # not a zoo model, or its tensors do not fit the zoo architecture
        reason = str(exc)
    except (RuntimeError, TypeError, ValueError, IndexError) as exc:  # forward rejects a float zero input
        reason = f"{path}: energy unavailable: a forward pass on a zero input failed ({type(exc).__name__}: {exc})"
    else:
        return energy.summary(), energy.to_json()
    return reason, {"available": False, "reason": reason}
