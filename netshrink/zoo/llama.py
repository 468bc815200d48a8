"""A Llama-style decoder-only language model (Touvron et al. 2023) in plain torch.

Pre-norm blocks: RMSNorm (Zhang & Sennrich 2019), causal self-attention with rotary position
embeddings (Su et al. 2021, RoFormer) and grouped-query attention (Ainslie et al. 2023: `kv_heads`
key/value heads, each shared by `heads / kv_heads` query heads), RMSNorm, then a SwiGLU MLP
(Shazeer 2020: `down(silu(gate(x)) * up(x))`). The token embedding may be tied to the LM head
(`tied`): one tensor under two names, which a .nsk file stores once.

Module names are those of Hugging Face's `LlamaForCausalLM` (`model.embed_tokens`, `model.layers.N.
self_attn.q_proj`, `model.norm`, `lm_head`), and rotary embeddings use its "rotate half" pairing, so
a Llama checkpoint of that layout loads strictly. Nothing is kept in buffers (the rotary angles are
computed per call): a model built on the meta device and materialised block by block
(`netshrink.streaming`) holds no tensor a checkpoint does not give.

The model exposes its prefix / blocks / suffix split (`BlockStructure`), so it can be compressed
one block at a time from a checkpoint larger than memory.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from netshrink.errors import ModelError
from netshrink.zoo.protocols import BlockLayout

#: Layer count a description (a file's header) may ask for.
MAX_LAYERS = 1024
ROPE_BASE = 10000  # Su et al. 2021, eq. 15; Llama's rope_theta (SmolLM2: 100000)
NORM_EPS = 1e-5  # Llama's rms_norm_eps


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in float32 (Zhang & Sennrich 2019)."""

    def __init__(self, dim: int, eps: float = NORM_EPS) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


def rotary_angles(
    length: int, head_dim: int, device: torch.device, base: float = ROPE_BASE, start: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of position * frequency for positions start..start+length-1, (length, head_dim),
    frequencies repeated over both halves."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    positions = torch.arange(start, start + length, device=device, dtype=torch.float32)
    angles = torch.outer(positions, inv_freq)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each (i, i + head_dim/2) pair of `x` (b, heads, t, head_dim) by its position's angle."""
    first, second = x.chunk(2, dim=-1)
    rotated = torch.cat((-second, first), dim=-1)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


class KVCache:
    """The keys and values of the positions seen so far, one pair per block, so that generating a
    token attends to the earlier ones without recomputing them (batch-1 generation reads each
    weight once per token instead of once per token per earlier position)."""

    def __init__(self, layers: int) -> None:
        self.keys: list[torch.Tensor | None] = [None] * layers
        self.values: list[torch.Tensor | None] = [None] * layers

    def length(self, layer: int = 0) -> int:
        """Positions already cached (in block `layer`)."""
        keys = self.keys[layer]
        return 0 if keys is None else keys.shape[2]

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this call's keys and values (b, kv_heads, t, head_dim); all of them so far."""
        if self.keys[layer] is not None:
            k = torch.cat((self.keys[layer], k), dim=2)
            v = torch.cat((self.values[layer], v), dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v


class Attention(nn.Module):
    """Causal grouped-query self-attention with rotary positions; no biases (Llama)."""

    def __init__(self, dim: int, heads: int, kv_heads: int, rope_theta: float = ROPE_BASE) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.rope_theta = rope_theta
        self.q_proj = nn.Linear(dim, heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(heads * self.head_dim, dim, bias=False)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        batch, length, _ = x.shape
        start = 0 if cache is None else cache.length(layer)
        q = self.q_proj(x).view(batch, length, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, length, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, self.kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = rotary_angles(length, self.head_dim, x.device, self.rope_theta, start)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.extend(layer, k, v)
        group = self.heads // self.kv_heads  # query heads per key/value head
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        context = F.scaled_dot_product_attention(q, k, v, **_causal_mask(length, start, x.device))
        return self.o_proj(context.transpose(1, 2).reshape(batch, length, -1))


def _causal_mask(length: int, start: int, device: torch.device) -> dict[str, Any]:
    """Attention arguments for `length` new positions after `start` cached ones: each sees every
    cached position and the new ones up to itself."""
    if start == 0:
        return {"is_causal": length > 1}
    if length == 1:
        return {}
    seen = (
        torch.arange(start + length, device=device)[None, :]
        <= torch.arange(start, start + length, device=device)[:, None]
    )
    return {"attn_mask": seen}


class MLP(nn.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x)) (Shazeer 2020)."""

    def __init__(self, dim: int, ffn: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, ffn, bias=False)
        self.up_proj = nn.Linear(dim, ffn, bias=False)
        self.down_proj = nn.Linear(ffn, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    """One pre-norm block: x + attn(norm(x)), then + mlp(norm(x)). Hidden (b, t, dim) in and out."""

    def __init__(
        self, dim: int, heads: int, kv_heads: int, ffn: int, rope_theta: float = ROPE_BASE, norm_eps: float = NORM_EPS
    ) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(dim, norm_eps)
        self.self_attn = Attention(dim, heads, kv_heads, rope_theta)
        self.post_attention_layernorm = RMSNorm(dim, norm_eps)
        self.mlp = MLP(dim, ffn)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cache, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    """Embedding, blocks, final norm: the `model.` part of Hugging Face's layout."""

    def __init__(
        self, vocab: int, dim: int, layers: int, heads: int, kv_heads: int, ffn: int, rope_theta: float, norm_eps: float
    ) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, dim)
        self.layers = nn.ModuleList(
            DecoderLayer(dim, heads, kv_heads, ffn, rope_theta, norm_eps) for _ in range(layers)
        )
        self.norm = RMSNorm(dim, norm_eps)


class Llama(nn.Module):
    """Token ids (b, t) -> next-token logits (b, t, vocab), attending only to earlier positions."""

    def __init__(
        self,
        vocab: int = 32000,
        dim: int = 512,
        layers: int = 8,
        heads: int = 8,
        kv_heads: int = 4,
        ffn: int = 1376,
        max_seq: int = 2048,
        tied: bool = True,
        rope_theta: float = ROPE_BASE,
        norm_eps: float = NORM_EPS,
    ) -> None:
        super().__init__()
        _check_shape(vocab, dim, layers, heads, kv_heads, ffn, max_seq)
        self.config = dict(
            vocab=vocab, dim=dim, layers=layers, heads=heads, kv_heads=kv_heads, ffn=ffn, max_seq=max_seq, tied=tied
        )
        if rope_theta != ROPE_BASE or norm_eps != NORM_EPS:  # recorded only when not the defaults: older files
            self.config.update(rope_theta=rope_theta, norm_eps=norm_eps)  # keep their exact headers
        self.model = LlamaModel(vocab, dim, layers, heads, kv_heads, ffn, rope_theta, norm_eps)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        if tied:
            self.lm_head.weight = self.model.embed_tokens.weight

    def arch_options(self) -> dict[str, Any]:
        """The `build_model("llama", ...)` arguments that rebuild this module's shape."""
        return dict(self.config)

    def block_layout(self) -> BlockLayout:
        return BlockLayout(prefix=("model.embed_tokens",), blocks="model.layers", suffix=("model.norm", "lm_head"))

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """The hidden states the first block takes: token embeddings (b, t, dim)."""
        tokens = _check_tokens(tokens, self.config["max_seq"])
        if tokens.numel() and not 0 <= int(tokens.min()) <= int(tokens.max()) < self.config["vocab"]:
            raise ModelError(
                f"llama: token ids {int(tokens.min())}..{int(tokens.max())} outside its vocabulary of "
                f"{self.config['vocab']} (text encoded with another model's tokenizer?)"
            )
        return self.model.embed_tokens(tokens)

    def run_block(self, block: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        return block(hidden)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits from the last block's hidden states: final norm, then the LM head."""
        return self.lm_head(self.model.norm(hidden))

    def forward(self, tokens: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Logits of every position; with a `cache`, `tokens` continue the cached ones (generation)."""
        if cache is not None and cache.length() + _token_count(tokens) > self.config["max_seq"]:
            raise ModelError(f"llama: {cache.length()} cached + {_token_count(tokens)} new tokens exceed max_seq")
        hidden = self.embed(tokens)
        for layer, block in enumerate(self.model.layers):
            hidden = block(hidden, cache, layer) if cache is not None else self.run_block(block, hidden)
        return self.head(hidden)

    def new_cache(self) -> KVCache:
        """An empty key/value cache for `forward(tokens, cache)`."""
        return KVCache(len(self.model.layers))


def _check_shape(vocab: int, dim: int, layers: int, heads: int, kv_heads: int, ffn: int, max_seq: int) -> None:
    """Shapes the layers can hold: a named ModelError instead of a view error deep in a forward."""
    if min(vocab, dim, heads, kv_heads, ffn, max_seq) < 1 or not 1 <= layers <= MAX_LAYERS:
        raise ModelError(
            f"llama needs positive vocab, dim, heads, kv_heads, ffn, max_seq and 1..{MAX_LAYERS} layers; "
            f"got vocab={vocab} dim={dim} layers={layers} heads={heads} kv_heads={kv_heads} ffn={ffn} max_seq={max_seq}"
        )
    if dim % heads or (dim // heads) % 2:
        raise ModelError(f"llama: dim {dim} must split into {heads} heads of an even width (rotary pairs)")
    if heads % kv_heads:
        raise ModelError(f"llama: {heads} query heads must be a multiple of the {kv_heads} key/value heads")


def _token_count(tokens: Any) -> int:
    return tokens.shape[-1] if isinstance(tokens, torch.Tensor) else 0


def _check_tokens(tokens: Any, max_seq: int) -> torch.Tensor:
    if isinstance(tokens, (tuple, list)) and tokens and isinstance(tokens[0], torch.Tensor):
        tokens = tokens[0]  # an (ids, mask) text batch: a causal model needs no padding mask for full rows
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2:
        raise ModelError(f"llama takes token ids of shape (batch, length); got {getattr(tokens, 'shape', tokens)}")
    if tokens.is_floating_point():
        if not torch.equal(tokens, tokens.round()):
            raise ModelError("llama takes integer token ids, got fractional values")
        tokens = tokens.long()  # whole-number ids as floats: the zero input shape-only tools pass
    if tokens.shape[1] > max_seq:
        raise ModelError(f"llama: {tokens.shape[1]} tokens exceed max_seq={max_seq}")
    return tokens


def llama(**arch: Any) -> Llama:
    """A Llama-style decoder (random weights: no weights are published for it)."""
    return Llama(**arch)


__all__ = ["KVCache", "Llama", "RMSNorm", "apply_rotary", "llama", "rotary_angles"]
