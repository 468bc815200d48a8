"""Token windows: works joined with eos, full windows only, batches of (ids, ids), subsets."""

from __future__ import annotations

import pytest
import torch

from netshrink.data import TokenWindows
from netshrink.data.tokens import token_stream
from netshrink.errors import DataError


class CharTokenizer:
    """One id per character (its code point + 2); 0 ends a document, 1 begins one."""

    eos_id, bos_id = 0, 1

    def encode(self, text: str) -> list[int]:
        return [ord(c) + 2 for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i - 2) for i in ids if i > 1)


def test_works_are_encoded_separately_and_joined_with_eos() -> None:
    assert token_stream(["ab", "c", "de"], CharTokenizer()) == [99, 100, 0, 101, 0, 102, 103]


def test_windows_are_full_non_overlapping_and_the_tail_is_dropped() -> None:
    data = TokenWindows.from_texts(["abcdefg", "hij"], CharTokenizer(), length=4)
    # stream: a b c d | e f g <eos> | h i j (11 tokens) -> 2 windows of 4, "hij" dropped
    assert data.tokens.dtype == torch.int64 and data.tokens.shape == (2, 4)
    assert CharTokenizer().decode(data.tokens.reshape(-1).tolist()) == "abcdefg"
    assert int(data.tokens[1, 3]) == CharTokenizer.eos_id
    assert data.predicted_tokens == 6 and data.metric == "perplexity"


def test_batches_give_the_same_ids_as_input_and_target() -> None:
    data = TokenWindows(torch.arange(40).reshape(10, 4))
    batches = list(data.loader(4))
    assert [len(x) for x, _ in batches] == [4, 4, 2]
    for x, y in batches:
        assert torch.equal(x, y) and x.dtype == torch.int64
    assert torch.equal(torch.cat([x for x, _ in batches]), data.tokens)
    shuffled = torch.cat([x for x, _ in data.loader(4, shuffle=True, seed=3)])
    assert not torch.equal(shuffled, data.tokens)
    assert torch.equal(shuffled.sort(0).values, data.tokens)


def test_sample_is_deterministic_in_order_and_subset_keeps_rows() -> None:
    data = TokenWindows(torch.arange(40).reshape(10, 4))
    a, b = data.sample(4, seed=1), data.sample(4, seed=1)
    assert len(a) == 4 and torch.equal(a.tokens, b.tokens)
    assert bool((a.tokens[1:, 0] > a.tokens[:-1, 0]).all())  # text order kept
    assert data.sample(20) is data
    assert torch.equal(data.subset(torch.tensor([2, 5])).tokens[:, 0], torch.tensor([8, 20]))


def test_bad_inputs_are_data_errors() -> None:
    with pytest.raises(DataError, match="fewer than one window"):
        TokenWindows.from_texts(["abc"], CharTokenizer(), length=8)
    with pytest.raises(DataError, match="at least 2 tokens"):
        TokenWindows.from_texts(["abc"], CharTokenizer(), length=1)
    with pytest.raises(DataError, match="integer"):
        TokenWindows(torch.zeros(3, 4))
    with pytest.raises(DataError, match="images"):
        TokenWindows(torch.zeros(3, 4, dtype=torch.long)).loader(2, augment="flip")

    class NoEos:
        def encode(self, text: str) -> list[int]:
            return [1] * len(text)

    with pytest.raises(DataError, match="eos_id"):
        TokenWindows.from_texts(["abc"], NoEos(), length=2)  # type: ignore[arg-type]
