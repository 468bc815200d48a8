"""The invariant every recipe keeps: after each of its steps, the file holds exactly the model in memory.

Every packaged recipe runs, cut short (a training step or two, a few calibration samples), on a
small model of its kind; after every step the model is saved, loaded back into a fresh module and
compared tensor by tensor with the model in memory. So accuracy measured on the model in memory is
the accuracy of the file, whichever steps a recipe chains. The custom recipes chain a retraining
step after steps that coded tensors with a codebook (PQ with one codebook per stage, palette,
pruning + palette, low rank + palette, fp16): the retraining moves those tensors, they are coded
again with the codebooks they had (still shared, still stored once), and the file must still hold
exactly what the model holds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import netshrink
from netshrink.api import CompressedModel
from netshrink.data import ArrayDataset
from netshrink.data.text import SentencePairs
from netshrink.data.tokens import TokenWindows
from netshrink.format.codecs import Encoded
from netshrink.format.container import read_nsk
from netshrink.identity import ModelIdentity
from netshrink.plan import CompressionPlan
from netshrink.recipe import list_recipes, load_recipe, parse_recipe
from netshrink.step import Recipe, StepContext
from netshrink.zoo import build_model
from netshrink.zoo.efficientnet_lite import EfficientNetLite, StageSpec

#: Upper bounds on the fields that make a step slow; zero stays zero (a step that skips stays skipping).
SHORT = {
    "epochs": 0.01,
    "stage_epochs": 0.01,
    "finetune_epochs": 0.01,
    "retrain_epochs": 0.01,
    "final_epochs": 0.01,
    "rounds": 2,
    "max_rounds": 1,
    "calibration": 16,
    "calibration_batch": 8,
    "positions": 16,
    "holdout": 8,
    "batch_size": 16,
    "kmeans_iters": 2,
    "refresh_steps": 1,
}

LENET5 = {"widths": [6, 16, 32]}
MINILM = {"vocab_size": 64, "hidden": 32, "layers": 1, "heads": 2, "intermediate": 64, "max_positions": 32}
#: EfficientNet-Lite's module names and block kinds (SAME convs, expand / depthwise / project), narrow.
EFFICIENTNET_STAGES = (StageSpec(1, 3, 1, 8, 8, 1), StageSpec(6, 3, 2, 8, 16, 2))


def short(recipe: Recipe) -> Recipe:
    """The recipe with every slow field capped (`SHORT`), steps and everything else unchanged."""
    steps = tuple(
        dataclasses.replace(
            step,
            **{f.name: min(getattr(step, f.name), SHORT[f.name]) for f in dataclasses.fields(step) if f.name in SHORT},
        )
        for step in recipe.steps
    )
    return dataclasses.replace(recipe, steps=steps)


def images(n: int, channels: int, size: int) -> ArrayDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)
    return ArrayDataset(x, torch.randint(0, 10, (n,), generator=g), tuple("abcdefghij"))


def sentence_pairs(n: int) -> SentencePairs:
    """n pairs of 3..10 random tokens (ids 1..63, 0 = padding) with random gold scores."""
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, MINILM["vocab_size"], (n, 2, 10), generator=g)
    lengths = torch.randint(3, 11, (n, 2), generator=g)
    tokens[torch.arange(10).expand(n, 2, 10) >= lengths[..., None]] = 0
    return SentencePairs(tokens, torch.rand(n, generator=g) * 5)


SMALL_LLAMA = dict(vocab=64, dim=32, layers=2, heads=4, kv_heads=2, ffn=48, max_seq=64, tied=True)


def token_windows(n: int, length: int) -> TokenWindows:
    """n windows of random token ids (the LM recipes' calibration data)."""
    return TokenWindows(torch.randint(0, SMALL_LLAMA["vocab"], (n, length), generator=torch.Generator().manual_seed(0)))


def zoo(name: str, **defaults: Any) -> Callable[..., nn.Module]:
    return lambda **arch: build_model(name, **{**defaults, **arch})


def efficientnet(**_: Any) -> nn.Module:
    return EfficientNetLite(EFFICIENTNET_STAGES, num_classes=10, stem_channels=8, head_channels=32)


#: Recipe name prefix -> (model builder taking `arch_options()`, training data).
KINDS: dict[str, tuple[Callable[..., nn.Module], Callable[[], Any]]] = {
    "lenet5": (zoo("lenet5", **LENET5), lambda: images(32, 1, 28)),
    "lenet300": (zoo("lenet300"), lambda: images(32, 1, 28)),
    "resnet20": (zoo("resnet20"), lambda: images(32, 3, 32)),
    "oneshot": (zoo("resnet20"), lambda: images(32, 3, 32)),
    "fp16": (zoo("resnet20"), lambda: images(32, 3, 32)),
    "minilm": (zoo("minilm", **MINILM), lambda: sentence_pairs(32)),
    "efficientnet": (efficientnet, lambda: images(32, 3, 32)),
    "smollm2": (zoo("llama", **SMALL_LLAMA), lambda: token_windows(8, 32)),
}


def kind_of(recipe_name: str) -> str:
    kinds = [kind for kind in KINDS if recipe_name.startswith(kind)]
    assert kinds, f"recipe {recipe_name!r}: give tests/test_invariant.py a model for it (KINDS)"
    return max(kinds, key=len)


def fresh_like(build: Callable[..., nn.Module], model: nn.Module) -> nn.Module:
    """A new module of the model's current architecture (steps may have thinned it)."""
    return build(**(model.arch_options() if hasattr(model, "arch_options") else {}))


def assert_same_state(theirs: dict[str, torch.Tensor], ours: dict[str, torch.Tensor], where: str) -> None:
    assert list(theirs) == list(ours), where
    differ = [name for name in ours if not torch.equal(ours[name], theirs[name])]
    assert not differ, f"{where}: the file does not hold the model in memory for {differ}"


def check_every_step(recipe: Recipe, kind: str, tmp_path) -> list[Path]:
    """Apply the recipe step by step as `compress` does; after each, the file must load the model as
    it was before saving (saving changes nothing). Returns the file saved after each step."""
    build, make_data = KINDS[kind]
    torch.manual_seed(0)
    model = build().eval()
    plan, ctx = CompressionPlan(), StepContext(data=make_data(), seed=0, progress=False)
    if recipe.distills:
        ctx.teacher_for(model)
    paths = []
    for index, step in enumerate(recipe.steps, 1):
        step.apply(model, plan, ctx)
        plan.refresh(model)
        held = {name: tensor.clone() for name, tensor in model.state_dict().items()}
        path = tmp_path / f"step{index}.nsk"
        paths.append(path)
        CompressedModel(model, plan, recipe, ModelIdentity.of(model)).save(path)
        loaded = netshrink.load(path, model=fresh_like(build, model))
        where = f"{recipe.name} step {index} ({step.step_name})"
        assert_same_state(loaded.state_dict(), held, where)
        assert_same_state(model.state_dict(), held, f"{where}, saving")
    return paths


def borrowed_codebooks(path: Path) -> list[str]:
    """Tensors of a file whose codebook is stored with an earlier tensor (a shared codebook)."""
    return [
        rec.name
        for rec in read_nsk(path).tensors
        if not rec.tied_to and "codebook" in rec.encoded.streams and rec.encoded.streams["codebook"].borrowed_from
    ]


def codebooks(path: Path) -> dict[str, bytes]:
    """Every codebook a file holds, by tensor and part ("fc1.weight/u")."""
    found = {}

    def walk(enc: Encoded, key: str) -> None:
        if "codebook" in enc.streams:
            found[key] = enc.streams["codebook"].data
        for role, child in enc.children.items():
            walk(child, f"{key}/{role}")

    for rec in read_nsk(path).tensors:
        if not rec.tied_to:
            walk(rec.encoded, rec.name)
    return found


@pytest.mark.parametrize("name", list_recipes())
def test_every_step_of_a_packaged_recipe_saves_the_model_in_memory(name: str, tmp_path) -> None:
    check_every_step(short(load_recipe(name)), kind_of(name), tmp_path)


RETRAIN_LINEAR = {"trained_quantization": {"include": ["linear"], "bits": 4, "epochs": 0.01, "batch_size": 16}}
RETRAIN_FC2 = {"trained_quantization": {"include": ["fc2"], "bits": 4, "epochs": 0.01, "batch_size": 16}}

#: name -> (model kind, steps): a retraining step moves tensors an earlier step coded.
CUSTOM = {
    "pq-shared-then-trained-quantization": (
        "resnet20",
        [
            {
                "pq": {
                    "objective": "weights",
                    "exclude": ["linear"],
                    "k": 16,
                    "share_codebook": True,
                    "epochs": 0,
                    "kmeans_iters": 2,
                }
            },
            RETRAIN_LINEAR,
            {"cast": {"dtype": "fp16"}},
        ],
    ),
    "pq-shared-output-then-distillation": (
        "resnet20",
        [
            {
                "pq": {
                    "exclude": ["linear"],
                    "k": 16,
                    "share_codebook": True,
                    "calibration": 16,
                    "kmeans_iters": 2,
                    "stage_epochs": 0.01,
                    "epochs": 0.01,
                    "batch_size": 16,
                }
            },
            {
                "pq": {
                    "include": ["linear"],
                    "pointwise_d": 4,
                    "k": 8,
                    "calibration": 16,
                    "kmeans_iters": 2,
                    "epochs": 0.01,
                    "batch_size": 16,
                }
            },
        ],
    ),
    "palette-then-trained-quantization": ("lenet5", [{"palette": {"bits": 4, "exclude": ["fc2"]}}, RETRAIN_FC2]),
    "prune-palette-then-trained-quantization": (
        "lenet5",
        [{"prune": {"sparsity": 0.5, "exclude": ["fc2"]}}, {"palette": {"bits": 4, "exclude": ["fc2"]}}, RETRAIN_FC2],
    ),
    "lowrank-palette-then-trained-quantization": (
        "lenet5",
        [{"lowrank": {"include": ["fc1"], "rank": 4}}, {"palette": {"bits": 4, "exclude": ["fc2"]}}, RETRAIN_FC2],
    ),
    "fp16-then-trained-quantization": ("lenet5", [{"cast": {"dtype": "fp16"}}, RETRAIN_FC2]),
}


@pytest.mark.parametrize("name", sorted(CUSTOM))
def test_a_later_retraining_keeps_the_file_equal_to_the_model(name: str, tmp_path) -> None:
    kind, steps = CUSTOM[name]
    paths = check_every_step(parse_recipe({"name": name, "steps": steps}), kind, tmp_path)
    for before, after in zip(paths, paths[1:]):  # tensors moved by retraining are coded with the same codebooks
        kept = codebooks(after)
        assert {key: kept.get(key) for key in codebooks(before)} == codebooks(before)
    if "shared" in name:  # retrained or not, the layers of a stage keep using ONE codebook, stored once
        shared = borrowed_codebooks(paths[0])
        assert len(shared) == 15  # 3 stages of 6 convolutions, each less its first (conv1 is a stage alone)
        assert all(borrowed_codebooks(path) == shared for path in paths[1:])
