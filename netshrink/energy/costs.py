"""What a MAC and a memory access cost: every constant of the energy model, with its source."""

from __future__ import annotations

from dataclasses import dataclass

#: pJ per full adder at 45 nm: the energy table of Horowitz, "Computing's energy problem", ISSCC 2014,
#: pp. 10-14, gives a 32-bit integer multiply as 3.1 pJ; an array multiplier of 32x32 bits is 1024
#: full adders. The same constant reproduces his other integer figures to within 20%: 8-bit multiply
#: (64 FA) 0.19 pJ (0.2), 8-bit add 0.024 pJ (0.03), 32-bit add 0.097 pJ (0.1): tests/test_energy.py.
PJ_PER_FULL_ADDER = 3.1 / (32 * 32)

#: Access cost of one 16-bit value at each level, relative to one 16-bit MAC: Chen, Emer, Sze,
#: "Eyeriss: a spatial architecture for energy-efficient dataflow for CNNs", ISCA 2016, Table IV
#: (65 nm; the same figures are Fig. 22 of Sze et al., Proc. IEEE 2017).
RELATIVE_ACCESS_COST = {"dram": 200.0, "buffer": 6.0, "array": 2.0, "rf": 1.0}
REFERENCE_BITS = 16

#: Register-file words per PE and PE array of the Eyeriss chip (Chen et al., JSSC 2017: 168 PEs,
#: p. 8: filter spad 224 x 16 b, ifmap spad 12 x 16 b), arranged 12 rows x 14 columns as in the
#: Eyeriss-based model of H. Yang et al. ICLR 2019. They set how many tiles a layer is cut into.
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
        for key in (
            "activation_bits",
            "original_weight_bits",
            "pes",
            "array_columns",
            "filter_spad_bits",
            "ifmap_spad_bits",
        ):
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
