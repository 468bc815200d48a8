"""Tiny Llama checkpoints, written as .safetensors with the metadata that names their model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

ARCH = dict(vocab=64, dim=32, layers=3, heads=4, kv_heads=2, ffn=48, max_seq=32, tied=False)


def write_checkpoint(path: Path, tied: bool = False, layers: int = 3, drop: str | None = None) -> torch.nn.Module:
    """A seeded tiny llama saved at `path` (without tensor `drop`); the model is returned."""
    from safetensors.torch import save_file

    from netshrink.zoo import build_model

    arch = {**ARCH, "tied": tied, "layers": layers}
    torch.manual_seed(0)
    model = build_model("llama", **arch).eval()
    state = {k: v for k, v in model.state_dict().items() if k != drop and not (tied and k == "lm_head.weight")}
    save_file(state, str(path), metadata={"netshrink_model": "llama", "arch": json.dumps(arch)})
    return model


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "llama.safetensors"
    write_checkpoint(path)
    return path


@pytest.fixture
def tied_checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "tied.safetensors"
    write_checkpoint(path, tied=True)
    return path


def recipe_file(folder: Path, name: str, steps: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\nsteps:\n{steps}")
    return path
