"""Calibration for block-by-block compression: the token batches, and each part's inputs as a data set.

The tokens are a text data set's sentences packed into rows of equal length when one is named
(STS-B's, tokenized with the BERT WordPiece vocabulary), else seeded random token ids. Random
tokens exercise every layer and make a run reproducible anywhere, but calibration-based steps fit
real text better; the run says which it used. A part's inputs (the tokens for the embedding, the
hidden states for a block) are handed to its steps as `Activations`, which batch like the training
data sets (`sample`, `loader` yielding (inputs, labels)), so the steps' calibration passes run on
them unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from netshrink.errors import DataError


@dataclass(frozen=True)
class CalibrationTokens:
    tokens: torch.Tensor  # (samples, length) int64
    source: str  # for people: where they came from


def calibration_tokens(
    calibration: Any,
    vocab: int,
    samples: int,
    length: int,
    seed: int,
    data_dir: str | None = None,
    tokenizer: Any = None,
) -> CalibrationTokens:
    """Token rows from `calibration`: a (samples, length) integer tensor, a text data set's name, or
    None for seeded random ids."""
    if samples < 1 or length < 1:
        raise DataError(f"calibration needs at least one sample of one token, got {samples} x {length}")
    if isinstance(calibration, torch.Tensor):
        tokens, source = calibration, "the given token tensor"
    elif isinstance(calibration, str):
        tokens = _text_tokens(calibration, samples, length, data_dir, seed, tokenizer)
        source = f"{calibration} text"
    elif calibration is None:
        generator = torch.Generator().manual_seed(seed)
        tokens = torch.randint(0, vocab, (samples, length), generator=generator)
        source = f"random tokens (seed {seed}; name a text data set for real text)"
    else:
        raise DataError(
            f"calibration must be a token tensor, a data set name or None, not {type(calibration).__name__}"
        )
    if tokens.dim() != 2 or tokens.is_floating_point() or tokens.numel() == 0:
        raise DataError(f"calibration tokens must be a non-empty integer (samples, length) tensor, got {tokens.shape}")
    if int(tokens.min()) < 0 or int(tokens.max()) >= vocab:
        raise DataError(f"calibration token ids must lie in 0..{vocab - 1} (the model's vocab), {source} do not")
    return CalibrationTokens(tokens.long().contiguous(), f"{len(tokens)} x {tokens.shape[1]} {source}")


def _text_tokens(
    name: str, samples: int, length: int, data_dir: str | None, seed: int = 0, tokenizer: Any = None
) -> torch.Tensor:
    """The data set's text: token windows of that length as they are (`samples` of them, a seeded
    sample spread over all the works), else its text (sentences with their padding dropped)
    joined and cut into `samples` rows of `length`."""
    from netshrink.data import load_dataset
    from netshrink.data.text import PAD_ID

    data = load_dataset(name, "train", data_dir, tokenizer=tokenizer)
    ids = getattr(data, "tokens", None)
    if ids is None or ids.is_floating_point():
        raise DataError(f"calibration data set {name} holds no text")
    windows = getattr(data, "metric", None) == "perplexity"
    if windows and ids.shape[1] == length and len(ids) >= samples:
        return data.sample(samples, seed).tokens
    stream = ids.reshape(-1)
    if not windows:  # token windows hold no padding; id 0 is a real token
        stream = stream[stream != PAD_ID]
    if len(stream) < samples * length:
        raise DataError(f"{name} has {len(stream)} tokens, fewer than the {samples} x {length} asked for calibration")
    return stream[: samples * length].reshape(samples, length)


class Activations:
    """A part's calibration inputs (tokens or hidden states), batched like a training data set."""

    def __init__(self, values: torch.Tensor) -> None:
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    def sample(self, n: int, seed: int = 0) -> Activations:
        """A seeded random subset of `n` rows in order (all of them when there are no more)."""
        if n >= len(self):
            return self
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n].sort().values
        return Activations(self.values[order])

    def loader(self, batch_size: int, shuffle: bool = False, augment: str | None = None, seed: int = 0) -> _Batches:
        """(inputs, placeholder labels) batches in order; calibration neither shuffles nor augments."""
        return _Batches(self.values, batch_size)


@dataclass(frozen=True)
class _Batches:
    values: torch.Tensor
    batch_size: int

    def __len__(self) -> int:
        return -(-len(self.values) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self.values), self.batch_size):
            batch = self.values[start : start + self.batch_size]
            yield batch, torch.zeros(len(batch), dtype=torch.long)


def run_in_batches(run: Any, values: torch.Tensor, batch_size: int) -> torch.Tensor:
    """`run` over `values` a batch at a time (no autograd), the outputs joined."""
    with torch.no_grad():
        return torch.cat([run(values[start : start + batch_size]) for start in range(0, len(values), batch_size)])
