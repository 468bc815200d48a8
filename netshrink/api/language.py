"""Language-model flows: generating text from a model or a compressed file, and finding its tokenizer.

A tokenizer is found, in this order, from what the caller gives (a `TextTokenizer`, a tokenizer.json,
a model folder or a GGUF file), from where the model came from (a folder or GGUF file records its
path in the file's header as `tokenizer`), or from the zoo (SmolLM2's ships in its package).
"""

from __future__ import annotations

from pathlib import Path

import torch

from netshrink.api.models import ModelSource, Source, resolve
from netshrink.devices import resolve_device, to_device
from netshrink.errors import ModelError, NetshrinkError
from netshrink.lm.generate import Generation, GenerationSettings
from netshrink.lm.generate import generate as generate_text
from netshrink.lm.tokenizer import TextTokenizer

#: Zoo models whose tokenizer netshrink knows.
ZOO_TOKENIZERS = ("smollm2-135m",)

Tokenizer = TextTokenizer | str | Path | None


def generate(
    model: ModelSource,
    prompt: str,
    *,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_k: int | None = None,
    seed: int = 0,
    tokenizer: Tokenizer = None,
    device: str | torch.device | None = None,
    data_dir: str | None = None,
    keep_compressed: bool = False,
) -> Generation:
    """Continue `prompt` with `model` (a zoo name, a .nsk file, a folder, a GGUF file or a module):
    greedy at temperature 0, else sampled. Settings and the prompt's length are checked first.
    `keep_compressed`: a .nsk file's palette and PQ layers run from their codes (`netshrink.load`)."""
    settings = GenerationSettings(max_new_tokens, temperature, top_k, seed)
    if not prompt:  # before the model is loaded
        raise NetshrinkError("the prompt is empty: give some text to continue")
    device = resolve_device(device)
    source = resolve(model, data_dir=data_dir, progress=False, keep_compressed=keep_compressed)
    text_tokenizer = find_tokenizer(source, tokenizer)
    module = to_device(source.module.eval(), device) if device is not None else source.module.eval()
    return generate_text(module, text_tokenizer, prompt, settings)


def find_tokenizer(source: Source, given: Tokenizer = None) -> TextTokenizer:
    """The tokenizer `given`, else the one the model's identity points to (see the module)."""
    if isinstance(given, TextTokenizer):
        return given
    if given is not None:
        return tokenizer_at(Path(given))
    identity = source.identity
    recorded = identity.extra.get("tokenizer") if identity is not None else None
    if isinstance(recorded, str) and Path(recorded).exists():
        return tokenizer_at(Path(recorded))
    if identity is not None and identity.name in ZOO_TOKENIZERS:
        from netshrink.lm.tokenizer import default_tokenizer

        return default_tokenizer()
    where = f" (its header points to {recorded}, which is not there)" if recorded else ""
    raise ModelError(
        f"no tokenizer known for {source.label}{where}: pass --tokenizer (a tokenizer.json, model folder or .gguf file)"
    )


def tokenizer_at(path: Path) -> TextTokenizer:
    """The tokenizer in a tokenizer.json, a model folder or a GGUF file."""
    from netshrink.lm import tokenizer as tokenizers

    if path.is_dir():
        return tokenizers.from_folder(path)
    if path.suffix == ".gguf":
        from netshrink.lm.gguf import read_gguf

        return tokenizers.from_gguf_metadata(read_gguf(path, weights=False).tokenizer, str(path))
    if path.name.endswith(".json") and path.is_file():
        return tokenizers.from_file(path)
    raise ModelError(f"{path}: not a tokenizer (give a tokenizer.json, a model folder or a .gguf file)")
