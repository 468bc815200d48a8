"""Scoring a model on the held-out split of a dataset.

The metric is named in the result and chosen by the dataset (`metric` attribute; images: top-1
accuracy, STS-B sentence pairs: Spearman correlation of cosine similarity with the gold score,
token windows of text: perplexity, lower is better). How a metric prints and which way is better
is in netshrink/metrics.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from netshrink import metrics
from netshrink.data import ArrayDataset, SentencePairs, TokenWindows, load_dataset
from netshrink.devices import model_device, placed_on
from netshrink.errors import ModelError, NetshrinkError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalResult:
    """A score: `metric` names it ("top1" is a fraction in [0, 1], "spearman" a correlation in
    [-1, 1], "perplexity" a number >= 1, lower is better), `n` is the sample count (token windows
    for perplexity); `model` and `dataset` say what was scored on what."""

    metric: str
    value: float
    n: int
    model: str = field(default="", compare=False)
    dataset: str = field(default="", compare=False)

    def __str__(self) -> str:
        return f"{self.metric} {self.show(self.value)} on {self.n} {self.unit}"

    @property
    def unit(self) -> str:
        """What `n` counts: samples, or token windows for perplexity."""
        return "windows" if self.metric == metrics.PERPLEXITY else "samples"

    def to_text(self) -> str:
        return f"{self.model} on {self.dataset}: {self}"

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "dataset": self.dataset, "metric": self.metric, "value": self.value, "n": self.n}

    def show(self, value: float) -> str:
        """`value` in this metric's usual form: accuracy as a percentage, perplexity and
        correlations as numbers."""
        return metrics.show_value(self.metric, value)

    def show_change(self, before: float) -> str:
        """The change from `before`: percentage points for accuracy, relative for perplexity,
        plain difference otherwise."""
        return metrics.show_change(self.metric, self.value, before)


def evaluate(
    model: nn.Module,
    dataset: str | ArrayDataset | SentencePairs | TokenWindows,
    data_dir: str | Path | None = None,
    split: str = "test",
    batch_size: int = 256,
    progress: bool = True,
    limit: int | None = None,
    device: torch.device | None = None,
) -> EvalResult:
    """Top-1 accuracy (Spearman for sentence pairs, perplexity for token windows) of `model` on
    `split` of `dataset` (a name or a dataset).

    A 1000-way model on an ImageNet subset (Imagenette) is scored against the ImageNet
    indices of its labels; otherwise outputs must match the dataset's classes. `limit` scores
    a deterministic random subset of that many samples (datasets are stored sorted by class).
    `device`: where to compute (the model is moved back after); None: where the model is.
    """
    if limit is not None and limit < 1:  # 0 would report a score on nothing; a negative slice, the wrong samples
        raise NetshrinkError(f"limit must be a positive number of samples, got {limit}")
    data = load_dataset(dataset, split, data_dir) if isinstance(dataset, str) else dataset
    if limit is not None:
        data = data.sample(limit)
    name = dataset if isinstance(dataset, str) else "dataset"
    desc = f"eval {name}/{split}"
    with placed_on(model, device):
        metric = getattr(data, "metric", metrics.ACCURACY)
        if metric == "spearman":
            result = EvalResult("spearman", _pair_spearman(model, data, batch_size, progress, desc), len(data))
        elif metric == metrics.PERPLEXITY:
            nll = window_nll(model, data, batch_size, progress, desc)
            result = EvalResult(metric, perplexity(nll), len(data))
        else:
            predicted, target = top1_predictions(model, data, batch_size, progress, desc=desc)
            correct = int((predicted == target).sum())
            result = EvalResult("top1", correct / max(len(data), 1), len(data))
    log.info("%s/%s: %s", name, split, result)
    return result


def top1_predictions(
    model: nn.Module, data: ArrayDataset, batch_size: int = 256, progress: bool = False, desc: str = "eval"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(the model's top-1 output index, the output index of the sample's label) per sample, in
    `data`'s order: what a paired comparison of two models on the same samples needs (McNemar's
    test, agreement with the uncompressed model)."""
    model.eval()
    # Channels-last runs the convolutions of image models ~1.7x faster on CPU (measured on
    # EfficientNet-Lite0); it changes memory layout only, never values.
    model.to(memory_format=torch.channels_last)
    device = model_device(model)
    predicted, targets, label_map = [], [], None
    with torch.inference_mode():
        batches = data.loader(batch_size)
        for x, y in tqdm(batches, desc=desc, unit="batch", disable=not progress):
            x = x.to(device)
            logits = model(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x)
            if label_map is None:  # the label space depends on the model's output width
                label_map = data.label_map(logits.shape[1]).to(device)
            predicted.append(logits.argmax(1).cpu())
            targets.append(label_map[y.to(device)].cpu())
    if not predicted:
        return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
    return torch.cat(predicted), torch.cat(targets)


def _pair_spearman(model: nn.Module, data: SentencePairs, batch_size: int, progress: bool, desc: str) -> float:
    """Spearman correlation between cos(embedding 1, embedding 2) and the gold score of each pair
    (the STS-B protocol of Reimers & Gurevych 2019)."""
    model.eval()
    device = model_device(model)
    similarities = []
    with torch.inference_mode():
        for (ids, mask), scores in tqdm(data.loader(batch_size), desc=desc, unit="batch", disable=not progress):
            embeddings = model(ids.to(device), mask.to(device)).float()
            first, second = embeddings[: len(scores)], embeddings[len(scores) :]
            similarities.append(torch.nn.functional.cosine_similarity(first, second).cpu())
    return spearman(torch.cat(similarities), data.scores)


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman's rank correlation: Pearson correlation of the ranks, ties given their mean rank."""
    rx, ry = average_ranks(x.double()), average_ranks(y.double())
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = float(rx.norm() * ry.norm())
    return float((rx * ry).sum()) / denominator if denominator > 0 else 0.0


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks of a 1-D tensor, tied values sharing the mean of their ranks (scipy's "average")."""
    order = values.argsort(stable=True)
    _, inverse, counts = torch.unique_consecutive(values[order], return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()  # rank of the last member of each run of ties
    mean_rank = ends - (counts.double() - 1) / 2
    ranks = torch.empty(values.shape, dtype=torch.float64)
    ranks[order] = mean_rank[inverse]
    return ranks


#: Tokens per forward pass when scoring windows: the logits of a batch are tokens x vocab floats
#: (49152 for SmolLM2: 0.8 GB at 4096 tokens), however large the requested batch size.
MAX_TOKENS_PER_FORWARD = 4096


def window_nll(
    model: nn.Module, data: TokenWindows, batch_size: int = 8, progress: bool = False, desc: str = "eval"
) -> torch.Tensor:
    """Each window's mean next-token negative log-likelihood (nats), float64 (N,): token t
    predicted from the tokens before it in its window, the first token only context."""
    model.eval()
    device = model_device(model)
    per_forward = max(1, min(batch_size, MAX_TOKENS_PER_FORWARD // data.length))
    means = []
    with torch.inference_mode():
        for x, _ in tqdm(data.loader(per_forward), desc=desc, unit="batch", disable=not progress):
            x = x.to(device)
            logits = model(x)
            if not isinstance(logits, torch.Tensor) or logits.dim() != 3 or logits.shape[:2] != x.shape:
                raise ModelError(
                    f"perplexity needs a causal language model returning logits (batch, tokens, vocab) for "
                    f"token ids {tuple(x.shape)}; {type(model).__name__} returned {getattr(logits, 'shape', type(logits))}"
                )
            means.extend(next_token_nll(row_logits, row) for row_logits, row in zip(logits, x))
    return torch.tensor(means, dtype=torch.float64)


def next_token_nll(logits: torch.Tensor, tokens: torch.Tensor) -> float:
    """Mean -log p(tokens[t] | tokens[:t]) over t >= 1 of one window, given its logits (t, vocab).
    Computed row by row in float32, so a batch never holds a second vocab-wide copy."""
    return float(F.cross_entropy(logits[:-1].float(), tokens[1:], reduction="mean"))


def perplexity(window_nlls: torch.Tensor) -> float:
    """exp(mean next-token NLL over every predicted token): windows have equal length, so the mean
    of their means is the mean over tokens."""
    return float(torch.exp(window_nlls.double().mean())) if len(window_nlls) else float("nan")
