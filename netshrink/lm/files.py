"""Language models from the files users have: a Hugging Face Llama folder (config.json,
*.safetensors, tokenizer.json) or a GGUF file (`load_gguf_model`).

What a user who has the original weights of a Llama-architecture model (SmolLM2-135M in fp16,
TinyLlama, ...) points netshrink at: the folder `save_pretrained` writes. The architecture is read
from config.json and checked for what `netshrink.zoo.llama` does not implement (biases, scaled
rotary embeddings, another activation); the weights are read tensor by tensor, one or several
safetensors shards, converted to float32, into a model built without weights, so loading holds the
model once. Nothing is unpickled and nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from netshrink import zoo
from netshrink.errors import ModelError
from netshrink.placement import TensorPlacer
from netshrink.streaming.checkpoint import SafetensorsCheckpoint

CONFIG = "config.json"
ARCHITECTURES = ("llama",)


def is_model_folder(path: Path) -> bool:
    """A folder with a config.json: what `save_pretrained` writes."""
    return path.is_dir() and (path / CONFIG).is_file()


def folder_arch(folder: Path) -> dict[str, Any]:
    """The `Llama(**arch)` arguments of the folder's config.json; a ModelError for what it cannot run."""
    config = _read_config(folder)
    kind = config.get("model_type")
    if kind not in ARCHITECTURES:
        raise ModelError(f"{folder}: unsupported architecture {kind!r}; netshrink reads {', '.join(ARCHITECTURES)}")
    for flag in ("attention_bias", "mlp_bias"):
        if config.get(flag):
            raise ModelError(f"{folder}: {flag} is set; netshrink's Llama has no biases")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise ModelError(f"{folder}: rotary scaling {rope.get('rope_type', rope.get('type'))!r} is not supported")
    if config.get("hidden_act", "silu") != "silu":
        raise ModelError(f"{folder}: activation {config['hidden_act']!r} is not supported (Llama uses silu)")
    try:
        dim, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
        if int(config.get("head_dim") or dim // heads) != dim // heads:
            raise ModelError(f"{folder}: head_dim {config['head_dim']} differs from hidden_size / heads")
        return dict(
            vocab=int(config["vocab_size"]),
            dim=dim,
            layers=int(config["num_hidden_layers"]),
            heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
            ffn=int(config["intermediate_size"]),
            max_seq=int(config.get("max_position_embeddings") or 2048),
            tied=bool(config.get("tie_word_embeddings", False)),
            rope_theta=float(rope.get("rope_theta") or config.get("rope_theta") or 10000.0),
            norm_eps=float(config.get("rms_norm_eps") or 1e-6),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{folder}/{CONFIG}: missing or malformed field ({type(exc).__name__}: {exc})") from None


def load_folder(folder: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The folder's model in eval mode, its weights in float32, and its `llama` arch."""
    folder = Path(folder)
    arch = folder_arch(folder)
    module = zoo.build_empty("llama", **arch)
    expected = {name: tuple(t.shape) for name, t in module.state_dict().items()}
    placer = TensorPlacer(module)
    for shard in _shards(folder):
        checkpoint = SafetensorsCheckpoint.open(shard)
        for name, entry in checkpoint.entries.items():
            if expected.get(name) != entry.shape:
                why = (
                    "is not in the model" if name not in expected else f"has shape {entry.shape}, not {expected[name]}"
                )
                raise ModelError(f"{shard}: tensor {name!r} {why}; the weights do not match {CONFIG}")
            placer.place(name, checkpoint.read(name))
    placer.check_complete(str(folder))
    return module.eval(), arch


def load_gguf_model(path: str | Path) -> Any:
    """A GGUF file's model: a `netshrink.zoo.llama.Llama` in eval mode holding its float32 weights."""
    from netshrink.lm.gguf import read_gguf

    model = read_gguf(path)
    module = zoo.build_empty("llama", **model.arch)  # no random initialisation to overwrite
    placer = TensorPlacer(module)
    for name, tensor in model.state_dict.items():
        placer.place(name, tensor)
    placer.check_complete(str(path))
    return module.eval()


def _read_config(folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{folder}/{CONFIG}: not readable JSON ({exc})") from None
    if not isinstance(config, dict):
        raise ModelError(f"{folder}/{CONFIG}: not a JSON object")
    return config


def _shards(folder: Path) -> list[Path]:
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        raise ModelError(f"{folder}: no .safetensors weights (netshrink reads no pickled .bin files)")
    return shards


__all__ = ["folder_arch", "is_model_folder", "load_folder", "load_gguf_model"]
