"""MiniLM compression end to end on a few sentence pairs: output-aware PQ of every Linear and the
word-embedding table, MSE distillation, save, rebuild from the zoo, identical embeddings."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from netshrink import api
from netshrink.data.text import SentencePairs
from netshrink.evaluate import evaluate
from netshrink.format.codecs import PQ
from netshrink.recipe import load_recipe, parse_recipe
from netshrink.zoo import build_model

ARCH = dict(vocab_size=64, hidden=16, layers=2, heads=4, intermediate=32, max_positions=16)


def random_pairs(n: int, seed: int) -> SentencePairs:
    """n pairs of 3..10 random tokens (ids 1..63, 0 = padding) with random gold scores."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, 64, (n, 2, 10), generator=g)
    lengths = torch.randint(3, 11, (n, 2), generator=g)
    tokens[torch.arange(10).expand(n, 2, 10) >= lengths[..., None]] = 0
    return SentencePairs(tokens, torch.rand(n, generator=g) * 5)


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("minilm", **ARCH).eval()
    recipe = parse_recipe(
        {
            "name": "tiny-minilm-pq",
            "steps": [
                {
                    "pq": {
                        "include": ["encoder.*", "embeddings.word_embeddings"],
                        "pointwise_d": 4,
                        "k": 8,
                        "calibration": 16,
                        "calibration_batch": 8,
                        "distill": "mse",
                        "optimizer": "adam",
                        "epochs": 1,
                        "lr": 1e-3,
                        "batch_size": 8,
                    }
                },
                {"cast": {"dtype": "fp16"}},
            ],
        }
    )
    result = api.compress(model, recipe, random_pairs(32, 0), name="minilm", progress=False)
    path = tmp_path_factory.mktemp("minilm") / "tiny.nsk"
    return model, result, result.save(path), path


def test_every_linear_and_the_word_embeddings_are_pq(compressed) -> None:
    model, result, _, _ = compressed
    names = [f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert len(names) == 12
    for name in [*names, "embeddings.word_embeddings.weight"]:
        assert isinstance(result.plan.codec_for(name), PQ), name
        assert len(result.model.state_dict()[name].unique()) <= 8 * 4  # k codewords of d values


def test_file_rebuilds_the_same_embeddings(compressed) -> None:
    _, result, report, path = compressed
    loaded = api.load(path)  # rebuilt from the zoo with the recorded arch
    pairs = random_pairs(6, 1)
    (ids, mask), _ = next(iter(pairs.loader(6)))
    with torch.inference_mode():
        assert torch.equal(loaded(ids, mask), result.model.eval()(ids, mask))
    assert report.ratio > 3  # fp32 -> PQ indices + fp16 rest, even at this toy size


def test_compressed_model_scores_on_pairs(compressed) -> None:
    model, result, _, _ = compressed
    data = random_pairs(40, 2)
    score = evaluate(result.model, data, batch_size=16, progress=False)
    assert score.metric == "spearman" and -1 <= score.value <= 1
    with torch.inference_mode():
        (ids, mask), _ = next(iter(data.loader(40)))
        teacher, student = model(ids, mask), result.model(ids, mask)
    assert (teacher * student).sum(1).mean() > 0.5  # the student still points near the teacher


@pytest.mark.parametrize("name", ["minilm-pq", "minilm-pq-weights"])
def test_recipes_parse_and_differ_only_in_objective(name: str) -> None:
    steps = load_recipe(name).steps
    assert steps[0].step_name == "pq" and steps[0].train.distill == "mse"
    other = load_recipe("minilm-pq-weights" if name == "minilm-pq" else "minilm-pq")
    import dataclasses

    assert dataclasses.replace(steps[0], objective="output") == dataclasses.replace(other.steps[0], objective="output")
