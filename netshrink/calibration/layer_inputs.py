"""What a layer sees: the second moments of its input blocks, for output-aware PQ (Stock et al. 2020).

For a layer y = x W^T with its weight rows cut into sub-vectors of d (codecs/pq.py), the error
that replacing the sub-vector w_ob (output o, input block b) by a codeword c adds to output o is
x_b (w_ob - c), x_b the d inputs that block b multiplies (for a convolution: d entries of the
im2col patch). Its mean square is (w_ob - c)^T G_b (w_ob - c) with

    G_b = E[x_b^T x_b],  the UNCENTRED second moment of block b's inputs

(uncentred because a mean error is not absorbed by anything: there is no bias correction). Summed
over blocks this is the output error without the cross-block terms E[x_b^T x_b'], which PQ cannot
act on one sub-vector at a time; Stock et al. go one step further and pool all blocks into one
matrix (`covariance: pooled` in the pq step). Only the [blocks, d, d] sums are kept, accumulated
batch by batch, so memory does not grow with the calibration set; a convolution contributes
`positions` random output positions per image, gathered without building the full im2col.

The input is taken exactly as the convolution computes with it: `_conv_forward` is wrapped for the
duration of a pass, so padding done inside `forward` (TF "SAME" convolutions) is included. A pass
stops as soon as the layer has been seen (`StopForward`), so calibrating early layers is cheap.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterable, Iterator

import torch
from torch import nn
from torch.nn import functional as F

from netshrink.errors import DataError
from netshrink.training.loop import call_model

#: Elements of patch features gathered at once (64 MiB of float32).
_FEATURE_BLOCK = 1 << 24


class StopForward(Exception):
    """Raised by a capture hook once its layer has been seen: the rest of the pass is not needed."""


def groups_of(module: nn.Module) -> int:
    return module.groups if isinstance(module, nn.Conv2d) else 1


def row_groups(rows: int, groups: int) -> list[slice]:
    """The output rows of each group of a grouped convolution (one slice for an ordinary layer)."""
    per_group = rows // groups
    return [slice(g * per_group, (g + 1) * per_group) for g in range(groups)]


def block_points(weight: torch.Tensor, d: int, groups: int = 1) -> torch.Tensor:
    """The weight's sub-vectors as [groups * blocks_per_row, rows_per_group, d]: entry [j, i] is the
    block j of row i of its group, so all points of one j share one input block, hence one metric."""
    rows = weight.shape[0]
    per_row = weight[0].numel() // d
    return (weight.reshape(groups, rows // groups, per_row, d).permute(0, 2, 1, 3)
            .reshape(groups * per_row, rows // groups, d))


def unblock_labels(labels: torch.Tensor, groups: int) -> torch.Tensor:
    """Labels [groups * blocks_per_row, rows_per_group] back in `subvectors` order (row-major)."""
    blocks, rows_per_group = labels.shape
    return labels.reshape(groups, blocks // groups, rows_per_group).permute(0, 2, 1).reshape(-1)


def _calls(model: nn.Module, modules: dict[str, nn.Module], inputs: Any) -> list[tuple[str, nn.Module]]:
    """(name, module) of each call of one of `modules` during a forward pass on `inputs`, in order."""
    calls: list[tuple[str, nn.Module]] = []
    handles = [module.register_forward_pre_hook(lambda m, _a, name=name: calls.append((name, m)))
               for name, module in modules.items()]
    try:
        with torch.no_grad():
            call_model(model.eval(), inputs)
    finally:
        for handle in handles:
            handle.remove()
    return calls


def forward_order(model: nn.Module, layers: dict[str, nn.Module], inputs: Any) -> list[str]:
    """Names of `layers` in the order a forward pass on `inputs` first calls them (unused ones last)."""
    seen = list(dict.fromkeys(name for name, _ in _calls(model, layers, inputs)))
    return seen + [name for name in layers if name not in seen]


def calibration_batches(data: Any, n: int, batch_size: int, seed: int, step: str) -> list[Any]:
    """Inputs of `n` random training samples in batches (no augmentation), kept in memory for the
    several passes a layer-by-layer method makes over them."""
    sample = data.sample(n, seed=seed) if hasattr(data, "sample") else data
    batches = [inputs for inputs, _ in sample.loader(batch_size)]
    if not batches:
        raise DataError(f"step {step}: the calibration data is empty")
    return batches


@torch.no_grad()
def recalibrate_batchnorms(model: nn.Module, batches: Iterable[Any]) -> int:
    """Re-estimate every BatchNorm's running mean and variance on `batches` (equal-weight average
    over the batches, the rest of the model in eval mode: no dropout or drop-connect noise). After
    a layer's weights are replaced, the statistics of everything after it are stale; fresh ones
    remove most of the damage before any training (BN re-estimation). Returns how many norms."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return 0
    was_training = model.training
    saved = [(m, m.momentum) for m in norms]
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
        norm.train()
    try:
        for inputs in batches:
            call_model(model, inputs)
    finally:
        for norm, momentum in saved:
            norm.momentum = momentum
        model.train(was_training)
    return len(norms)


def following_batchnorms(model: nn.Module, layers: dict[str, nn.Module], inputs: Any) -> dict[str, nn.Module]:
    """layer name -> the BatchNorm (with running statistics, over the layer's outputs) called right
    after it in a forward pass on `inputs`. Call order works where graph tracing does not (models
    with data-dependent Python, e.g. TF-style "SAME" padding)."""
    norms = {n: m for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    calls = _calls(model, {**layers, **norms}, inputs)
    return {name: after for (name, module), (_, after) in zip(calls, calls[1:])
            if name in layers and isinstance(after, nn.modules.batchnorm._BatchNorm)
            and after.num_features == module.weight.shape[0] and after.running_var is not None}


def batchnorm_scales(model: nn.Module, layers: dict[str, nn.Module], inputs: Any) -> dict[str, torch.Tensor]:
    """gamma^2 / (running_var + eps) per output channel of each layer directly followed by a
    BatchNorm over its outputs: at inference BN multiplies channel o by gamma_o / sigma_o, so an error
    in row o reaches the next layer scaled by that much (the weighting the pq step gives each row)."""
    scales = {}
    for name, norm in following_batchnorms(model, layers, inputs).items():
        gamma = norm.weight.detach() if norm.affine else torch.ones(norm.num_features)
        scales[name] = (gamma.double() ** 2 / (norm.running_var.double() + norm.eps)).clamp_min(1e-12)
    return scales


def input_grams(model: nn.Module, module: nn.Module, d: int, batches: Iterable[Any], *, positions: int = 256,
                seed: int = 0) -> torch.Tensor:
    """E[x_b^T x_b] per input block b of `module` ([groups * blocks_per_row, d, d], float64) over the
    calibration `batches` (inputs of the whole model), running the model in eval mode."""
    return input_statistics(model, module, d, batches, positions=positions, seed=seed)[0]


def input_statistics(model: nn.Module, module: nn.Module, d: int, batches: Iterable[Any], *, positions: int = 256,
                     seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(E[x_b^T x_b] [blocks, d, d], E[x] [blocks * d]) of `module`'s input patches (see `input_grams`).
    The mean is per im2col entry, so for a padded convolution it counts the zeros at the border."""
    accumulator = _GramAccumulator(module, d, positions, torch.Generator().manual_seed(seed))
    with accumulator.capturing(), torch.no_grad():
        model.eval()
        for inputs in batches:
            try:
                call_model(model, inputs)
            except StopForward:
                pass
    return accumulator.result(), accumulator.mean()


class _GramAccumulator:
    def __init__(self, module: nn.Module, d: int, positions: int, generator: torch.Generator) -> None:
        self.module, self.d, self.positions, self.generator = module, d, positions, generator
        self.sums: torch.Tensor | None = None
        self.totals: torch.Tensor | None = None
        self.count = 0

    @contextmanager
    def capturing(self) -> Iterator[None]:
        module = self.module
        if isinstance(module, nn.Conv2d):
            original = module._conv_forward

            def capture(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
                self.add(_conv_patches(module, x, self.positions, self.generator))
                raise StopForward

            module._conv_forward = capture  # type: ignore[method-assign]
            try:
                yield
            finally:
                del module._conv_forward  # the class's method is visible again
        else:
            def pre_hook(_module: nn.Module, args: tuple) -> None:
                self.add(args[0].detach().reshape(-1, args[0].shape[-1]).float())
                raise StopForward

            handle = module.register_forward_pre_hook(pre_hook)
            try:
                yield
            finally:
                handle.remove()

    def add(self, features: torch.Tensor) -> None:
        """features [rows, groups * row_length]: one row per sampled input patch (or token)."""
        blocks = features.shape[1] // self.d
        if self.sums is None:
            self.sums = torch.zeros(blocks, self.d, self.d, dtype=torch.float64)
            self.totals = torch.zeros(features.shape[1], dtype=torch.float64)
        self.totals += features.sum(0).double()
        step = max(1, _FEATURE_BLOCK // max(1, features.shape[1]))
        for first in range(0, features.shape[0], step):
            part = features[first:first + step].reshape(-1, blocks, self.d)
            self.sums += torch.einsum("rbi,rbj->bij", part, part).double()
        self.count += features.shape[0]

    def result(self) -> torch.Tensor:
        if self.sums is None or self.count == 0:
            raise RuntimeError("the calibration passes never reached the layer")
        return self.sums / self.count

    def mean(self) -> torch.Tensor:
        self.result()  # the same check
        return self.totals / self.count


def _conv_patches(module: nn.Conv2d, x: torch.Tensor, positions: int, generator: torch.Generator) -> torch.Tensor:
    """im2col rows [images * sampled positions, in_channels * kh * kw] of the convolution's input,
    in the weight's (in_channel, kh, kw) order, at up to `positions` random output positions."""
    if module.padding != "valid":
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        x = F.pad(x, module._reversed_padding_repeated_twice, mode=mode)
    x = x.detach().float()
    (kh, kw), (sh, sw), (dh, dw) = module.kernel_size, module.stride, module.dilation
    out_h, out_w = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1, (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
    total = out_h * out_w
    chosen = torch.randperm(total, generator=generator)[:positions] if total > positions else torch.arange(total)
    rows, cols = (chosen // out_w) * sh, (chosen % out_w) * sw
    patches = torch.stack([x[:, :, rows + i * dh, cols + j * dw]
                           for i in range(kh) for j in range(kw)], 2)       # [n, C, kh*kw, P]
    return patches.reshape(x.shape[0], -1, len(chosen)).permute(0, 2, 1).reshape(-1, patches.shape[1] * kh * kw)
