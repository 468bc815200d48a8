"""Peer weight-only quantizers for the language-model benchmark, all sized under one convention.

Every peer is `quantize_<peer>(model, bits, group, **opts) -> PeerResult`. It quantizes the
weight of every `nn.Linear` inside the transformer blocks (`model.model.layers.*`) IN PLACE as
fake-quant: the weight becomes the fp32 values the peer's dequantization gives, so perplexity is
computed with the plain model. Embedding, LM head and norms stay fp32, the same policy netshrink
uses for its block weights; `include_head=True` also quantizes the LM head (with a tied head that
is the token embedding too, one tensor counted once). Weights are written back only once all are
quantized, so a peer that fails (`PeerUnavailable`) leaves the model as it was.

Peers (`PEERS`):
- `rtn`: round to nearest, asymmetric min-max per group of `group` consecutive input weights of a
  row (None: the whole row), fp16 scale and fp16 zero (the group minimum). Our own code, the floor.
- `coreml`: coremltools `PostTrainingPalettizer`, k-means lookup tables `per_grouped_channel`:
  here `group` counts OUTPUT CHANNELS sharing one table of 2^bits values (coremltools' group_size).
- `hqq`: HQQ (Badri & Shaji 2023) half-quadratic zero/scale optimisation, `HQQLinear` with
  `compute_dtype=float16`, so its scale and zero are fp16 tensors as it serves them.
- `torchao`: torchao `quantize_` with `IntxWeightOnlyConfig` (any bits 1-8, per group, CPU path),
  or `kernel="int8"` (`Int8WeightOnlyConfig`, per channel) or `kernel="int4"` (`Int4WeightOnlyConfig`,
  which has no CPU path in torchao 0.18: it raises PeerUnavailable with the library's reason).

Size convention (`stored_bits`, the ONE function every peer calls per weight): the indices at
exactly `bits` each, densely packed (what a file would hold; HQQ's in-memory 3-bit packing, 10 values
per int32, would be 3.2), plus every table / scale / zero point tensor the peer keeps for that weight
at the width of the dtype it keeps it in. coremltools keeps fp32 tables in torch; a Core ML model
stores them fp16 (its default precision), so the tables are rounded to fp16 in the model we score and
counted at 16 bits. Bits per weight = the stored bits of the quantized weights / their element count;
no header, and no other tensor of the model, is counted.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

#: (dequantized fp32 weight, its stored bits) for one weight, from its peer.
QuantizedWeight = tuple[torch.Tensor, int]
WeightQuantizer = Callable[..., QuantizedWeight]


class PeerUnavailable(RuntimeError):
    """A peer cannot run here (not installed, no CPU kernel); the message is one line to print."""


@dataclass(frozen=True)
class PeerResult:
    """What a peer did to the block Linear weights, and what it costs to store them."""

    name: str
    bits: int
    group: int | None
    linear_bits_per_weight: float
    stored_bytes: int
    seconds: float
    weights: int = 0
    library: str = ""


def stored_bits(indices: int, bits: int, tables: Iterable[torch.Tensor | tuple[int, torch.dtype]] = ()) -> int:
    """Bits a peer stores for one weight: its `indices` at `bits` each, plus its side tensors.

    `indices` is the weight's element count, or fewer when one index stands for a vector of weights
    (coremltools' cluster_dim). Each side tensor (lookup table, scale, zero point) counts numel x the
    width of the dtype it is kept in; pass the tensor itself, or (element count, dtype).
    """
    side = 0
    for table in tables:
        count, dtype = (table.numel(), table.dtype) if isinstance(table, torch.Tensor) else table
        side += count * dtype.itemsize * 8
    return indices * bits + side


def target_linears(model: nn.Module, include_head: bool = False) -> dict[str, nn.Linear]:
    """Name -> Linear a peer quantizes: those of the blocks, and the LM head when asked (once if tied)."""
    targets = {
        f"model.layers.{name}": module
        for name, module in model.model.layers.named_modules()
        if isinstance(module, nn.Linear)
    }
    if include_head:
        targets["lm_head"] = model.lm_head
    return targets


def fake_quantize(
    model: nn.Module, name: str, bits: int, group: int | None, quantize_weight: WeightQuantizer, **opts: Any
) -> PeerResult:
    """Replace each target weight by `quantize_weight`'s dequantized copy; sum the stored bits."""
    include_head = bool(opts.pop("include_head", False))
    library = str(opts.pop("library", ""))
    weights = [linear.weight.detach() for linear in target_linears(model, include_head).values()]
    started = time.perf_counter()
    quantized = [quantize_weight(weight.clone(), bits, group, **opts) for weight in weights]
    seconds = time.perf_counter() - started
    with torch.no_grad():  # only once every weight is done: a peer that fails changes nothing
        for weight, (dequantized, _) in zip(weights, quantized):
            weight.copy_(dequantized.to(weight.dtype))  # in place: a tied embedding follows its head
    total_bits = sum(bits_stored for _, bits_stored in quantized)
    total_weights = sum(weight.numel() for weight in weights)
    return PeerResult(
        name, bits, group, total_bits / total_weights, math.ceil(total_bits / 8), seconds, total_weights, library
    )


def linear_holding(weight: torch.Tensor) -> nn.Linear:
    """A bias-free Linear whose weight is `weight` (a copy): what the libraries' calls take."""
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
    linear.weight = nn.Parameter(weight)
    return linear


# ---- round to nearest (ours) -------------------------------------------------------------------


def rtn_weight(weight: torch.Tensor, bits: int, group: int | None) -> QuantizedWeight:
    """Asymmetric min-max round to nearest per group of a row; fp16 scale and minimum per group.

    A row whose length `group` does not divide ends in a shorter group (padded with its last
    value, which moves neither its minimum nor its maximum).
    """
    rows, columns = weight.shape
    group = group or columns
    groups = math.ceil(columns / group)
    padded = torch.cat([weight, weight[:, -1:].expand(rows, groups * group - columns)], dim=1)
    grouped = padded.reshape(rows, groups, group)
    minimum = grouped.amin(-1, keepdim=True).half()
    scale = ((grouped.amax(-1, keepdim=True) - minimum.float()) / (2**bits - 1)).half()
    scale32, minimum32 = scale.float(), minimum.float()
    safe = torch.where(scale32 > 0, scale32, torch.ones_like(scale32))  # a constant group: index 0
    indices = ((grouped - minimum32) / safe).round().clamp(0, 2**bits - 1)
    dequantized = (indices * scale32 + minimum32).reshape(rows, groups * group)[:, :columns]
    return dequantized, stored_bits(weight.numel(), bits, (scale, minimum))


def quantize_rtn(model: nn.Module, bits: int, group: int | None, **opts: Any) -> PeerResult:
    """Round to nearest, asymmetric min-max per group (fp16 scale + zero per group)."""
    return fake_quantize(model, "rtn", bits, group, rtn_weight, library="ours (llm_peers.rtn_weight)", **opts)


# ---- coremltools k-means palettization ---------------------------------------------------------


def coreml_weight(weight: torch.Tensor, bits: int, group: int | None, **config: Any) -> QuantizedWeight:
    """Palettize one weight with PostTrainingPalettizer; its lookup tables are rounded to fp16."""
    from coremltools.optimize.torch.palettization import (
        ModulePostTrainingPalettizerConfig,
        PostTrainingPalettizer,
        PostTrainingPalettizerConfig,
    )
    from peers.coreml_palettize import METADATA_PREFIX

    for name in ("coremltools", "coremltools.optimize.torch", "coremltools.optimize.torch._utils.k_means"):
        logging.getLogger(name).setLevel(logging.WARNING)  # one INFO line per layer otherwise
    grouping = dict(granularity="per_grouped_channel", group_size=group, channel_axis=0)
    module_config = ModulePostTrainingPalettizerConfig(
        n_bits=bits, **(grouping if group else {"granularity": "per_tensor"}), **config
    )
    holder = nn.Sequential(linear_holding(weight))
    palettizer = PostTrainingPalettizer(holder, PostTrainingPalettizerConfig(global_config=module_config))
    palettized = palettizer.compress(inplace=True)
    state = palettized.state_dict()
    table = state[f"0.{METADATA_PREFIX}/weight/lut"]  # (*groups, 2^bits, cluster_dim)
    side = [(table.numel(), torch.float16)]
    channel_scale = state.get(f"0.{METADATA_PREFIX}/weight/palettization_scale")  # enable_per_channel_scale
    if channel_scale is not None:
        side.append((channel_scale.numel(), torch.float16))
    dequantized = palettized[0].weight.detach().half().float()  # the fp16 tables (x fp16 scales)
    return dequantized, stored_bits(weight.numel() // table.shape[-1], bits, side)


def quantize_coreml(model: nn.Module, bits: int, group: int | None, **opts: Any) -> PeerResult:
    """coremltools k-means palettization; `group` output channels share one fp16 table (None: one per tensor).

    Extra `opts` (other than include_head) set fields of ModulePostTrainingPalettizerConfig, e.g.
    `enable_fast_kmeans_mode=False`, `cluster_dim=2` (one index per 2 weights, 2-vector table
    entries) or `enable_per_channel_scale=True` (an fp16 scale per output channel, counted).
    """
    coremltools = _import_or_unavailable("coremltools")
    library = f"coremltools {coremltools.__version__}"
    return fake_quantize(model, "coreml", bits, group, coreml_weight, library=library, **opts)


# ---- HQQ ---------------------------------------------------------------------------------------


def hqq_weight(weight: torch.Tensor, bits: int, group: int | None, **config: Any) -> QuantizedWeight:
    """HQQ's own quantize (HQQLinear, fp16 compute) and dequantize; counts its scale and zero."""
    from hqq.core.quantize import BaseQuantizeConfig, HQQLinear

    quant_config = BaseQuantizeConfig(nbits=bits, group_size=group, **config)
    quantized = HQQLinear(linear_holding(weight), quant_config, compute_dtype=torch.float16, device="cpu")
    meta = quantized.meta
    if meta.get("quant_scale") or meta.get("quant_zero"):
        raise PeerUnavailable("hqq: quantized scale/zero (quant_scale/quant_zero) are not sized here")
    side = [meta["scale"], meta["zero"]]
    return quantized.dequantize().float(), stored_bits(weight.numel(), bits, side)


def quantize_hqq(model: nn.Module, bits: int, group: int | None = 64, **opts: Any) -> PeerResult:
    """HQQ, `nbits=bits, group_size=group` (its default axis=1: groups of consecutive input weights).

    Extra `opts` (other than include_head) go to hqq's BaseQuantizeConfig, e.g. `axis=0`.
    """
    hqq = _import_or_unavailable("hqq")
    library = f"hqq {getattr(hqq, '__version__', _distribution_version('hqq'))}"
    return fake_quantize(model, "hqq", bits, group, hqq_weight, library=library, **opts)


def _import_or_unavailable(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError as error:
        raise PeerUnavailable(f"{module} is not installed ({error})") from error


def _distribution_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def _silence_torchao() -> Any:
    """Import torchao with its CUDA-library and pytree warnings silenced; PeerUnavailable when absent."""
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _import_or_unavailable("torchao")


# ---- torchao -----------------------------------------------------------------------------------


def torchao_config(bits: int, group: int | None, kernel: str, mapping: str, scale_dtype: torch.dtype) -> Any:
    """The torchao config for `kernel`: "intx" (IntxWeightOnlyConfig), "int4" or "int8"."""
    import torchao.quantization as ao
    from torchao.quantization.granularity import PerAxis, PerGroup
    from torchao.quantization.quant_primitives import MappingType

    if kernel == "int4":
        if bits != 4:
            raise ValueError(f"torchao kernel int4 takes bits=4, got {bits}")
        return ao.Int4WeightOnlyConfig(group_size=group or 128)
    if kernel == "int8":
        if bits != 8 or group is not None:
            raise ValueError(f"torchao kernel int8 is per channel at bits=8, got bits={bits} group={group}")
        return ao.Int8WeightOnlyConfig()
    if kernel != "intx":
        raise ValueError(f"torchao kernel must be intx, int4 or int8, got {kernel!r}")
    return ao.IntxWeightOnlyConfig(
        weight_dtype=getattr(torch, f"int{bits}"),
        granularity=PerGroup(group) if group else PerAxis(0),
        mapping_type=MappingType[mapping.upper()],
        scale_dtype=scale_dtype,
    )


def torchao_weight(
    weight: torch.Tensor,
    bits: int,
    group: int | None,
    kernel: str = "intx",
    mapping: str = "asymmetric",
    scale_dtype: torch.dtype = torch.float16,
) -> QuantizedWeight:
    """torchao's `quantize_` on one Linear, then its tensor's own `dequantize()`; counts its inner tensors."""
    from torchao.quantization import quantize_

    config = torchao_config(bits, group, kernel, mapping, scale_dtype)
    holder = nn.Sequential(linear_holding(weight))
    try:
        quantize_(holder, config)
    except (ImportError, NotImplementedError, AssertionError, ValueError, RuntimeError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise PeerUnavailable(f"torchao {type(config).__name__} on CPU: {reason}") from error
    quantized = holder[0].weight
    if not hasattr(quantized, "__tensor_flatten__"):  # torchao skips a Linear its kernel cannot take
        raise PeerUnavailable(f"torchao {type(config).__name__} left a {tuple(weight.shape)} weight unquantized")
    names, _ = quantized.__tensor_flatten__()
    side = [getattr(quantized, name) for name in names if name != "qdata"]  # scale, zero_point
    return quantized.dequantize().float(), stored_bits(weight.numel(), bits, side)


def quantize_torchao(model: nn.Module, bits: int, group: int | None = 64, **opts: Any) -> PeerResult:
    """torchao weight-only quantization; opts: kernel ("intx", "int4", "int8"), mapping, scale_dtype.

    "intx" (default) is asymmetric with an fp16 scale and an int8 zero point per group, as torchao
    keeps them; "int8" keeps an fp32 scale per output channel.
    """
    torchao = _silence_torchao()
    name = f"torchao-{opts.get('kernel', 'intx')}"
    return fake_quantize(model, name, bits, group, torchao_weight, library=f"torchao {torchao.__version__}", **opts)


PEERS: dict[str, Callable[..., PeerResult]] = {
    "rtn": quantize_rtn,
    "coreml": quantize_coreml,
    "hqq": quantize_hqq,
    "torchao": quantize_torchao,
}


def run_peer(name: str, model: nn.Module, bits: int, group: int | None, **opts: Any) -> PeerResult | str:
    """`PEERS[name]` on `model`, or the one-line reason it cannot run here, naming the library (model unchanged)."""
    try:
        return PEERS[name](model, bits, group, **opts)
    except PeerUnavailable as unavailable:
        return str(unavailable)
