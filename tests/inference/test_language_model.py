"""A tiny Llama compressed by the packaged 3-bit palette recipe, loaded with its layers kept
compressed: the logits of the dense decode, and one storage for the tied embedding and LM head."""

from __future__ import annotations

import pytest
import torch
from lm.tiny_models import tiny_llama, tokenizer_metadata, write_gguf

import netshrink
from netshrink.inference import CompressedEmbedding, CompressedLinear
from netshrink.streaming import compress_streaming

pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def compressed_llama(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("llama")
    source = write_gguf(tiny_llama(), folder / "tiny.gguf")
    out = folder / "tiny.nsk"
    calibration = torch.randint(0, 300, (4, 32), generator=torch.Generator().manual_seed(0))
    compress_streaming(
        source, "smollm2-palette3", output=out, calibration=calibration, samples=4, length=32, progress=False
    )
    return str(out)


def test_the_tied_head_and_the_embedding_share_one_compressed_storage(compressed_llama):
    kept = netshrink.load(compressed_llama, keep_compressed=True)
    embedding, head = kept.model.embed_tokens, kept.lm_head
    assert isinstance(embedding, CompressedEmbedding) and isinstance(head, CompressedLinear)
    assert head.weights is embedding.weights and head.weights.indices is embedding.weights.indices
    assert isinstance(kept.model.layers[0].mlp.down_proj, CompressedLinear)
    kept.to("cpu")  # moving the model keeps the one storage
    assert kept.lm_head.weights.indices is kept.model.embed_tokens.weights.indices


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (3, 20)], ids=["one token", "few rows", "many rows"])
def test_a_kept_compressed_llama_gives_the_logits_of_its_dense_decode(compressed_llama, shape):
    dense, kept = netshrink.load(compressed_llama), netshrink.load(compressed_llama, keep_compressed=True)
    tokens = torch.randint(0, 300, shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(kept(tokens), dense(tokens), rtol=1e-4, atol=1e-4)


def test_generation_with_a_cache_matches_the_dense_decode(compressed_llama):
    from netshrink.lm.generate import GenerationSettings, generate
    from netshrink.lm.tokenizer import from_gguf_metadata

    tokenizer = from_gguf_metadata(tokenizer_metadata(), "tiny")
    settings = GenerationSettings(8, 0.0, None, 0)
    dense, kept = netshrink.load(compressed_llama), netshrink.load(compressed_llama, keep_compressed=True)
    expected = generate(dense, tokenizer, "hello world", settings).text
    assert generate(kept, tokenizer, "hello world", settings).text == expected


def test_generate_on_the_command_line_keeps_the_file_compressed(compressed_llama, capsys):
    from netshrink.cli import main

    texts = []
    for flags in ([], ["--keep-compressed"]):
        assert main(["generate", compressed_llama, "--prompt", "hello world", "--max-new-tokens", "4", *flags]) == 0
        texts.append(capsys.readouterr().out.rsplit("[", 1)[0])  # without the speed
    assert texts[0] == texts[1] and texts[0].startswith("hello world")
