"""GGUF files: a Llama written as llama.cpp's converter writes it loads back to the same logits;
a file that is not a readable Llama GGUF is one ModelError line."""

from __future__ import annotations

import pytest
import torch
from lm.tiny_models import tiny_llama, write_gguf

from netshrink.errors import ModelError

pytest.importorskip("gguf")

from netshrink.lm.files import load_gguf_model  # noqa: E402
from netshrink.lm.gguf import read_gguf  # noqa: E402


def logits(model, tokens):
    with torch.no_grad():
        return model(tokens)


def test_a_float_gguf_loads_to_the_same_logits(tmp_path):
    model = tiny_llama()
    loaded = load_gguf_model(write_gguf(model, tmp_path / "m.gguf"))
    tokens = torch.randint(0, 300, (2, 12))
    assert torch.equal(logits(loaded, tokens), logits(model, tokens))
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight  # tied stays tied
    assert loaded.config["rope_theta"] == 500.0


def test_a_block_quantized_gguf_is_dequantized(tmp_path):
    model = tiny_llama()
    loaded = load_gguf_model(write_gguf(model, tmp_path / "q8.gguf", tensor_type="Q8_0"))
    q = loaded.model.layers[0].self_attn.o_proj.weight
    w = model.model.layers[0].self_attn.o_proj.weight
    assert not torch.equal(q, w)
    assert (q - w).abs().max() <= w.abs().max() / 127  # Q8_0: 8-bit levels per 32-weight block


def test_metadata_alone_is_read_without_the_weights(tmp_path):
    read = read_gguf(write_gguf(tiny_llama(), tmp_path / "m.gguf"), weights=False)
    assert read.state_dict == {}
    assert read.arch["layers"] == 2 and read.arch["kv_heads"] == 2 and read.arch["tied"]
    assert read.tokenizer["tokenizer.ggml.model"] == "gpt2"


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda p: p.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 40), "not a readable GGUF"),
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "not a readable GGUF"),
        (lambda p: p.write_bytes(b"not a gguf file at all"), "not a readable GGUF"),
        (lambda p: p.unlink(), "no such file"),
    ],
)
def test_a_damaged_file_is_one_error(tmp_path, damage, message):
    path = write_gguf(tiny_llama(), tmp_path / "m.gguf")
    damage(path)
    with pytest.raises(ModelError, match=message):
        load_gguf_model(path)


def test_another_architecture_is_refused(tmp_path):
    path = write_gguf(tiny_llama(), tmp_path / "m.gguf", architecture="gpt2")
    with pytest.raises(ModelError, match="unsupported architecture 'gpt2'"):
        load_gguf_model(path)
