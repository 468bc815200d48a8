"""Inference energy of a model, per conv/linear layer and in total, for the original and the
compressed network (the energy-aware metrics of Deep k-Means, Wu et al. ICML 2018, on the Eyeriss
methodology of Chen, Emer, Sze ISCA 2016 and Yang, Chen, Sze CVPR 2017; see docs/energy.md).

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

Every constant (costs.py) names its source. Only ratios between estimates are meaningful: the model is
a first-order, technology-scaled estimate, not a simulation of a particular chip.

Modules: `costs` (every constant and its source, `EnergyConfig`), `formats` (what the hardware sees of
a stored weight), `model` (the per-layer estimate), `files` (models in memory and .nsk files).
"""

from netshrink.energy.costs import LEVELS, EnergyConfig
from netshrink.energy.files import (
    EnergySummary,
    energy_of_file,
    energy_of_model,
    energy_summary,
    stored_formats,
    zoo_input_shape,
)
from netshrink.energy.formats import WeightFormat, dense_formats, weight_format
from netshrink.energy.model import LayerEnergy, ModelEnergy, estimate, movement

__all__ = [
    "LEVELS",
    "EnergyConfig",
    "EnergySummary",
    "LayerEnergy",
    "ModelEnergy",
    "WeightFormat",
    "dense_formats",
    "energy_of_file",
    "energy_of_model",
    "energy_summary",
    "estimate",
    "movement",
    "stored_formats",
    "weight_format",
    "zoo_input_shape",
]
