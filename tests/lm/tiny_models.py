"""Tiny language models written the ways users have them: a GGUF file (as llama.cpp's converter
writes it, query/key rows permuted, a byte-level BPE tokenizer inside) and a Hugging Face folder."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from netshrink.zoo import build_model

ARCH = dict(vocab=300, dim=32, layers=2, heads=4, kv_heads=2, ffn=48, max_seq=64, tied=True, rope_theta=500.0)
MERGES = ["h e", "l l", "he ll", "o r", "Ġ w", "Ġw or", "Ġwor l", "Ġworl d"]


def tiny_llama(**changes) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("llama", **{**ARCH, **changes}).eval()


def byte_vocab() -> list[str]:
    """GPT-2's byte-to-unicode alphabet (256 symbols), a few merged tokens, padded to the vocabulary."""
    from tokenizers import pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    merged = ["".join(m.split(" ")) for m in MERGES]
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *alphabet, *merged]
    return tokens + [f"<unused{i}>" for i in range(ARCH["vocab"] - len(tokens))]


def gguf_permute(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """llama.cpp's converter: each head's rows reordered so rotary pairs are adjacent."""
    rows, cols = weight.shape
    return weight.reshape(heads, 2, rows // heads // 2, cols).transpose(1, 2).reshape(rows, cols)


def write_gguf(model: torch.nn.Module, path: Path, architecture: str = "llama", tensor_type: str = "F32") -> Path:
    import gguf
    import numpy as np

    cfg = model.config
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(cfg["layers"])
    writer.add_context_length(cfg["max_seq"])
    writer.add_embedding_length(cfg["dim"])
    writer.add_feed_forward_length(cfg["ffn"])
    writer.add_head_count(cfg["heads"])
    writer.add_head_count_kv(cfg["kv_heads"])
    writer.add_rope_freq_base(cfg.get("rope_theta", 10000.0))
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model("gpt2")
    tokens = byte_vocab()
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t.startswith("<|") else 1 for t in tokens])
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    names = {hf: g for g, hf in _gguf_names(cfg["layers"]).items()}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and cfg["tied"]:
            continue
        if name.endswith(("q_proj.weight", "k_proj.weight")):
            tensor = gguf_permute(tensor, cfg["heads"] if "q_proj" in name else cfg["kv_heads"])
        array = tensor.numpy().astype(np.float32)
        if tensor_type == "Q8_0" and array.ndim == 2 and array.shape[1] % 32 == 0:
            writer.add_tensor(
                names[name],
                gguf.quants.quantize(array, gguf.GGMLQuantizationType.Q8_0),
                raw_dtype=gguf.GGMLQuantizationType.Q8_0,
            )
        else:
            writer.add_tensor(names[name], array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _gguf_names(layers: int) -> dict[str, str]:
    from netshrink.lm.gguf import BLOCK_NAMES, TOP_NAMES

    names = dict(TOP_NAMES)
    for i in range(layers):
        names.update({f"blk.{i}.{g}": f"model.layers.{i}.{hf}" for g, hf in BLOCK_NAMES.items()})
    return names


def write_folder(model: torch.nn.Module, folder: Path, dtype: torch.dtype = torch.float16) -> Path:
    """config.json, model.safetensors (tied head left out, as save_pretrained does) and tokenizer.json."""
    from safetensors.torch import save_file

    from netshrink.lm.tokenizer import from_gguf_metadata

    cfg = model.config
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": cfg["vocab"],
        "hidden_size": cfg["dim"],
        "num_hidden_layers": cfg["layers"],
        "num_attention_heads": cfg["heads"],
        "num_key_value_heads": cfg["kv_heads"],
        "intermediate_size": cfg["ffn"],
        "max_position_embeddings": cfg["max_seq"],
        "tie_word_embeddings": cfg["tied"],
        "rope_theta": cfg.get("rope_theta", 10000.0),
        "rms_norm_eps": 1e-5,
        "hidden_act": "silu",
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    (folder / "config.json").write_text(json.dumps(config))
    state = {
        k: v.to(dtype).contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight" or not cfg["tied"]
    }
    save_file(state, str(folder / "model.safetensors"))
    tokenizer = from_gguf_metadata(tokenizer_metadata(), "tiny")
    tokenizer.backend.save(str(folder / "tokenizer.json"))
    return folder


def tokenizer_metadata() -> dict:
    tokens = byte_vocab()
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": [3 if t.startswith("<|") else 1 for t in tokens],
        "tokenizer.ggml.merges": MERGES,
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
    }
