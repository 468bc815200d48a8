"""A Hugging Face model folder (config.json, fp16 safetensors, tokenizer.json): loads to the model's
logits; a folder that does not fit is one ModelError line; equal to `transformers` where installed."""

from __future__ import annotations

import json

import pytest
import torch
from lm.tiny_models import ARCH, tiny_llama, write_folder

from netshrink.errors import ModelError
from netshrink.lm.files import load_folder


def test_a_folder_loads_in_float32(tmp_path):
    model = tiny_llama()
    loaded, arch = load_folder(write_folder(model, tmp_path / "m", dtype=torch.float16))
    assert arch == {**ARCH, "norm_eps": 1e-5}
    assert loaded.model.norm.weight.dtype == torch.float32
    tokens = torch.randint(0, 300, (1, 9))
    with torch.no_grad():
        assert torch.allclose(loaded(tokens), model(tokens), atol=0.02)  # the fp16 rounding of the weights
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight


@pytest.mark.parametrize(
    "change,message",
    [
        ({"model_type": "gpt2"}, "unsupported architecture 'gpt2'"),
        ({"attention_bias": True}, "attention_bias"),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rotary scaling 'llama3'"),
        ({"hidden_act": "gelu"}, "activation 'gelu'"),
        ({"num_hidden_layers": 3}, "model.layers.2"),  # a tensor the weights lack
        ({"hidden_size": 64}, "has shape"),
        ({"vocab_size": None}, "malformed field"),
    ],
)
def test_a_config_that_does_not_fit_is_one_error(tmp_path, change, message):
    folder = write_folder(tiny_llama(), tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config.update(change)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=message):
        load_folder(folder)


def test_a_folder_without_weights_or_with_bad_json_is_one_error(tmp_path):
    folder = write_folder(tiny_llama(), tmp_path / "m")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="no .safetensors"):
        load_folder(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="not readable JSON"):
        load_folder(folder)


def test_logits_equal_those_of_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=300,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=48,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        rope_theta=500.0,
        rms_norm_eps=1e-5,
    )
    torch.manual_seed(0)
    reference = transformers.LlamaForCausalLM(config).eval()
    reference.save_pretrained(tmp_path / "hf")
    loaded, _ = load_folder(tmp_path / "hf")
    tokens = torch.randint(0, 300, (2, 11))
    with torch.no_grad():
        assert torch.allclose(loaded(tokens), reference(tokens).logits, atol=1e-5)
