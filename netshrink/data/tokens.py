"""Text as fixed-length windows of token ids, for causal language models.

Each text (a whole work: a play, a poem) is encoded on its own, the encodings are joined with the
tokenizer's end-of-sequence id between works, and the stream is cut into non-overlapping windows
of `length` tokens; the tail shorter than a window is dropped, so every window is full and a
batch needs no padding or mask. A window may span the end of one work and the start of the next:
the eos id between them tells the model where one ends.

A batch is `(x, y)` with x = y = the windows' ids (B, length), int64: the loss shifts (token t is
predicted from the tokens before it in its window), so the code that takes `for x, y in
data.loader(batch_size)` (calibration passes, evaluation, the training loop) feeds x to the model
unchanged. `metric = "perplexity"` tells the evaluator how to score it (netshrink/evaluate.py).

Any tokenizer works that has `encode(text) -> list[int]` and an `eos_id` attribute.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch

from netshrink.data.arrays import BatchLoader
from netshrink.errors import DataError

#: Tokens per window unless asked otherwise: long enough for most of a scene as context, short
#: enough that a 135M-parameter model scores a window in well under a second on a CPU.
DEFAULT_LENGTH = 512


class Tokenizer(Protocol):
    """What windows need of a tokenizer: text to ids, and the id that ends a document."""

    eos_id: int

    def encode(self, text: str) -> list[int]: ...


@dataclass(eq=False)
class TokenWindows:
    """Token ids (N, length), int64, one row per window; x and y of a batch are both the rows."""

    metric: ClassVar[str] = "perplexity"

    tokens: torch.Tensor

    def __post_init__(self) -> None:
        if self.tokens.dim() != 2 or self.tokens.is_floating_point() or self.tokens.shape[1] < 2:
            raise DataError(
                "token windows must be integer (N, length) with length >= 2 (a window's first token is "
                f"only context), got {self.tokens.dtype} {tuple(self.tokens.shape)}"
            )
        self.tokens = self.tokens.to(torch.int64)

    @classmethod
    def from_texts(cls, texts: Sequence[str], tokenizer: Tokenizer, length: int = DEFAULT_LENGTH) -> TokenWindows:
        """Each text encoded separately, joined with `tokenizer.eos_id`, cut into full windows."""
        if length < 2:
            raise DataError(f"windows need at least 2 tokens (context and a prediction), got length {length}")
        stream = token_stream(texts, tokenizer)
        count = len(stream) // length
        if count == 0:
            raise DataError(f"the texts give {len(stream)} tokens, fewer than one window of {length}")
        return cls(torch.tensor(stream[: count * length], dtype=torch.int64).reshape(count, length))

    @property
    def length(self) -> int:
        return self.tokens.shape[1]

    @property
    def predicted_tokens(self) -> int:
        """How many tokens perplexity scores: all but the first of each window."""
        return len(self) * (self.length - 1)

    def __len__(self) -> int:
        return len(self.tokens)

    def subset(self, indices: torch.Tensor) -> TokenWindows:
        return TokenWindows(self.tokens[indices])

    def sample(self, n: int, seed: int = 0) -> TokenWindows:
        """A deterministic random subset of `n` windows, in text order (spread over all the works
        rather than the first ones)."""
        if n >= len(self):
            return self
        generator = torch.Generator().manual_seed(seed)
        return self.subset(torch.randperm(len(self), generator=generator)[:n].sort().values)

    def loader(self, batch_size: int, shuffle: bool = False, augment: str | None = None, seed: int = 0) -> WindowLoader:
        """Batches of (ids, ids), each (B, length); text takes no augmentation."""
        if augment:
            raise DataError(f"augmentation {augment!r} is for images; token windows take none")
        return WindowLoader(self, batch_size, shuffle, None, seed)


class WindowLoader(BatchLoader):
    """The image loader's epochs and shuffling (seed + epoch), over windows instead of images."""

    def _batch(self, order: torch.Tensor | None, start: int, generator: torch.Generator) -> tuple:
        stop = min(start + self.batch_size, len(self.data))
        ids = self.data.tokens[slice(start, stop) if order is None else order[start:stop]]
        return ids, ids


def token_stream(texts: Sequence[str], tokenizer: Tokenizer) -> list[int]:
    """The texts' ids, one text after another, with the eos id between consecutive texts."""
    eos = getattr(tokenizer, "eos_id", None)
    if not isinstance(eos, int):
        raise DataError(f"the tokenizer {type(tokenizer).__name__} has no integer eos_id to join texts with")
    stream: list[int] = []
    for index, text in enumerate(texts):
        if index:
            stream.append(eos)
        stream.extend(tokenizer.encode(text))
    return stream
