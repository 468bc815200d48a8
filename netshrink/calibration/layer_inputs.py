"""What a layer sees: statistics of its inputs on calibration data, from one pass machinery.

`run_passes` runs the model on calibration batches with a tap on each layer of interest; a tap
gets the layer's inputs and keeps running sums only, so memory does not grow with the calibration
set. A pass stops as soon as every tap has what it takes (`StopForward`), so calibrating early
layers is cheap. Two statistics are taken this way:

`channel_moments`: the mean and mean square of each input channel (feature, for a Linear), for
the importance weights (calibration/importance.py) and the bias correction of the palette step.

`patch_moments`: the second moments of a layer's input blocks, for output-aware PQ (Stock et al.
2020). For a layer y = x W^T with its weight rows cut into sub-vectors of d (codecs/pq.py), the
error that replacing the sub-vector w_ob (output o, input block b) by a codeword c adds to output
o is x_b (w_ob - c), x_b the d inputs that block b multiplies (for a convolution: d entries of the
im2col patch). Its mean square is (w_ob - c)^T G_b (w_ob - c) with

    G_b = E[x_b^T x_b],  the UNCENTRED second moment of block b's inputs

(uncentred because a mean error is not absorbed by anything: there is no bias correction). Summed
over blocks this is the output error without the cross-block terms E[x_b^T x_b'], which PQ cannot
act on one sub-vector at a time; Stock et al. go one step further and pool all blocks into one
matrix (`covariance: pooled` in the pq step). Only the [blocks, d, d] sums are kept; a convolution
contributes `positions` random output positions per image, gathered without building the full
im2col. The patch is taken exactly as the convolution computes with it: `_conv_forward` is wrapped
for the duration of the passes, so padding done inside `forward` (TF "SAME" convolutions) is
included.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from netshrink.devices import model_device, to_device
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
    return (
        weight.reshape(groups, rows // groups, per_row, d)
        .permute(0, 2, 1, 3)
        .reshape(groups * per_row, rows // groups, d)
    )


def unblock_labels(labels: torch.Tensor, groups: int) -> torch.Tensor:
    """Labels [groups * blocks_per_row, rows_per_group] back in `subvectors` order (row-major)."""
    blocks, rows_per_group = labels.shape
    return labels.reshape(groups, blocks // groups, rows_per_group).permute(0, 2, 1).reshape(-1)


class InputTap:
    """What calibration passes record at one layer: `add` receives each input the layer is called
    with (with `conv_input`, a Conv2d's input as the convolution computes with it, after any padding
    its `forward` does). With `every_call` false only the layer's first call in each pass counts."""

    conv_input = False
    every_call = True

    def add(self, x: torch.Tensor) -> None:
        raise NotImplementedError


@torch.no_grad()
def run_passes(model: nn.Module, taps: Sequence[tuple[nn.Module, InputTap]], batches: Iterable[Any]) -> None:
    """Run `model` in eval mode (its mode restored after) on each of `batches` (model inputs: a
    tensor, or a tuple / dict of tensors as `call_model` takes them), handing each tapped layer's
    inputs to its tap. A pass stops (`StopForward`) once every tap has had all it takes of it. Batches
    are moved to the model's device; taps keep their sums where the inputs are."""
    waiting: set[int] = set()
    stops = not any(tap.every_call for _, tap in taps)

    def seen(index: int, tap: InputTap, x: torch.Tensor) -> None:
        if tap.every_call or index in waiting:
            waiting.discard(index)
            tap.add(x)
            if stops and not waiting:
                raise StopForward

    was_training, device = model.training, model_device(model)
    with ExitStack() as stack:
        for index, (module, tap) in enumerate(taps):
            stack.enter_context(_tapped(module, tap.conv_input, partial(seen, index, tap)))
        model.eval()
        try:
            for inputs in batches:
                waiting.update(range(len(taps)))
                try:
                    call_model(model, to_device(inputs, device))
                except StopForward:
                    pass
        finally:
            model.train(was_training)


@contextmanager
def _tapped(module: nn.Module, conv_input: bool, seen: Callable[[torch.Tensor], None]) -> Iterator[None]:
    if conv_input and isinstance(module, nn.Conv2d):
        had_own = "_conv_forward" in vars(module)
        convolve = module._conv_forward

        def capture(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
            seen(x)
            return convolve(x, weight, bias)

        module._conv_forward = capture  # type: ignore[method-assign]
        try:
            yield
        finally:
            if had_own:
                module._conv_forward = convolve  # type: ignore[method-assign]
            else:
                del module._conv_forward  # the class's method is visible again
    else:
        handle = module.register_forward_pre_hook(lambda _module, args: seen(args[0]))
        try:
            yield
        finally:
            handle.remove()


class _CallRecorder(InputTap):
    def __init__(self, name: str, calls: list[str]) -> None:
        self.name, self.calls = name, calls

    def add(self, x: torch.Tensor) -> None:
        self.calls.append(self.name)


def forward_order(model: nn.Module, layers: dict[str, nn.Module], inputs: Any) -> list[str]:
    """Names of `layers` in the order a forward pass on `inputs` first calls them (unused ones last)."""
    calls: list[str] = []
    run_passes(model, [(module, _CallRecorder(name, calls)) for name, module in layers.items()], [inputs])
    seen = list(dict.fromkeys(calls))
    return seen + [name for name in layers if name not in seen]


def calibration_batches(data: Any, n: int, batch_size: int, seed: int, step: str) -> list[Any]:
    """Inputs of `n` random training samples in batches (no augmentation), kept in memory for the
    several passes a layer-by-layer method makes over them."""
    sample = data.sample(n, seed=seed) if hasattr(data, "sample") else data
    batches = [inputs for inputs, _ in sample.loader(batch_size)]
    if not batches:
        raise DataError(f"step {step}: the calibration data is empty")
    return batches


@dataclass(frozen=True)
class ChannelMoments:
    """Per input channel (conv) or input feature (linear): the mean and the mean square."""

    mean: torch.Tensor
    square: torch.Tensor

    @property
    def variance(self) -> torch.Tensor:
        return (self.square - self.mean.pow(2)).clamp_min(0)


class _ChannelSums(InputTap):
    def __init__(self, module: nn.Module) -> None:
        self.channel_dim = 1 if isinstance(module, nn.modules.conv._ConvNd) else -1
        self.sums: torch.Tensor | int = 0
        self.squares: torch.Tensor | int = 0
        self.count = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().double().movedim(self.channel_dim, -1)
        x = x.reshape(-1, x.shape[-1])
        self.sums = self.sums + x.sum(0)
        self.squares = self.squares + x.pow(2).sum(0)
        self.count += x.shape[0]


def channel_moments(model: nn.Module, names: Iterable[str], batches: Iterable[Any]) -> dict[str, ChannelMoments]:
    """layer name -> mean and mean square of its inputs per channel over `batches`, every call of
    the layer counted (layers never called are left out)."""
    modules = dict(model.named_modules())
    taps = {name: _ChannelSums(modules[name]) for name in names}
    run_passes(model, [(modules[name], tap) for name, tap in taps.items()], batches)
    return {
        name: ChannelMoments(tap.sums / tap.count, tap.squares / tap.count) for name, tap in taps.items() if tap.count
    }


@dataclass(frozen=True)
class PatchMoments:
    """Of a layer's input patches (im2col rows; features for a Linear): `gram` E[x_b^T x_b] per
    input block b of d entries ([groups * blocks_per_row, d, d], float64) and `mean` E[x] per entry
    ([groups * row_length]; for a padded convolution it counts the zeros at the border)."""

    gram: torch.Tensor
    mean: torch.Tensor


def patch_moments(
    model: nn.Module, module: nn.Module, d: int, batches: Iterable[Any], *, positions: int = 256, seed: int = 0
) -> PatchMoments:
    """`PatchMoments` of `module`'s inputs over the calibration `batches` (inputs of the whole model),
    from `positions` random output positions per image of a convolution."""
    sums = _PatchSums(module, d, positions, torch.Generator().manual_seed(seed))
    run_passes(model, [(module, sums)], batches)
    if sums.grams is None or sums.count == 0:
        raise RuntimeError("the calibration passes never reached the layer")
    return PatchMoments(sums.grams / sums.count, sums.totals / sums.count)


class _PatchSums(InputTap):
    conv_input = True
    every_call = False

    def __init__(self, module: nn.Module, d: int, positions: int, generator: torch.Generator) -> None:
        self.module, self.d, self.positions, self.generator = module, d, positions, generator
        self.grams: torch.Tensor | None = None
        self.totals: torch.Tensor | None = None
        self.count = 0

    def add(self, x: torch.Tensor) -> None:
        """One row per sampled input patch (or token): [rows, groups * row_length]."""
        if isinstance(self.module, nn.Conv2d):
            features = _conv_patches(self.module, x, self.positions, self.generator)
        else:
            features = x.detach().reshape(-1, x.shape[-1]).float()
        blocks = features.shape[1] // self.d
        if self.grams is None:
            self.grams = torch.zeros(blocks, self.d, self.d, dtype=torch.float64, device=features.device)
            self.totals = torch.zeros(features.shape[1], dtype=torch.float64, device=features.device)
        self.totals += features.sum(0).double()
        step = max(1, _FEATURE_BLOCK // max(1, features.shape[1]))
        for first in range(0, features.shape[0], step):
            part = features[first : first + step].reshape(-1, blocks, self.d)
            self.grams += torch.einsum("rbi,rbj->bij", part, part).double()
        self.count += features.shape[0]


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
    chosen = chosen.to(x.device)  # drawn on CPU: the same positions on every device
    rows, cols = (chosen // out_w) * sh, (chosen % out_w) * sw
    patches = torch.stack(
        [x[:, :, rows + i * dh, cols + j * dw] for i in range(kh) for j in range(kw)], 2
    )  # [n, C, kh*kw, P]
    return patches.reshape(x.shape[0], -1, len(chosen)).permute(0, 2, 1).reshape(-1, patches.shape[1] * kh * kw)
