"""Text generation from a causal language model: greedy or sampled, one token at a time.

Models that offer a key/value cache (`new_cache()`, as `netshrink.zoo.llama` does) run the prompt
once and then one position per new token, so each weight is read once per token: what batch-1
generation on a CPU costs, and what the tokens-per-second figure measures. Other modules (a user's
`transformers` model) are run on the whole sequence at every step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from netshrink.errors import NetshrinkError
from netshrink.lm.tokenizer import TextTokenizer

MAX_NEW_TOKENS = 1 << 16


@dataclass(frozen=True)
class GenerationSettings:
    """How to pick each next token: greedy at temperature 0, else sampled (top-k when given)."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_k: int | None = None
    seed: int = 0
    stop_at_eos: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise NetshrinkError(f"max_new_tokens must be 1..{MAX_NEW_TOKENS}, got {self.max_new_tokens}")
        if not 0 <= self.temperature < float("inf"):
            raise NetshrinkError(f"temperature must be >= 0 and finite, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise NetshrinkError(f"top_k must be >= 1, got {self.top_k}")


@dataclass
class Generation:
    """The generated text and how fast it came: prompt and new token counts, seconds for each phase."""

    prompt: str
    text: str
    prompt_tokens: int
    new_tokens: int
    prompt_seconds: float
    generate_seconds: float

    @property
    def tokens_per_second(self) -> float:
        """New tokens per second after the prompt was read (the decoding speed)."""
        return self.new_tokens / self.generate_seconds if self.generate_seconds > 0 else float("inf")

    def to_json(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "text": self.text,
            "prompt_tokens": self.prompt_tokens,
            "new_tokens": self.new_tokens,
            "prompt_seconds": self.prompt_seconds,
            "generate_seconds": self.generate_seconds,
            "tokens_per_second": self.tokens_per_second,
        }

    def to_text(self) -> str:
        return f"{self.prompt}{self.text}\n\n[{self.new_tokens} tokens, {self.tokens_per_second:.1f} tokens/s]"


def logits_of(output: Any) -> torch.Tensor:
    """The logits tensor of a model's output: a tensor, or a `transformers` output's `.logits`."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise NetshrinkError(f"the model returned {type(output).__name__}, not next-token logits")


def max_length(model: nn.Module) -> int | None:
    """The longest sequence the model takes, when it says."""
    config = getattr(model, "config", None)
    if isinstance(config, dict):
        return config.get("max_seq")
    return getattr(config, "max_position_embeddings", None)


@torch.no_grad()
def generate(
    model: nn.Module, tokenizer: TextTokenizer, prompt: str, settings: GenerationSettings = GenerationSettings()
) -> Generation:
    """Continue `prompt`; a prompt that with the new tokens exceeds the model's context is refused first."""
    ids = tokenizer.encode(prompt)
    if not ids:
        raise NetshrinkError("the prompt is empty: give some text to continue")
    limit = max_length(model)
    if limit is not None and len(ids) + settings.max_new_tokens > limit:
        raise NetshrinkError(
            f"the prompt ({len(ids)} tokens) and {settings.max_new_tokens} new tokens exceed the model's "
            f"context of {limit} tokens"
        )
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(settings.seed)
    start = time.perf_counter()
    step = _Stepper(model, torch.tensor([ids], device=device))
    logits = step.first()
    prompt_seconds = time.perf_counter() - start
    new: list[int] = []
    start = time.perf_counter()
    while True:
        token = _pick(logits[0, -1].float().cpu(), settings, generator)
        new.append(token)
        if len(new) == settings.max_new_tokens or (settings.stop_at_eos and token == tokenizer.eos_id):
            break
        logits = step.next(token)
    seconds = time.perf_counter() - start
    return Generation(prompt, tokenizer.decode(new), len(ids), len(new), prompt_seconds, seconds)


class _Stepper:
    """Runs the model on the prompt, then on each new token: with its cache when it has one."""

    def __init__(self, model: nn.Module, ids: torch.Tensor) -> None:
        self.model, self.ids = model, ids
        self.cache = model.new_cache() if hasattr(model, "new_cache") else None

    def first(self) -> torch.Tensor:
        return self._run(self.ids)

    def next(self, token: int) -> torch.Tensor:
        new = torch.tensor([[token]], device=self.ids.device)
        self.ids = torch.cat((self.ids, new), dim=1)
        return self._run(new if self.cache is not None else self.ids)

    def _run(self, ids: torch.Tensor) -> torch.Tensor:
        output = self.model(ids, self.cache) if self.cache is not None else self.model(ids)
        return logits_of(output)


def _pick(logits: torch.Tensor, settings: GenerationSettings, generator: torch.Generator) -> int:
    if settings.temperature == 0:
        return int(logits.argmax())
    scaled = logits / settings.temperature
    if settings.top_k is not None and settings.top_k < scaled.numel():
        kth = scaled.topk(settings.top_k).values[-1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    return int(torch.multinomial(scaled.softmax(-1), 1, generator=generator))


__all__ = ["Generation", "GenerationSettings", "generate", "logits_of", "max_length"]
