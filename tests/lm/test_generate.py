"""Generation: the key/value cache gives the logits of the full forward; greedy continues with the
likeliest token; sampling repeats with its seed; settings and prompts too long are refused first."""

from __future__ import annotations

import pytest
import torch
from lm.tiny_models import tiny_llama, tokenizer_metadata

from netshrink.errors import NetshrinkError
from netshrink.lm.generate import GenerationSettings, generate
from netshrink.lm.tokenizer import from_gguf_metadata


@pytest.fixture
def tok():
    return from_gguf_metadata(tokenizer_metadata(), "tiny")


def test_the_cache_gives_the_logits_of_the_whole_sequence():
    model = tiny_llama()
    tokens = torch.randint(0, 300, (2, 14))
    cache = model.new_cache()
    with torch.no_grad():
        full = model(tokens)
        parts = [model(tokens[:, :5], cache), model(tokens[:, 5:6], cache), model(tokens[:, 6:], cache)]
    assert torch.allclose(torch.cat(parts, dim=1), full, atol=1e-5)


def test_greedy_picks_the_likeliest_token_each_step(tok):
    model = tiny_llama()
    result = generate(model, tok, "hello", GenerationSettings(max_new_tokens=6, stop_at_eos=False))
    ids = tok.encode("hello")
    with torch.no_grad():
        for _ in range(6):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    assert result.new_tokens == 6
    assert result.text == tok.decode(ids[-6:])


def test_sampling_repeats_with_its_seed_and_differs_across_seeds(tok):
    model = tiny_llama()
    runs = [generate(model, tok, "hello", GenerationSettings(12, 1.5, None, seed, False)).text for seed in (0, 0, 1)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_a_prompt_longer_than_the_context_is_refused(tok):
    with pytest.raises(NetshrinkError, match="exceed the model's context of 64 tokens"):
        generate(tiny_llama(), tok, "hello " * 40, GenerationSettings(max_new_tokens=8))


@pytest.mark.parametrize(
    "settings,message",
    [(dict(max_new_tokens=0), "max_new_tokens"), (dict(temperature=-1.0), "temperature"), (dict(top_k=0), "top_k")],
)
def test_impossible_settings_are_refused(settings, message):
    with pytest.raises(NetshrinkError, match=message):
        GenerationSettings(**settings)
