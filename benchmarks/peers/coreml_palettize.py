"""coremltools 9.0 post-training palettization as a peer for the one-shot weight-sharing benchmark.

`palettize_like_ours` runs `coremltools.optimize.torch.palettization.PostTrainingPalettizer` on
exactly the layers our palette step selects, with the same bit width and granularity (one lookup
table per tensor, or one per output channel: `per_grouped_channel`, `group_size=1`, axis 0), and
every other setting at its coremltools default (k-means from the `kmeans1d` package, which is the
optimal 1-D DP of Gronlund et al. 2017; `enable_fast_kmeans_mode=True`, which rounds the weights to
fp16 and then to 4 decimals before clustering; one k-means worker).

coremltools writes no file here (its Core ML runtime is macOS-only), so its size is computed under
SIZE_CONVENTION below. The lookup tables are also rounded to fp16 in the model we score, so the
accuracy belongs to the size we charge (a Core ML model converted at its default fp16 precision).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

SIZE_CONVENTION = (
    "coremltools size = for each palettized weight ceil(numel * bits / 8) bytes of fixed-width "
    "indices + n_luts * 2^bits * 2 bytes of fp16 lookup tables; every other tensor of the original "
    "state dict (biases, norm parameters, buffers, unpalettized weights) at 4 bytes per element; "
    "no header. ratio = 4 bytes x every parameter and buffer element of the original model / that size."
)
METADATA_PREFIX = "_COREML_"


@dataclass(frozen=True)
class PeerSize:
    """The bytes the peer's palettized format needs, under SIZE_CONVENTION."""

    original_bytes: int
    size_bytes: int
    weight_numel: int
    weight_bytes: int
    index_bytes: int
    lut_bytes: int
    other_bytes: int
    palettized: int

    @property
    def ratio(self) -> float:
        return self.original_bytes / self.size_bytes

    @property
    def weights_ratio(self) -> float:
        """Paper convention: fp32 bits of the palettized weights over their indices + tables."""
        return 32 * self.weight_numel / (8 * self.weight_bytes)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio, "weights_ratio": self.weights_ratio}


@dataclass
class PeerResult:
    model: nn.Module
    size: PeerSize
    seconds: float
    config: dict[str, Any]


def peer_version() -> str:
    import coremltools

    return coremltools.__version__


def module_config(bits: int, per_channel: bool) -> Any:
    from coremltools.optimize.torch.palettization import ModulePostTrainingPalettizerConfig

    if per_channel:
        return ModulePostTrainingPalettizerConfig(
            n_bits=bits, granularity="per_grouped_channel", group_size=1, channel_axis=0
        )
    return ModulePostTrainingPalettizerConfig(n_bits=bits, granularity="per_tensor")


def palettize(model: nn.Module, layer_names: list[str], bits: int, per_channel: bool) -> tuple[nn.Module, float]:
    """Run PostTrainingPalettizer on the named modules only; return the copy it makes and the seconds."""
    from coremltools.optimize.torch.palettization import PostTrainingPalettizer, PostTrainingPalettizerConfig

    # coremltools gives its logger an INFO level and its own handler: one line per layer otherwise.
    logging.getLogger("coremltools.optimize.torch").setLevel(logging.WARNING)
    mod_config = module_config(bits, per_channel)
    config = PostTrainingPalettizerConfig(module_name_configs={name: mod_config for name in layer_names})
    started = time.perf_counter()
    palettized = PostTrainingPalettizer(model, config).compress(inplace=False)
    return palettized, time.perf_counter() - started


def lookup_tables(model: nn.Module) -> dict[str, torch.Tensor]:
    """Module name -> the weight LUT coremltools registered, shaped (*groups, 2^bits, cluster_dim)."""
    suffix = f".{METADATA_PREFIX}/weight/lut"
    return {key[: -len(suffix)]: value for key, value in model.state_dict().items() if key.endswith(suffix)}


def round_tables_to_fp16(model: nn.Module, layer_names: list[str]) -> None:
    """Round each palettized weight to fp16: exactly the values an fp16 lookup table holds."""
    with torch.no_grad():
        for name in layer_names:
            weight = model.get_submodule(name).weight
            weight.copy_(weight.half().float())


def peer_size(original: nn.Module, palettized: nn.Module, layer_names: list[str], bits: int) -> PeerSize:
    """Size of the palettized model under SIZE_CONVENTION, checked against the tables coremltools made."""
    tables = lookup_tables(palettized)
    if sorted(tables) != sorted(layer_names):
        missing = sorted(set(layer_names) - set(tables))
        extra = sorted(set(tables) - set(layer_names))
        raise RuntimeError(f"coremltools palettized other layers than ours: missing {missing[:5]}, extra {extra[:5]}")
    weights = {f"{name}.weight" for name in layer_names}
    state = original.state_dict()
    index_bytes = lut_bytes = numel = 0
    for name in layer_names:
        table = tables[name]
        n_luts = math.prod(table.shape[:-2])
        tensor_numel = state[f"{name}.weight"].numel()
        numel += tensor_numel
        index_bytes += math.ceil(tensor_numel * bits / 8)
        lut_bytes += n_luts * (1 << bits) * table.shape[-1] * 2
    other = sum(4 * t.numel() for key, t in state.items() if key not in weights)
    original_bytes = sum(4 * t.numel() for t in state.values())
    return PeerSize(
        original_bytes,
        index_bytes + lut_bytes + other,
        numel,
        index_bytes + lut_bytes,
        index_bytes,
        lut_bytes,
        other,
        len(layer_names),
    )


def palettize_like_ours(model: nn.Module, layer_names: list[str], bits: int, per_channel: bool) -> PeerResult:
    """Palettize `layer_names` with coremltools; the returned model carries fp16-rounded tables."""
    palettized, seconds = palettize(model, layer_names, bits, per_channel)
    size = peer_size(model, palettized, layer_names, bits)
    round_tables_to_fp16(palettized, layer_names)
    config = {
        "n_bits": bits,
        "granularity": "per_grouped_channel" if per_channel else "per_tensor",
        "group_size": 1 if per_channel else None,
        "channel_axis": 0,
        "enable_fast_kmeans_mode": True,
        "num_kmeans_workers": 1,
        "lut": "fp16 (rounded after k-means)",
    }
    return PeerResult(palettized.eval(), size, seconds, config)
