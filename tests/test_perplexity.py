"""Perplexity of token windows: a hand-computed value, a perfect model, the shift, how it prints."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from netshrink import metrics
from netshrink.data import TokenWindows
from netshrink.errors import ModelError
from netshrink.evaluate import EvalResult, evaluate, perplexity, window_nll

VOCAB = 4


class FixedLogits(nn.Module):
    """The same next-token distribution (1/2, 1/4, 1/8, 1/8) at every position."""

    def __init__(self) -> None:
        super().__init__()
        self.logp = nn.Parameter(torch.tensor([0.5, 0.25, 0.125, 0.125]).log())

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.logp.expand(*tokens.shape, VOCAB)


class NextOfCurrent(nn.Module):
    """Predicts token (x_t + 1) mod VOCAB at position t with near certainty: the logits at t are for
    the token after t, as a causal language model's are."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return 50.0 * nn.functional.one_hot((tokens + 1) % VOCAB, VOCAB).float()


def test_perplexity_matches_a_hand_computed_value() -> None:
    data = TokenWindows(torch.tensor([[0, 1, 2, 3], [3, 0, 0, 0]]))
    # predicted tokens (the first of each window is only context): 1, 2, 3 and 0, 0, 0
    # -log2 p: 2, 3, 3 and 1, 1, 1 -> mean 11/6 bits -> perplexity 2 ** (11 / 6)
    nll = window_nll(FixedLogits(), data)
    assert torch.allclose(nll, torch.tensor([8 / 3, 1.0], dtype=torch.float64) * math.log(2), atol=1e-6)
    result = evaluate(FixedLogits(), data, progress=False)
    assert result.metric == "perplexity" and result.n == 2
    assert result.value == pytest.approx(2 ** (11 / 6), rel=1e-6)
    assert str(result) == "perplexity 3.56 on 2 windows"


def test_a_perfect_model_has_perplexity_one_and_the_shift_is_by_one() -> None:
    data = TokenWindows(torch.arange(60).reshape(6, 10) % VOCAB)
    assert evaluate(NextOfCurrent(), data, batch_size=4, progress=False).value == pytest.approx(1.0, abs=1e-6)
    shifted = TokenWindows((torch.arange(60).reshape(6, 10) * 2) % VOCAB)  # x_{t+1} = x_t + 2: always wrong
    assert evaluate(NextOfCurrent(), shifted, progress=False).value > 1e6


def test_batch_size_and_limit_do_not_change_per_window_values() -> None:
    data = TokenWindows(torch.randint(0, VOCAB, (9, 6), generator=torch.Generator().manual_seed(0)))
    one, many = window_nll(FixedLogits(), data, batch_size=1), window_nll(FixedLogits(), data, batch_size=256)
    assert torch.equal(one, many)
    assert perplexity(one) == pytest.approx(math.exp(float(one.mean())))
    subset = evaluate(FixedLogits(), data, limit=4, progress=False)
    assert subset.n == 4 and subset.value == pytest.approx(perplexity(window_nll(FixedLogits(), data.sample(4))))


def test_a_model_without_per_token_logits_is_refused() -> None:
    data = TokenWindows(torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ModelError, match=r"logits \(batch, tokens, vocab\)"):
        evaluate(nn.Sequential(nn.Embedding(VOCAB, 3), nn.Flatten()), data, progress=False)


def test_lower_is_better_and_changes_are_relative() -> None:
    assert not metrics.higher_is_better("perplexity") and metrics.higher_is_better("top1")
    after = EvalResult("perplexity", 24.37, 100)
    assert after.show(after.value) == "24.37" and after.show_change(23.41) == "+4.1 %"
    assert EvalResult("top1", 0.9, 10).show_change(0.95) == "-5.00 pp"
    assert EvalResult("spearman", 0.8, 10).show_change(0.81) == "-0.0100"
